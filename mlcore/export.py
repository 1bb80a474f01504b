"""Export a trained model to the ONNX hand-off file scored by ONNX Runtime (see ARCHITECTURE.md).

Input ``images``: uint8 (N, window, window, 3), dynamic N. Output ``probs``: float32 (N, C)
softmax. Normalisation is inside the graph. metadata_props: ``classes`` (JSON list), ``window``,
``mean``, ``std`` (JSON lists, [0, 1] units), ``engine``, plus any caller ``meta``.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch

from mlcore.model import ProbabilityModel

OPSET = 17


def export_onnx(model, path, classes, window: int = 32, meta: dict | None = None) -> Path:
    """Write ``model`` (a logits model taking uint8 NHWC) as an ONNX file, atomically."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    classes = list(classes)
    was_training = model.training
    model = model.cpu().eval()
    wrapped = ProbabilityModel(model).eval()
    example = torch.zeros((2, window, window, 3), dtype=torch.uint8)
    with torch.no_grad():
        n_out = wrapped(example).shape[1]
    if n_out != len(classes):
        raise ValueError(f"the model predicts {n_out} classes but {len(classes)} names were given")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # The TorchScript exporter is used: for this plain CNN it is fast and deterministic, and
        # it writes one self-contained file (the dynamo exporter needs seconds more per export).
        _torch_export(wrapped, example, tmp)
        proto = onnx.load(str(tmp))
        norm = getattr(model, "normalisation", None) or {}
        props = {
            "classes": json.dumps(classes),
            "window": str(int(window)),
            "mean": json.dumps(_rounded(norm.get("mean"))),
            "std": json.dumps(_rounded(norm.get("std"))),
            "engine": "torch",
        }
        for key, value in (meta or {}).items():
            props.setdefault(str(key), value if isinstance(value, str) else json.dumps(value))
        del proto.metadata_props[:]
        for key, value in props.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        model.train(was_training)
    return path


def _rounded(values):
    return None if values is None else [round(float(v), 6) for v in values]


def _torch_export(wrapped, example, tmp: Path) -> None:
    common = dict(input_names=["images"], output_names=["probs"], opset_version=OPSET)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapped,
                (example,),
                str(tmp),
                dynamic_axes={"images": {0: "batch"}, "probs": {0: "batch"}},
                dynamo=False,
                **common,
            )
    except Exception:  # a torch without the TorchScript exporter: use the dynamo one
        batch = torch.export.Dim("batch", min=1)
        torch.onnx.export(
            wrapped,
            (example,),
            str(tmp),
            dynamic_shapes=({0: batch},),
            dynamo=True,
            external_data=False,
            **common,
        )


def read_metadata(path) -> dict:
    """The model file's metadata_props, JSON values parsed (``thresholds``: {class: float} or
    None when the model was never calibrated)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    out: dict = {}
    for entry in proto.metadata_props:
        try:
            out[entry.key] = json.loads(entry.value)
        except json.JSONDecodeError:
            out[entry.key] = entry.value
    out.setdefault("thresholds", None)
    return out


def write_metadata(path, updates: dict) -> None:
    """Set metadata_props of an exported model file (JSON-encoded values), atomically."""
    import onnx

    path = Path(path)
    proto = onnx.load(str(path))
    props = {entry.key: entry.value for entry in proto.metadata_props}
    props.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in updates.items()})
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    tmp = path.with_name(f".{path.name}.{os.getpid()}.meta.tmp")
    try:
        onnx.save(proto, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

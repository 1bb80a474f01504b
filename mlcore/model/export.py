"""Export a trained model to the ONNX hand-off file scored by ONNX Runtime (see ARCHITECTURE.md).

Input ``images``: uint8 (N, window, window, 3), dynamic N. Output ``probs``: float32 (N, C)
softmax. Normalisation is inside the graph. metadata_props: ``classes`` (JSON list), ``window``,
``mean``, ``std`` (JSON lists, [0, 1] units), ``engine``, plus any caller ``meta``.

A model with a box head returns a dict from ``forward`` instead of logits: ``{"logits": (N, H),
"boxes": (N, 4), "centredness": (N,) or (N, 1)}`` (boxes and centredness each optional; boxes are
x0, y0, x1, y1 in pixels from the window's origin, centredness already in [0, 1]). The file then
has the outputs ``boxes`` and ``centredness`` after ``probs``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from mlcore.model.network import ProbabilityModel
from mlcore.model.onnx_file import model_props, save_with_metadata

OPSET = 17
REFINEMENT_OUTPUTS = ("boxes", "centredness")


class RefinedProbabilityModel(torch.nn.Module):
    """ProbabilityModel for a model whose forward returns a dict (logits, boxes, centredness):
    gives (probs, *refinements) in the order of ``outputs[1:]``."""

    def __init__(self, model: torch.nn.Module, refinements: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.refinements = refinements

    def forward(self, images: torch.Tensor):
        out = self.model(images)
        logits = out["logits"]
        if hasattr(self.model, "class_probs"):
            probs = self.model.class_probs(logits)
        else:
            probs = torch.softmax(logits.float(), dim=1)
        extra = [out[name].float() for name in self.refinements]
        if "centredness" in self.refinements:
            at = self.refinements.index("centredness")
            extra[at] = extra[at].reshape(-1)
        return (probs, *extra)


def _wrap(model, example) -> tuple[torch.nn.Module, tuple[str, ...]]:
    with torch.no_grad():
        out = model(example)
    if not isinstance(out, dict):
        return ProbabilityModel(model).eval(), ("probs",)
    if "logits" not in out:
        raise ValueError(f"a model returning a dict must give 'logits', got {sorted(out)}")
    unknown = sorted(set(out) - {"logits", "box_raw", *REFINEMENT_OUTPUTS})  # box_raw: losses
    if unknown:
        raise ValueError(f"unknown model outputs {unknown}: known are {REFINEMENT_OUTPUTS}")
    refinements = tuple(n for n in REFINEMENT_OUTPUTS if n in out)
    return RefinedProbabilityModel(model, refinements).eval(), ("probs", *refinements)


def export_onnx(model, path, classes, window: int = 32, meta: dict | None = None) -> Path:
    """Write ``model`` (a logits model taking uint8 NHWC, or one returning a dict with a box
    head: see the module docstring) as an ONNX file, atomically."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    classes = list(classes)
    was_training = model.training
    model = model.cpu().eval()
    example = torch.zeros((2, window, window, 3), dtype=torch.uint8)
    wrapped, outputs = _wrap(model, example)
    with torch.no_grad():
        probs = wrapped(example)
        n_out = (probs[0] if isinstance(probs, tuple) else probs).shape[1]
    if n_out != len(classes):
        raise ValueError(f"the model predicts {n_out} classes but {len(classes)} names were given")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # The TorchScript exporter is used: for this plain CNN it is fast and deterministic, and
        # it writes one self-contained file (the dynamo exporter needs seconds more per export).
        _torch_export(wrapped, example, tmp, outputs)
        proto = onnx.load(str(tmp))
        norm = getattr(model, "normalisation", None) or {}
        props = model_props(classes, window, norm.get("mean"), norm.get("std"), "torch", meta)
        save_with_metadata(proto, props, tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        model.train(was_training)
    return path


def _torch_export(wrapped, example, tmp: Path, outputs=("probs",)) -> None:
    common = dict(input_names=["images"], output_names=list(outputs), opset_version=OPSET)
    batch_axes = {name: {0: "batch"} for name in ("images", *outputs)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapped,
                (example,),
                str(tmp),
                dynamic_axes=batch_axes,
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

"""An int8 copy of a model file (issue 37.3, a measurement, not the default scoring path):
ONNX Runtime's static QDQ quantization, its activation ranges calibrated on windows the caller
gives (the canvas set's calibration scene, never a scene that is reported), with the model file's
metadata (classes, window, thresholds, ...) kept so that ``load_scorer`` opens it like any other.

The quantized file is per window only: the dense graph beside an fp32 file is not quantized, so
its ``dense_model`` key is dropped (the scorer must not pair an int8 file with an fp32 dense one).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from mlcore.model.onnx_file import save_with_metadata


class WindowBatches:
    """ONNX Runtime's CalibrationDataReader protocol over uint8 windows, ``batch`` at a time."""

    def __init__(self, input_name: str, windows: np.ndarray, batch: int = 256):
        if windows.dtype != np.uint8 or windows.ndim != 4 or not len(windows):
            raise ValueError(f"expected uint8 windows (N, w, w, 3), got {windows.dtype} "
                             f"{windows.shape}")  # fmt: skip
        self.input_name, self.windows, self.batch, self.at = input_name, windows, batch, 0

    def get_next(self):
        if self.at >= len(self.windows):
            return None
        chunk = self.windows[self.at : self.at + self.batch]
        self.at += self.batch
        return {self.input_name: np.ascontiguousarray(chunk)}

    def rewind(self):
        self.at = 0


def _upstream(proto, outputs) -> set[str]:
    """Names of the nodes that ``outputs`` (tensor names) depend on."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    seen, todo = set(), list(outputs)
    while todo:
        node = producer.get(todo.pop())
        if node is not None and node.name not in seen:
            seen.add(node.name)
            todo.extend(node.input)
    return seen


def head_nodes(proto) -> list[str]:
    """Names of the nodes that feed the "boxes" and "centredness" outputs but not "probs": the
    box head, from its Gemm on the pooled features to the outputs."""
    names = [o.name for o in proto.graph.output]
    heads = _upstream(proto, [n for n in names if n != "probs"])
    return sorted(heads - _upstream(proto, ["probs"]))


def quantize_model_file(
    source,
    target,
    windows: np.ndarray,
    exclude_heads: bool = False,
    per_channel: bool = True,
) -> Path:
    """Write an int8 (QDQ: uint8 activations, int8 weights) copy of the ONNX model file
    ``source`` to ``target``, activation ranges from ``windows`` (uint8 (N, w, w, 3) of the
    calibration scene). ``exclude_heads``: keep the box head's nodes in fp32. Metadata is
    copied, plus ``precision`` = "int8" and ``quantized_from`` = the source's file name."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    source, target = Path(source), Path(target)
    proto = onnx.load(str(source))
    props = {e.key: e.value for e in proto.metadata_props}
    if "classes" not in props:
        raise ValueError(f"{source} has no 'classes' metadata: export it with mlcore.model.export")
    props.pop("dense_model", None)
    props |= {"precision": "int8", "quantized_from": source.name}
    input_name = proto.graph.input[0].name
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".quantize-") as scratch:
        raw = Path(scratch) / "quantized.onnx"
        quantize_static(
            str(source),
            str(raw),
            WindowBatches(input_name, windows),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            # This CPU family has VNNI (docs/speed.md): no 7-bit weights needed.
            reduce_range=False,
            nodes_to_exclude=head_nodes(proto) if exclude_heads else [],
        )
        quantized = onnx.load(str(raw))
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            save_with_metadata(quantized, props, tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target

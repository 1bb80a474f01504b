"""An int8 copy of a model file (issue 37.3): ONNX Runtime's static QDQ quantization (uint8
activations, int8 per-channel weights) after its recommended pre-processing (shape inference and
graph folding: without it the convs whose bias the exporter shares through Identity nodes stay
fp32), activation ranges calibrated on samples the caller gives (the canvas set's calibration
scene, never a scene that is reported), with the model file's metadata kept so that
``load_scorer`` or ``DenseScorer`` opens the copy like the file it came from.

Per-window files are calibrated on windows (N, w, w, 3); a dense graph (its ``dense`` metadata)
on whole images (H, W, 3), fed one at a time. The copy of a per-window file drops the sibling
names of its source (``dense_model``, ``int8_model``): which int8 dense graph goes with it is
the caller's to record (mlcore.inference.int8_sibling).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from mlcore.model.onnx_file import save_with_metadata

# Keys of the source's metadata that name or judge *its* siblings, never the copy's.
SOURCE_ONLY_KEYS = ("dense_model", "int8_model", "int8_check")


class SampleBatches:
    """ONNX Runtime's CalibrationDataReader protocol: uint8 windows (N, w, w, 3) ``batch`` at a
    time, or (``one_at_a_time``) uint8 images of any size, each as a batch of one."""

    def __init__(self, input_name: str, samples, batch: int = 256, one_at_a_time: bool = False):
        if one_at_a_time:
            samples = [np.asarray(s) for s in samples]
            bad = not samples or any(s.dtype != np.uint8 or s.ndim != 3 for s in samples)
        else:
            samples = np.asarray(samples)
            bad = samples.dtype != np.uint8 or samples.ndim != 4 or not len(samples)
        if bad:
            what = "images (H, W, 3)" if one_at_a_time else "windows (N, w, w, 3)"
            raise ValueError(f"expected uint8 {what} to calibrate the quantization on")
        self.input_name, self.samples, self.at = input_name, samples, 0
        self.batch = 1 if one_at_a_time else batch
        self.one_at_a_time = one_at_a_time

    def get_next(self):
        if self.at >= len(self.samples):
            return None
        if self.one_at_a_time:
            chunk = self.samples[self.at][None]
        else:
            chunk = self.samples[self.at : self.at + self.batch]
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
    samples,
    exclude_heads: bool = False,
    per_channel: bool = True,
) -> Path:
    """Write an int8 (QDQ: uint8 activations, int8 weights) copy of the ONNX model file
    ``source`` to ``target``, activation ranges from ``samples`` of the calibration scene
    (uint8 windows (N, w, w, 3) for a per-window file, a list of uint8 images (H, W, 3) for a
    dense graph). ``exclude_heads``: keep a per-window file's box head in fp32. Metadata is
    copied (less :data:`SOURCE_ONLY_KEYS`), plus ``precision`` = "int8" and ``quantized_from``
    = the source's file name."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source, target = Path(source), Path(target)
    proto = onnx.load(str(source))
    props = {e.key: e.value for e in proto.metadata_props}
    if "classes" not in props:
        raise ValueError(f"{source} has no 'classes' metadata: export it with mlcore.model.export")
    dense = props.get("dense") == "true"
    for key in SOURCE_ONLY_KEYS:
        props.pop(key, None)
    props |= {"precision": "int8", "quantized_from": source.name}
    input_name = proto.graph.input[0].name
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".quantize-") as scratch:
        prepared, raw = Path(scratch) / "prepared.onnx", Path(scratch) / "quantized.onnx"
        quant_pre_process(str(source), str(prepared))
        excluded = head_nodes(onnx.load(str(prepared))) if exclude_heads and not dense else []
        quantize_static(
            str(prepared),
            str(raw),
            SampleBatches(input_name, samples, one_at_a_time=dense),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            # Meant for CPUs with VNNI (int8 dot products): no 7-bit weights needed there.
            reduce_range=False,
            nodes_to_exclude=excluded,
        )
        quantized = onnx.load(str(raw))
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            save_with_metadata(quantized, props, tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target

"""An int8 copy of a model file (issue 37.3): static quantization keeps the model file's metadata
(so load_scorer opens it like the fp32 file), really quantizes the graph, and scores the same
classes as the fp32 file where the fp32 file is clear about a window."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from int8_helpers import CLASSES, WINDOW, hand_made_windows, taught_model

from mlcore.inference.quantization import head_nodes, quantize_model_file
from mlcore.inference.scoring import load_scorer
from mlcore.model.export import export_onnx
from mlcore.model.onnx_file import read_metadata, write_metadata


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    model = taught_model()
    folder = tmp_path_factory.mktemp("int8")
    fp32 = export_onnx(model, folder / "model.onnx", CLASSES)
    write_metadata(fp32, {"thresholds": {"red": 0.7, "green": 0.6}, "dense_model": "x.onnx"})
    rng = np.random.default_rng(0)
    calibration = np.concatenate([
        hand_made_windows(), rng.integers(0, 256, (64, WINDOW, WINDOW, 3), dtype=np.uint8)
    ])  # fmt: skip
    int8 = quantize_model_file(fp32, folder / "model.int8.onnx", calibration)
    heads = quantize_model_file(fp32, folder / "model.heads.onnx", calibration,
                                exclude_heads=True)  # fmt: skip
    return fp32, int8, heads


def test_the_quantized_file_keeps_the_model_files_metadata(files):
    fp32, int8, _ = files
    before, after = read_metadata(fp32), read_metadata(int8)
    for key in ("classes", "window", "mean", "std", "engine", "thresholds"):
        assert after[key] == before[key], key
    assert after["precision"] == "int8" and after["quantized_from"] == "model.onnx"
    assert "dense_model" not in after  # its dense graph is fp32: never paired with int8
    scorer = load_scorer(int8)
    assert scorer.classes == CLASSES and scorer.window == WINDOW
    assert scorer.thresholds == {"red": 0.7, "green": 0.6}
    assert scorer.output_names == ("probs", "boxes", "centredness")


def test_the_graph_is_quantized_and_exclude_heads_leaves_the_box_head_in_fp32(files):
    fp32, int8, heads = files
    ops = [n.op_type for n in onnx.load(str(int8)).graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > 0
    graph = onnx.load(str(heads)).graph
    producer = {o: n for n in graph.node for o in n.output}
    box_head = head_nodes(onnx.load(str(fp32)))
    box_gemm = next(n for n in graph.node if n.name in box_head and n.op_type == "Gemm")
    # Its weight is the fp32 initializer, not a DequantizeLinear of int8 values.
    assert box_gemm.input[1] not in producer
    int8_graph = onnx.load(str(int8)).graph
    int8_producer = {o: n for n in int8_graph.node for o in n.output}
    int8_gemm = next(n for n in int8_graph.node if n.name == box_gemm.name)
    assert int8_producer[int8_gemm.input[1]].op_type == "DequantizeLinear"


def test_int8_scores_the_same_classes_on_clear_windows(files):
    fp32, int8, _ = files
    windows = hand_made_windows()
    reference = load_scorer(fp32).predict_all(windows)
    got = load_scorer(int8).predict_all(windows)
    top2 = np.sort(reference["probs"], axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.2
    assert clear.sum() >= 10  # the check has windows to check
    np.testing.assert_array_equal(
        got["probs"][clear].argmax(1), reference["probs"][clear].argmax(1)
    )
    assert len(set(reference["probs"][clear].argmax(1))) >= 2  # not one class everywhere
    assert np.isfinite(got["boxes"]).all() and np.isfinite(got["centredness"]).all()

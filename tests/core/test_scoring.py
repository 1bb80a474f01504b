"""Scoring: edge coverage, strip-by-strip == whole scene, bounded reads, grids, model files.

The model here is a hand-made ONNX graph (no PyTorch needed): probs = normalised mean colour of
the window, so every window's expected output can be computed with numpy.
"""

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from mlcore.inference.scoring import (  # noqa: E402
    OnnxScorer,
    ScoreGrid,
    load_scorer,
    score_scene,
    score_strip,
)

CLASSES = ["red", "green", "blue"]


def mean_colour_model(path, window=8):
    """uint8 (N, w, w, 3) -> (mean RGB + 1) / sum: a deterministic 'classifier' per window."""
    nodes = [
        helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["m"], axes=[1, 2], keepdims=0),
        helper.make_node("Add", ["m", "one"], ["m1"]),
        helper.make_node("ReduceSum", ["m1", "axis1"], ["s"], keepdims=1),
        helper.make_node("Div", ["m1", "s"], ["probs"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mean_colour",
        [helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", window, window, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
        [
            helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
            helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    for key, value in {"classes": json.dumps(CLASSES), "window": str(window)}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def expected_probs(window_pixels):
    m = window_pixels.reshape(-1, 3).astype(np.float64).mean(0) + 1
    return m / m.sum()


class ArrayReader:
    """A scene in memory that records every read (to check reads are bounded)."""

    def __init__(self, array):
        self.array = array
        self.height, self.width = array.shape[:2]
        self.reads = []

    def read_rows(self, y0, y1):
        self.reads.append((y0, y1))
        return self.array[y0:y1]


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    return OnnxScorer(mean_colour_model(tmp_path_factory.mktemp("m") / "mean.onnx"), threads=1)


@pytest.fixture
def scene():
    return np.random.default_rng(0).integers(0, 256, (43, 61, 3), dtype=np.uint8)


def test_scorer_reads_classes_and_window_from_metadata(scorer):
    assert scorer.classes == CLASSES and scorer.window == 8
    with pytest.raises(ValueError, match="expected uint8 windows"):
        scorer.predict(np.zeros((2, 8, 8, 3), dtype=np.float32))


def test_every_window_is_scored_including_the_edges(scorer, scene):
    grid = score_scene(scorer, ArrayReader(scene), step=6, batch_size=7)
    np.testing.assert_array_equal(grid.ys, [0, 6, 12, 18, 24, 30, 35])  # 43 - 8 = 35
    np.testing.assert_array_equal(grid.xs, [0, 6, 12, 18, 24, 30, 36, 42, 48, 53])
    assert grid.probs.shape == (7, 10, 3) and grid.window == 8 and grid.step == 6
    for i, y in enumerate(grid.ys):
        for j, x in enumerate(grid.xs):
            want = expected_probs(scene[y : y + 8, x : x + 8])
            np.testing.assert_allclose(grid.probs[i, j], want, rtol=1e-5)


def test_strip_by_strip_equals_whole_scene_exactly(scorer, scene):
    whole = score_scene(scorer, ArrayReader(scene), step=6, batch_size=16, rows_per_strip=100)
    reader = ArrayReader(scene)
    progress = []
    strips = score_scene(
        scorer,
        reader,
        step=6,
        batch_size=16,
        rows_per_strip=2,
        progress=lambda d, t, m="": progress.append((d, t)),
    )
    np.testing.assert_array_equal(strips.probs, whole.probs)
    # each read covers at most 2 window rows: (2 - 1) * step + window = 14 pixel rows
    assert len(reader.reads) == 4 and max(b - a for a, b in reader.reads) <= 14
    assert progress[-1] == (7, 7)
    # score_strip on one strip reproduces the grid rows it covers
    rows = whole.ys[2:5]
    part = score_strip(scorer, scene[rows[0] : rows[-1] + 8], rows, whole.xs, batch_size=5)["probs"]
    np.testing.assert_array_equal(part, whole.probs[2:5])


def test_score_strip_rejects_a_strip_too_short(scorer, scene):
    with pytest.raises(ValueError, match="does not hold windows"):
        score_strip(scorer, scene[:10], [0, 6], [0, 6], 4)


def test_scene_smaller_than_a_window_is_a_clear_error(scorer):
    with pytest.raises(ValueError, match="shorter than the 8 px window"):
        score_scene(scorer, ArrayReader(np.zeros((5, 40, 3), np.uint8)), step=4)


def test_score_grid_save_load_and_rows(scorer, scene, tmp_path):
    grid = score_scene(scorer, ArrayReader(scene), step=6)
    path = grid.save(tmp_path / "grid.npz")
    back = ScoreGrid.load(path)
    np.testing.assert_array_equal(back.probs, grid.probs)
    assert back.classes == CLASSES and back.window == 8 and back.step == 6
    rows = grid.to_rows()
    assert list(rows) == ["y", "x", "p_red", "p_green", "p_blue", "label"]
    assert len(rows["y"]) == 70
    k = 13  # row-major: grid row 1, column 3
    assert (rows["y"][k], rows["x"][k]) == (6, 18)
    assert rows["p_blue"][k] == grid.probs[1, 3, 2]
    assert rows["label"][k] == CLASSES[int(grid.probs[1, 3].argmax())]
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable score grid"):
        ScoreGrid.load(tmp_path / "bad.npz")


def test_missing_or_corrupt_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_scorer(tmp_path / "nothing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00 definitely not protobuf")
    with pytest.raises(ValueError, match="corrupt or not an ONNX model"):
        load_scorer(bad)


def test_mxnet_model_files_are_routed_to_the_mxnet_engine(tmp_path):
    from mlcore.engines import engine_for_model_file

    assert engine_for_model_file(tmp_path / "resnet-symbol.json") == "mxnet"
    assert engine_for_model_file(tmp_path / "model.onnx") is None

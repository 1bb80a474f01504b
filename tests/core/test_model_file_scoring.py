"""mlcore.inference.model_file_scoring: a scene is scored as its model file says, the one choice
the CLI, the calibration and the benches share: densely when the file names a dense graph and the
grid fits the trunk, per window otherwise (an unflagged file, resized windows, an off-grid step)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from dense_helpers import export_flagged, varied_model  # noqa: E402

from mlcore.inference.dense_scoring import DenseScorer, score_scene_dense  # noqa: E402
from mlcore.inference.model_file_scoring import score_with_model_file  # noqa: E402
from mlcore.inference.scoring import OnnxScorer, score_scene  # noqa: E402
from mlcore.ingest.scenes import ArrayScene  # noqa: E402
from mlcore.model.export import export_onnx  # noqa: E402

CLASSES = ["car", "boat", "negative"]


def test_a_scene_is_scored_as_the_model_file_says(tmp_path):
    model = varied_model(3, seed=4)
    per_window, dense = export_flagged(model, tmp_path, CLASSES)
    plain = export_onnx(model, tmp_path / "plain.onnx", CLASSES)  # names no dense graph
    scene = ArrayScene(np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8))

    grid, used = score_with_model_file(per_window, scene, 16)
    assert used == dense
    np.testing.assert_array_equal(
        grid.probs, score_scene_dense(DenseScorer(dense), scene, 16).probs
    )

    for path, step, size in ((plain, 16, None), (per_window, 6, None), (per_window, 16, 48)):
        grid, used = score_with_model_file(path, scene, step, scene_window=size)
        assert used is None  # per window: the reference
        expected = score_scene(OnnxScorer(path), scene, step, scene_window=size)
        np.testing.assert_array_equal(grid.probs, expected.probs)

"""The model file decides how a scene is scored (issue 37.2): a file that names its dense graph
(``dense_model``) is scored densely by `python -m mlcore score` and calibrated densely; a file
without it, the same network, per window, as always."""

from __future__ import annotations

import numpy as np
import pytest
from dense_helpers import export_flagged, varied_model
from PIL import Image

from mlcore.cli import main
from mlcore.inference.calibration import calibration_summary
from mlcore.inference.dense_scoring import (
    DenseScorer,
    dense_scorer_for,
    score_scene_dense,
)
from mlcore.inference.scoring import OnnxScorer, ScoreGrid, score_scene
from mlcore.ingest.scenes import ArrayScene
from mlcore.model.export import export_onnx

CLASSES = ["car", "negative"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The same network exported twice: flagged (with model.dense.onnx) and plain."""
    model = varied_model(2, seed=0)
    flagged = tmp_path_factory.mktemp("flagged")
    per_window, dense = export_flagged(model, flagged, CLASSES)
    plain = export_onnx(model, tmp_path_factory.mktemp("plain") / "model.onnx", CLASSES)
    scene = np.random.default_rng(0).integers(0, 256, (112, 144, 3), dtype=np.uint8)
    picture = tmp_path_factory.mktemp("scene") / "scene.png"
    Image.fromarray(scene).save(picture)
    return per_window, dense, plain, scene, picture


def test_cli_scores_a_flagged_file_densely_and_a_plain_one_per_window(files, tmp_path):
    flagged, dense, plain, scene, picture = files
    assert main(["score", str(flagged), str(picture), str(tmp_path / "f.npz")]) == 0
    assert main(["score", str(plain), str(picture), str(tmp_path / "p.npz")]) == 0
    got_flagged = ScoreGrid.load(tmp_path / "f.npz")
    got_plain = ScoreGrid.load(tmp_path / "p.npz")
    expected_dense = score_scene_dense(DenseScorer(dense), ArrayScene(scene), 16)
    expected_per_window = score_scene(OnnxScorer(plain), ArrayScene(scene), 16)
    np.testing.assert_array_equal(got_flagged.probs, expected_dense.probs)
    np.testing.assert_array_equal(got_flagged.boxes, expected_dense.boxes)
    np.testing.assert_array_equal(got_plain.probs, expected_per_window.probs)
    assert np.abs(expected_dense.probs - expected_per_window.probs).max() > 1e-3


def test_flagged_files_fall_back_to_per_window_where_the_trunk_cannot_serve(files):
    flagged, _, plain, _, _ = files
    assert dense_scorer_for(plain, 16) is None
    assert isinstance(dense_scorer_for(flagged, 16), DenseScorer)
    assert dense_scorer_for(flagged, 6) is None  # a step off the trunk's 4 px grid
    assert dense_scorer_for(flagged, 16, scene_window=64) is None  # resized windows


def test_calibration_scores_as_the_file_is_scored(files):
    flagged, _, plain, scene, _ = files
    truth = [{"id": "a", "label": "car", "x": 40, "y": 32, "w": 32, "h": 32, "order": 1,
              "visible": 1.0}]  # fmt: skip
    canvases = type("Canvases", (), {"calibration": (scene, truth)})()
    assert calibration_summary(flagged, canvases)["scoring"] == "dense"
    assert calibration_summary(plain, canvases)["scoring"] == "per window"

"""The int8 copy a calibrated model file gets (issue 37.3): quantized on the calibration scene,
kept only when it holds up there (the check recorded either way), named by the fp32 file with
its own dense graph, picked by ``scoring_file`` as the precision setting and the CPU say, scored
densely with tiles that join bit for bit, and travelling with the file through storage."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from dense_helpers import export_flagged
from int8_helpers import CLASSES, Canvases, hand_made_scene, taught_model
from PIL import Image

from mlcore.cli import main
from mlcore.inference.calibration import calibrate_model_file
from mlcore.inference.dense_scoring import DenseScorer, dense_model_path, score_scene_dense
from mlcore.inference.int8_sibling import (
    int8_sibling_path,
    int8_units,
    scoring_file,
    write_int8_sibling,
)
from mlcore.inference.scoring import ScoreGrid
from mlcore.ingest.scenes import ArrayScene
from mlcore.model.onnx_file import read_metadata, sibling_files
from mlcore.storage import LocalStorage
from workers.spark_score import download_siblings


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A flagged (dense) model file, calibrated on the hand-made scene, with its int8 copy."""
    folder = tmp_path_factory.mktemp("int8-sibling")
    per_window, dense = export_flagged(taught_model(), folder, CLASSES)
    scene, truth = hand_made_scene()
    result = calibrate_model_file(per_window, Canvases(scene, truth))
    return per_window, dense, result, scene, truth


def test_calibration_gives_the_file_an_int8_copy_with_its_own_dense_graph(calibrated):
    fp32, dense, result, _, _ = calibrated
    check = result["int8"]
    meta = read_metadata(fp32)
    assert meta["int8_check"] == check
    assert check["kept"] == (check["int8_f1"] >= check["fp32_f1"] - check["margin"])
    assert check["fp32_f1"] > 0.5  # the check ran on a scene the model answers
    if not check["kept"]:
        pytest.fail(f"the taught model's int8 copy lost on its scene: {check}")
    int8 = int8_sibling_path(fp32)
    assert int8 == fp32.with_name("model.int8.onnx") and meta["int8_model"] == int8.name
    dense_int8 = dense_model_path(int8)
    assert dense_int8 == fp32.with_name("model.dense.int8.onnx") and dense_int8 != dense
    int8_meta = read_metadata(int8)
    assert int8_meta["thresholds"] == meta["thresholds"]  # one set of thresholds a version
    assert int8_meta["precision"] == "int8" and "int8_model" not in int8_meta
    for path in (int8, dense_int8):
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert read_metadata(dense_int8)["dense"] is True
    assert sorted(p.name for p in sibling_files(fp32)) == sorted(
        ["model.dense.onnx", "model.int8.onnx", "model.dense.int8.onnx"]
    )


def test_a_copy_that_loses_is_deleted_and_the_check_says_so(tmp_path):
    fp32, _ = export_flagged(taught_model(), tmp_path, CLASSES)
    scene, truth = hand_made_scene()
    calibrate_model_file(fp32, Canvases(scene, truth), int8=False)
    assert int8_sibling_path(fp32) is None and "int8_check" not in read_metadata(fp32)
    # A margin no copy can meet (it would have to gain a whole F1 point of 1.0).
    check = write_int8_sibling(fp32, Canvases(scene, truth), margin=-1.0)
    assert check["kept"] is False and check["files"] == []
    assert not fp32.with_name("model.int8.onnx").exists()
    assert not fp32.with_name("model.dense.int8.onnx").exists()
    meta = read_metadata(fp32)
    assert meta["int8_check"]["kept"] is False and "int8_model" not in meta
    assert scoring_file(fp32, "int8") == fp32  # nothing to pick


def test_an_uncalibrated_file_is_refused_in_words(tmp_path):
    fp32, _ = export_flagged(taught_model(), tmp_path, CLASSES)
    with pytest.raises(ValueError, match="calibrate it first"):
        write_int8_sibling(fp32, Canvases(*hand_made_scene()))


def test_scoring_file_follows_the_setting_and_the_cpu(calibrated, monkeypatch):
    fp32 = calibrated[0]
    int8 = int8_sibling_path(fp32)
    assert scoring_file(fp32, "fp32") == fp32
    assert scoring_file(fp32, "int8") == int8
    assert scoring_file(fp32, "auto") == (int8 if int8_units() else fp32)
    monkeypatch.setenv("MLCORE_SCORING_PRECISION", "fp32")
    assert scoring_file(fp32) == fp32
    monkeypatch.setenv("MLCORE_SCORING_PRECISION", "half")
    with pytest.raises(ValueError, match="auto, fp32, int8"):
        scoring_file(fp32)


def test_int8_dense_tiles_join_bit_for_bit_and_keep_the_classes(calibrated):
    fp32, dense, _, scene, _ = calibrated
    int8 = DenseScorer(dense_model_path(int8_sibling_path(fp32)))
    whole = score_scene_dense(int8, ArrayScene(scene), 16)
    tiled = score_scene_dense(int8, ArrayScene(scene), 16, rows_per_strip=3, cols_per_tile=4)
    np.testing.assert_array_equal(whole.probs, tiled.probs)
    np.testing.assert_array_equal(whole.boxes, tiled.boxes)
    reference = score_scene_dense(DenseScorer(dense), ArrayScene(scene), 16)
    top2 = np.sort(reference.probs, axis=-1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > 0.3
    assert clear.sum() >= 20
    np.testing.assert_array_equal(whole.probs[clear].argmax(-1), reference.probs[clear].argmax(-1))


def test_the_cli_scores_the_copy_the_precision_names(calibrated, tmp_path):
    fp32, dense, _, scene, _ = calibrated
    picture = tmp_path / "scene.png"
    Image.fromarray(scene).save(picture)
    for precision in ("int8", "fp32"):
        out = tmp_path / f"{precision}.npz"
        assert main(["score", str(fp32), str(picture), str(out), "--precision", precision]) == 0
    dense_int8 = DenseScorer(dense_model_path(int8_sibling_path(fp32)))
    expected = {"int8": score_scene_dense(dense_int8, ArrayScene(scene), 16),
                "fp32": score_scene_dense(DenseScorer(dense), ArrayScene(scene), 16)}  # fmt: skip
    for precision, grid in expected.items():
        np.testing.assert_array_equal(
            ScoreGrid.load(tmp_path / f"{precision}.npz").probs, grid.probs
        )


def test_every_named_file_is_downloaded_with_the_model(calibrated, tmp_path):
    fp32 = calibrated[0]
    storage = LocalStorage(tmp_path / "store")
    for path in [fp32, *sibling_files(fp32)]:
        with open(path, "rb") as f:
            storage.write(f"models/v1/{path.name}", f)
    local = tmp_path / "cache" / "model.onnx"
    local.parent.mkdir()
    local.write_bytes(storage.read("models/v1/model.onnx"))
    download_siblings(storage, "models/v1/model.onnx", local)
    assert sorted(p.name for p in local.parent.iterdir()) == sorted(
        ["model.onnx", "model.dense.onnx", "model.int8.onnx", "model.dense.int8.onnx"]
    )
    assert scoring_file(local, "int8") == local.with_name("model.int8.onnx")

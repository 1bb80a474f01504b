"""Dense scoring through Spark (issue 37.2): a model file that says it can be scored densely, given
as a storage key as the scoring job gives it, is scored partition by partition (each with its
halo read from the scene) and the partitions join without seams: the grid equals the local dense
result bit for bit (Spark local mode, real executors' Python workers)."""

from __future__ import annotations

import numpy as np
import pytest
from dense_helpers import export_flagged, varied_model
from int8_helpers import CLASSES as INT8_CLASSES
from int8_helpers import Canvases, hand_made_scene, taught_model
from spark_helpers import LOCAL_MASTER, local_spark_session, put_scene

from mlcore.inference.calibration import calibrate_model_file
from mlcore.inference.dense_scoring import DenseScorer, score_scene_dense
from mlcore.inference.scoring import OnnxScorer, score_scene
from mlcore.ingest.scenes import NpyScene
from mlcore.model.onnx_file import sibling_files
from mlcore.storage import storage_from_url
from workers.spark_score import score_scene_on_spark, stop_spark

MASTER = LOCAL_MASTER
# 12 window rows at step 16, the last clamped to 186 (off the trunk's 4 px grid: its own phase).
HEIGHT, WIDTH, STEP = 218, 330, 16
CLASSES = ["negative", "car", "boat"]


@pytest.fixture(scope="module")
def spark():
    session = local_spark_session()
    yield session
    stop_spark(session)


def test_spark_partitions_join_densely_without_seams(spark, tmp_path):
    model = varied_model(3, seed=3)
    per_window, dense = export_flagged(model, tmp_path, CLASSES)
    store = storage_from_url(str(tmp_path / "store"))
    put_scene(store, "scenes/s.npy", HEIGHT, WIDTH)
    for path in (per_window, dense):  # where the export job puts a version's files
        store.write(f"models/v1/{path.name}", path.read_bytes())

    grid, info = score_scene_on_spark(
        store.root_url, "scenes/s.npy", "models/v1/model.onnx", STEP, master=MASTER,
        partitions=5,
    )  # fmt: skip

    reader = NpyScene(store, "scenes/s.npy")
    local = score_scene_dense(DenseScorer(dense), reader, STEP)
    np.testing.assert_array_equal(grid.ys, local.ys)
    np.testing.assert_array_equal(grid.xs, local.xs)
    np.testing.assert_array_equal(grid.probs, local.probs)
    assert info.scoring == "dense" and info.n_partitions == 5
    assert grid.ys[-1] == HEIGHT - 32 and grid.ys[-1] % 4 != 0
    np.testing.assert_array_equal(grid.boxes, local.boxes)
    np.testing.assert_array_equal(grid.centredness, local.centredness)
    per = score_scene(OnnxScorer(per_window), reader, STEP)
    assert np.abs(per.probs - grid.probs).max() > 1e-3  # dense, not per window


@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_spark_scores_the_int8_copy_the_precision_names(spark, tmp_path, precision):
    """The driver picks the file (its int8 copy, as the setting says) and ships it: the
    partitions of an int8 run join bit for bit to the local int8 dense result."""
    folder = tmp_path / "files"
    folder.mkdir()
    per_window, dense = export_flagged(taught_model(), folder, INT8_CLASSES)
    calibrate_model_file(per_window, Canvases(*hand_made_scene()))
    store = storage_from_url(str(tmp_path / "store"))
    put_scene(store, "scenes/s.npy", HEIGHT, WIDTH)
    for path in [per_window, *sibling_files(per_window)]:  # as the export job uploads them
        store.write(f"models/v1/{path.name}", path.read_bytes())

    grid, info = score_scene_on_spark(
        store.root_url, "scenes/s.npy", "models/v1/model.onnx", STEP, master=MASTER,
        partitions=4, precision=precision,
    )  # fmt: skip

    chosen = folder / ("model.dense.int8.onnx" if precision == "int8" else "model.dense.onnx")
    local = score_scene_dense(DenseScorer(chosen), NpyScene(store, "scenes/s.npy"), STEP)
    np.testing.assert_array_equal(grid.probs, local.probs)
    np.testing.assert_array_equal(grid.boxes, local.boxes)
    assert info.scoring == ("dense, int8" if precision == "int8" else "dense")

"""bench/bench_gigapixel.py's real-model options: the CIFAR scene is a seeded wall of CIFAR-10
test images, and ``--model`` brings a flagged model file's dense graph along, so the bench scores
the file the way the product does."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from bench import bench_gigapixel as bench  # noqa: E402
from mlcore.data.datasets import find_shared_data, load_dataset  # noqa: E402
from mlcore.inference.dense_scoring import dense_scorer_for  # noqa: E402


@pytest.mark.skipif(find_shared_data() is None, reason="needs ../shared/data (CIFAR-10)")
def test_the_cifar_scene_is_a_seeded_wall_of_cifar_test_images():
    tile_of = bench.cifar_tiles()
    tile = tile_of(3, 5)
    assert tile.shape == (bench.TILE, bench.TILE, 3) and tile.dtype == np.uint8
    np.testing.assert_array_equal(tile, tile_of(3, 5))  # the same scene every run
    assert not np.array_equal(tile, tile_of(3, 6))
    test = load_dataset(find_shared_data() / "cifar10-jpg.zip", split="test").images
    known = {image.tobytes() for image in test}
    cells = range(0, bench.TILE, bench.OBJECT)
    for y in cells:
        for x in cells:
            assert tile[y : y + bench.OBJECT, x : x + bench.OBJECT].tobytes() in known


def test_a_flagged_model_file_comes_with_every_file_it_names(tmp_path):
    from dense_helpers import export_flagged
    from int8_helpers import CLASSES, Canvases, hand_made_scene, taught_model

    from mlcore.inference.calibration import calibrate_model_file
    from mlcore.inference.int8_sibling import scoring_file

    source = tmp_path / "source"
    source.mkdir()
    per_window, dense = export_flagged(taught_model(), source, CLASSES)
    calibrate_model_file(per_window, Canvases(*hand_made_scene()))  # and its int8 copy
    work = tmp_path / "work"
    work.mkdir()
    assert bench.bench_model(work).name == "colour.onnx"  # no --model: the colour classifier
    bench.copy_model(per_window, work)
    chosen = bench.bench_model(work)
    assert chosen == work / "model" / "model.onnx"
    for name in ("model.dense.onnx", "model.int8.onnx", "model.dense.int8.onnx"):
        assert (work / "model" / name).read_bytes() == (source / name).read_bytes()
    assert dense_scorer_for(chosen, bench.STEP) is not None  # scored densely, as the file says
    assert scoring_file(chosen, "int8") == work / "model" / "model.int8.onnx"


def test_the_tree_pss_counts_pages_a_forked_child_shares_once():
    import os
    import time

    shared = np.ones(64 * 2**20, dtype=np.uint8)  # touched before the fork: shared with the child
    child = os.fork()
    if child == 0:  # pragma: no cover (the child only waits, holding the shared pages)
        time.sleep(5)
        os._exit(0)
    try:
        time.sleep(0.3)
        pids = [os.getpid(), child]
        rss = sum(bench._rss(p) for p in pids)
        pss = sum(bench._pss(p) for p in pids)
        # Both RSS count the 64 MiB; the PSS sum counts them once.
        assert bench._rss(child) > shared.nbytes
        assert rss - pss > 0.8 * shared.nbytes
        assert pss > shared.nbytes
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)


def test_the_tree_memory_is_told_by_role():
    import os
    import subprocess
    import sys

    sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
    worker = subprocess.Popen([*sleeper, "pyspark.daemon"])
    other = subprocess.Popen(["sleep", "30"])
    try:
        assert bench._role(os.getpid(), os.getpid()) == "step process"
        assert bench._role(worker.pid, os.getpid()) == "Spark Python workers"
        assert bench._role(other.pid, os.getpid()) == "other"
        assert bench._role(2**22 + 7, os.getpid()) == "other"  # gone: no such process
    finally:
        worker.kill()
        other.kill()
        worker.wait()
        other.wait()


@pytest.mark.slow  # starts a Spark master and two workers
def test_the_score_step_runs_on_a_standalone_cluster_and_reports_the_skew(tmp_path):
    from spark_helpers import stop_running_spark

    stop_running_spark()  # one SparkContext per process: a local one of an earlier test goes
    bench.step_make(tmp_path, 1024)
    bench.step_ingest(tmp_path, "scene.tif")
    result = bench.step_score(tmp_path, 1024, master="standalone")
    assert result["windows"] == 63 * 63 and result["master"].startswith("standalone")
    skew = result["skew"]
    assert result["partitions"] >= 2 and skew["max_s"] >= skew["median_s"] > 0
    # Both executors took partitions, and their shares add up to the whole scene.
    assert len(skew["windows_share_by_executor"]) == 2
    assert sum(skew["windows_share_by_executor"]) == pytest.approx(1.0, abs=0.002)


def test_partition_skew_from_timings():
    timings = [{"seconds": s, "host": h, "windows": w}
               for s, h, w in [(1.0, "a", 10), (2.0, "b", 30), (4.0, "a", 60)]]  # fmt: skip
    assert bench.partition_skew(timings) == {
        "median_s": 2.0, "max_s": 4.0, "max_over_median": 2.0,
        "windows_share_by_executor": [0.3, 0.7],
    }  # fmt: skip

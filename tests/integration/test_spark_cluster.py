"""Scoring on a real Spark standalone cluster: a master and two workers started on localhost from
the pyspark installation (SPARK_HOME = the pyspark package), stopped in a finalizer."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from spark_helpers import put_scene, stop_running_spark, tiny_onnx_model

from bench.spark_cluster import StandaloneCluster, free_port
from mlcore.inference.scoring import load_scorer, score_scene
from mlcore.ingest.scenes import NpyScene
from mlcore.storage import storage_from_url
from workers.spark_score import get_spark, score_scene_on_spark, stop_spark

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    stop_running_spark()
    standalone = StandaloneCluster(tmp_path_factory.mktemp("spark-cluster"))
    try:
        yield standalone.start()
    finally:
        standalone.stop()


def test_scoring_on_standalone_cluster_equals_local(cluster, tmp_path):
    store = storage_from_url(str(tmp_path / "store"))
    put_scene(store, "scenes/c.npy", 264, 300, seed=3)
    model = tiny_onnx_model(tmp_path / "tiny.onnx", seed=5)
    expected = score_scene(load_scorer(model), NpyScene(store, "scenes/c.npy"), 16)

    ui_port = free_port()
    spark = get_spark(
        cluster.master_url, conf=cluster.session_conf() | {"spark.ui.port": str(ui_port)}
    )
    try:
        assert spark.sparkContext.master == cluster.master_url
        grid, info = score_scene_on_spark(
            store.root_url, "scenes/c.npy", str(model), 16, master=cluster.master_url, partitions=8
        )
    finally:
        stop_spark(spark)
    np.testing.assert_array_equal(grid.probs, expected.probs)
    np.testing.assert_array_equal(grid.ys, expected.ys)
    assert info.master == cluster.master_url and info.n_partitions == 8
    assert info.spark_ui_url and info.spark_ui_url.endswith(f":{ui_port}")
    executors = {timing["host"] for timing in info.partition_timings}
    assert len(executors) >= 2, f"expected tasks on both executors, got {executors}"


def live_group_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are still running. Zombies are left out: in a container
    whose PID 1 does not reap, a killed orphan stays a zombie although it holds nothing."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def test_cluster_stop_leaves_no_process(tmp_path):
    standalone = StandaloneCluster(tmp_path, n_workers=1)
    try:
        standalone.start()
        pids = [p.pid for p in standalone.processes]
    finally:
        standalone.stop()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(live_group_members(pid) for pid in pids):
        time.sleep(0.5)
    assert not [live_group_members(pid) for pid in pids if live_group_members(pid)]

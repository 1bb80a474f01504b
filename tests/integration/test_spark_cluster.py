"""Scoring on a real Spark standalone cluster: a master and two workers started on localhost from
the pyspark installation (SPARK_HOME = the pyspark package), stopped in a finalizer."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from spark_helpers import put_scene, tiny_onnx_model

from mlcore.inference.scoring import load_scorer, score_scene
from mlcore.ingest.scenes import NpyScene
from mlcore.storage import storage_from_url
from workers.spark_score import get_spark, score_scene_on_spark, stop_spark

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class StandaloneCluster:
    """``spark-class ...Master`` plus workers, each in its own process group."""

    def __init__(self, workdir: Path, n_workers: int = 2):
        import pyspark

        self.spark_home = Path(pyspark.__file__).parent
        self.workdir, self.n_workers = workdir, n_workers
        self.port, self.webui_port = free_port(), free_port()
        self.master_url = f"spark://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen] = []
        self.env = {
            **os.environ,
            "SPARK_HOME": str(self.spark_home),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_LOG_DIR": str(workdir / "logs"),
            "PYSPARK_PYTHON": sys.executable,
        }

    def _launch(self, name: str, *args: str) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [str(self.spark_home / "bin" / "spark-class"), *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: killpg takes the JVM and its children
        )
        log.close()
        self.processes.append(process)

    def start(self) -> StandaloneCluster:
        self._launch(
            "master",
            "org.apache.spark.deploy.master.Master",
            *("--host", "127.0.0.1", "--port", str(self.port)),
            *("--webui-port", str(self.webui_port)),
        )
        for index in range(self.n_workers):
            self._launch(
                f"worker{index}",
                "org.apache.spark.deploy.worker.Worker",
                *("--host", "127.0.0.1", "--webui-port", str(free_port())),
                *("--cores", "1", "--memory", "1g"),
                *("--work-dir", str(self.workdir / f"work{index}")),
                self.master_url,
            )
        self._wait_for_workers(timeout=120)
        return self

    def _wait_for_workers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"a Spark daemon exited early; see {self.workdir}/*.log")
            try:
                url = f"http://127.0.0.1:{self.webui_port}/json/"
                with urllib.request.urlopen(url, timeout=5) as response:
                    state = json.load(response)
                if state.get("aliveworkers", 0) >= self.n_workers:
                    return
            except (OSError, ValueError):  # not up yet, or (while starting) an HTML page
                pass
            time.sleep(1)
        raise RuntimeError(f"Spark workers did not register in {timeout}s; see {self.workdir}")

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        # Executors and their Python workers were in the workers' groups: make sure none is left.
        for process in self.processes:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def stop_running_spark() -> None:
    """One SparkContext per process: a local one left by an earlier test must go first."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    running = SparkContext._active_spark_context
    if running is not None:
        stop_spark(SparkSession(running))


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
        cluster.master_url,
        conf={
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.ui.port": str(ui_port),
            "spark.executor.memory": "512m",
            "spark.executor.cores": "1",
            "spark.cores.max": "2",
            # Start the job only when both executors are up, so both get tasks.
            "spark.scheduler.minRegisteredResourcesRatio": "1.0",
            "spark.scheduler.maxRegisteredResourcesWaitingTime": "90s",
        },
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

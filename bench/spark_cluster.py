"""A Spark standalone cluster on localhost: a master and N workers started from the pyspark
installation (SPARK_HOME = the pyspark package), each in its own process group, for the tests
(tests/integration/test_spark_cluster.py) and the gigapixel bench (``--master standalone``)."""

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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class StandaloneCluster:
    """``spark-class ...Master`` plus workers, each in its own process group."""

    def __init__(self, workdir: Path, n_workers: int = 2, worker_memory: str = "1g"):
        import pyspark

        self.spark_home = Path(pyspark.__file__).parent
        self.workdir, self.n_workers, self.worker_memory = workdir, n_workers, worker_memory
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

    def session_conf(self, executor_memory: str = "512m") -> dict[str, str]:
        """Spark settings for a driver on this machine using the cluster: an executor of one core
        on each worker, and the job starts only when both are up, so both get tasks."""
        return {
            "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
            "spark.executor.memory": executor_memory, "spark.executor.cores": "1",
            "spark.cores.max": str(self.n_workers),
            "spark.scheduler.minRegisteredResourcesRatio": "1.0",
            "spark.scheduler.maxRegisteredResourcesWaitingTime": "90s",
        }  # fmt: skip

    def start(self) -> StandaloneCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
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
                *("--cores", "1", "--memory", self.worker_memory),
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

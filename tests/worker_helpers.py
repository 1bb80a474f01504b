"""Real RQ worker processes for the fault tests: started as `manage.py rqworker` with the test's
database, Redis and storage (labeling.jobs.local_services.worker_env), each in its own session so
that a group kill reaches the worker and its work horse."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from labeling.jobs.local_services import REPO, worker_env


def start_worker(log_path, *queues: str, worker_class: str | None = None) -> subprocess.Popen:
    """`manage.py rqworker QUEUES` writing to ``log_path``; ``worker_class`` a dotted name
    importable from tests/ (fast_heartbeat_worker.FastHeartbeatWorker) instead of the project's."""
    env = worker_env()
    command = [sys.executable, "manage.py", "rqworker", *queues]
    if worker_class:
        env |= {"PYTHONPATH": str(REPO / "tests")}
        command += ["--worker-class", worker_class]
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def stop_worker(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (killed, not yet reaped by its parent) is dead for our purpose.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False

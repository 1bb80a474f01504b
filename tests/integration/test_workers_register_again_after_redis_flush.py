"""A Redis that lost its data (a flush, a failover to an empty replica) while a worker runs a job:
RQ's heartbeat renewed only the worker's hash, so the worker ran on unregistered and the health
page counted 0 workers. workers.rq_worker registers again at its next heartbeat (every 2 s in
this test's worker class). Real `manage.py rqworker` process, real Redis (this test's own db)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from labeling.jobs.enqueue import enqueue
from labeling.jobs.local_services import REPO, worker_env
from labeling.web.health import check_redis_and_queues


def train_workers() -> int:
    _redis, queues = check_redis_and_queues()
    return {q["name"]: q["workers"] for q in queues}["train"]


@pytest.mark.django_db(transaction=True)
def test_a_running_worker_registers_again_after_redis_lost_its_data(redis_conn, tmp_path):
    log_path = tmp_path / "worker.log"
    log = open(log_path, "ab")
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "rqworker", "train",
         "--worker-class", "fast_heartbeat_worker.FastHeartbeatWorker"],
        cwd=REPO, env=worker_env() | {"PYTHONPATH": str(REPO / "tests")}, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    log.close()
    try:
        record = enqueue("spin", "jobs_for_tests.spin", queue="train", seconds=40)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            record.refresh_from_db()
            if record.status == "running" and record.progress_done >= 1:
                break
            assert worker.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.2)
        assert record.status == "running", log_path.read_text()[-3000:]
        assert train_workers() == 1

        redis_conn.flushdb()
        assert train_workers() == 0
        seen, deadline = 0, time.monotonic() + 15
        while time.monotonic() < deadline and not seen:
            time.sleep(0.5)
            seen = train_workers()
        assert seen == 1, log_path.read_text()[-3000:]
        assert "registering again" in log_path.read_text()
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

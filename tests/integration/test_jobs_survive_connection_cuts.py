"""Long jobs survive database connections the server cuts (a failover, a restart:
pg_terminate_backend here), as requests already do (test_db_connection_cuts.py). A retrain
cycle on a real `manage.py rqworker` process has its backends terminated again and again while
it trains, and still ends done with its version current; only a real worker death fails a cycle
(test_worker_kill.py). Below it, labeling.jobs.db_cuts on this process's own connection: statements
in autocommit are repeated on a new connection, an INSERT is never repeated (the connection is
checked before it), a transactional step runs again whole."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import psycopg
import pytest
from db_helpers import dsn
from django.db import OperationalError, connection, transaction
from loop_helpers import add_dataset, add_scene, annotate, run_workers

from labeling.jobs.db_cuts import retry_on_cut, surviving_cuts
from labeling.jobs.enqueue import enqueue
from labeling.jobs.local_services import REPO, worker_env
from labeling.loop.cycle import start_cycle
from labeling.models import JobRecord, ModelVersion

APP_NAME = "collage-job-under-cuts"  # libpq's application_name of the worker's connections
# Enough steps of the tiny profile to train for several seconds on a busy 2-core machine.
STEPS = 1500


def terminate(where: str, args) -> list[str]:
    """pg_terminate_backend on the backends matching ``where``; their states before the cut."""
    with psycopg.connect(dsn(), autocommit=True) as admin:
        rows = admin.execute(
            "SELECT state, pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE {where} AND pid <> pg_backend_pid()",
            args,
        ).fetchall()
    return [state for state, ok in rows if ok]


def cut_own_connection() -> None:
    """Terminate this process's Django connection from another one, and wait until it is."""
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    assert terminate("pid = %s", [pid]) != []
    with psycopg.connect(dsn(), autocommit=True) as admin:
        for _ in range(100):
            if not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
                return
            time.sleep(0.02)


@pytest.mark.django_db(transaction=True)
def test_a_training_cycle_survives_cut_connections(
    redis_conn, settings, storage_dir, tmp_path, project, alice
):
    settings.VAR_DIR = tmp_path / "var"
    add_dataset(project)
    scene, _ = add_scene(project)
    enqueue("build_canvases", "workers.loop_jobs.build_canvases", project=project,
            project_id=project.pk, canvas_size=128, canvases_per_class=1)  # fmt: skip
    run_workers("default")
    annotate(project, scene, alice)
    # Without a scored scene the cycle promotes its version when training ends (no Spark).
    scene.pixels_key = ""
    scene.save(update_fields=["pixels_key"])

    record = start_cycle(project, alice, profile="tiny", config={"steps": STEPS})
    log_path = tmp_path / "worker.log"
    log = open(log_path, "ab")
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "rqworker", "train", "--burst"],
        cwd=REPO, env=worker_env() | {"PGAPPNAME": APP_NAME}, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    log.close()
    cuts, progress_at_cut = [], []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            record.refresh_from_db()
            if record.status not in ("queued", "running"):
                break
            # Every 0.7 s while it trains, every connection of the worker is cut (the job's
            # own, idle or mid-write, and the one holding the cycle lock).
            if record.message.startswith("training:") and len(cuts) < 6:
                states = terminate("application_name = %s", [APP_NAME])
                if states:
                    cuts.append(states)
                    progress_at_cut.append(record.progress_done)
            time.sleep(0.7)
        worker.wait(120)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    record.refresh_from_db()
    worker_log = log_path.read_text()[-4000:]
    assert record.status == "done", (record.error, worker_log)
    assert len(cuts) >= 3, (cuts, worker_log)  # the cuts happened while it trained
    version = ModelVersion.objects.get(pk=record.params["version_id"])
    # Training went on after the last cut (the job's progress restarts at each phase, so the
    # version's own log of training steps says how far it went), and the cycle finished.
    steps = [int(n) for n in re.findall(r"^step (\d+):", version.log, re.MULTILINE)]
    assert steps and max(steps) > progress_at_cut[-1], (progress_at_cut, steps[-3:])
    assert version.status == "ready" and version.is_current, (version.status, version.error)
    assert version.checkpoint_key and version.model_key
    assert not JobRecord.objects.filter(project=project, status__in=("queued", "running")).exists()


@pytest.mark.django_db(transaction=True)
def test_statements_in_autocommit_are_repeated_on_a_new_connection(project):
    record = JobRecord.objects.create(project=project, kind="probe", status="running")
    cut_own_connection()
    with pytest.raises(OperationalError):  # without the wrapper a cut fails the next statement
        JobRecord.objects.filter(pk=record.pk).update(message="before")
    connection.close()

    with surviving_cuts():
        cut_own_connection()
        JobRecord.objects.filter(pk=record.pk).update(message="an update")
        cut_own_connection()
        assert JobRecord.objects.get(pk=record.pk).message == "an update"  # a read
        cut_own_connection()
        # An INSERT: the dead connection is noticed before it, and it is written once.
        JobRecord.objects.create(project=project, kind="probe", status="queued")
    assert JobRecord.objects.filter(project=project, kind="probe").count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_transaction_cut_before_it_commits_runs_again_whole(project):
    calls = []

    def step():
        with transaction.atomic():
            calls.append(len(calls))
            JobRecord.objects.create(project=project, kind="step", status="queued")
            if len(calls) == 1:
                cut_own_connection()
            JobRecord.objects.create(project=project, kind="step", status="queued")

    with surviving_cuts():
        retry_on_cut(step)
    assert calls == [0, 1]
    assert JobRecord.objects.filter(kind="step").count() == 2  # the cut attempt left nothing

"""A retrain cycle whose worker is SIGKILLed mid-training: a real `manage.py rqworker` process
(its own process group, so the work horse dies with it, as in an out-of-memory kill) is killed
once the job's progress shows that training has begun. Then the job and the model version show
failed with the reason, the previous model stays current, no annotation is consumed, and a retry
(a new cycle) succeeds and consumes them. Real PostgreSQL, Redis, RQ and Spark local."""

from __future__ import annotations

import os
import signal
import time

import pytest
from loop_helpers import SPARK_MASTER, annotate, build_small_project, run_workers
from worker_helpers import start_worker

from labeling.jobs.enqueue import job_state
from labeling.loop.cycle import pending_annotations, reconcile_versions, running_cycle, start_cycle
from labeling.loop.cycle_lock import cycle_process_running
from labeling.models import Annotation, JobRecord, ModelVersion, TrainingCanvas


@pytest.fixture
def loop_settings(settings, storage_dir, tmp_path):
    settings.SPARK_MASTER = SPARK_MASTER
    settings.VAR_DIR = tmp_path / "var"
    return settings


def wait_for_training(record: JobRecord, proc, log_path, timeout: float = 180.0) -> None:
    """Until the cycle's job reports training progress (not only that it started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record.refresh_from_db()
        if record.status == "running" and record.message.startswith("training:"):
            return
        assert record.status in ("queued", "running"), (record.status, record.error)
        assert proc.poll() is None, log_path.read_text()
        time.sleep(0.2)
    pytest.fail(f"training never started: {record.status} {record.message!r}\n"
                f"{log_path.read_text()[-3000:]}")  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_worker_killed_mid_training_fails_the_cycle_and_a_retry_works(
    redis_conn, loop_settings, project, alice, tmp_path
):
    scene = build_small_project(project)
    first = start_cycle(project, alice, profile="tiny")
    run_workers("train", "score")
    v1 = project.current_model()
    assert v1 is not None and v1.number == 1, JobRecord.objects.get(pk=first.pk).error
    annotations = annotate(project, scene, alice)
    assert len(pending_annotations(project)) == 4

    # A cycle long enough to be killed in the middle of its training.
    doomed = start_cycle(project, alice, profile="tiny", config={"steps": 1_000_000})
    log_path = tmp_path / "worker.log"
    proc = start_worker(log_path, "train", "score")
    try:
        wait_for_training(doomed, proc, log_path)
        v2 = ModelVersion.objects.get(pk=doomed.params["version_id"])
        assert v2.status == "training"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    # Any page showing the job (labeling.jobs.enqueue.job_state) sees at once that its worker is
    # dead, without waiting for RQ's own cleanup of abandoned jobs.
    assert job_state(JobRecord.objects.get(pk=doomed.pk))["status"] == "failed"
    # The retrain endpoint (running_cycle) finds no cycle in flight and fails the version.
    assert running_cycle(project) is None
    doomed.refresh_from_db()
    assert doomed.status == "failed"
    assert "worker" in doomed.error and "killed" in doomed.error, doomed.error
    v2.refresh_from_db()
    assert v2.status == "failed" and not v2.is_current
    assert v2.error.startswith("retrain_cycle job failed: The worker stopped"), v2.error
    assert project.current_model() == v1
    assert not Annotation.objects.filter(project=project, consumed_by__isnull=False).exists()
    assert {a.pk for a in pending_annotations(project)} == {a.pk for a in annotations}
    reconcile_versions(project)  # idempotent
    assert ModelVersion.objects.get(pk=v2.pk).status == "failed"

    # The killed cycle's horse died with its worker; once the database has seen its session
    # end (milliseconds), nothing holds the project's cycle lock and a retry is accepted.
    deadline = time.monotonic() + 10
    while cycle_process_running(project.pk) and time.monotonic() < deadline:
        time.sleep(0.1)
    # Retry: a new cycle learns from the same annotations and becomes current.
    retry = start_cycle(project, alice, profile="tiny")
    proc = start_worker(tmp_path / "worker2.log", "train", "score")
    try:
        deadline = time.monotonic() + 300
        v3 = ModelVersion.objects.get(pk=retry.params["version_id"])
        while time.monotonic() < deadline:
            v3.refresh_from_db()
            if v3.status in ("ready", "failed"):
                break
            assert proc.poll() is None, (tmp_path / "worker2.log").read_text()
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    retry.refresh_from_db()
    assert retry.status == "done", retry.error
    assert v3.status == "ready" and v3.is_current, v3.error
    assert v3.number == 3 and v3.parent_id == v1.pk
    assert project.current_model() == v3
    assert sorted(v3.data_counts["annotation_ids"]) == sorted(a.pk for a in annotations)
    consumed = set(Annotation.objects.filter(project=project).values_list("consumed_by", flat=True))
    assert consumed == {v3.pk}
    assert pending_annotations(project) == []
    # The killed attempt's tiles were kept and not added twice by the retry (each of the 4 a
    # canvas: a tile with its scene context is 112 px, the test project's canvases 128 px).
    assert TrainingCanvas.objects.filter(project=project, kind="correction").count() == 4
    assert ModelVersion.objects.get(pk=v2.pk).status == "failed"

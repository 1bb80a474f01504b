"""A cycle's scoring killed half-way: its `score` worker (or only the work horse) is SIGKILLed after
the cycle scored one scene and while it scores the next. Then, at once (not when the cycle's
other jobs have run): the version reads failed, the killed job's run reads failed with the
reason (never `running` forever), the cycle's queued scoring job is cancelled and never runs,
and what people see of the scene the cycle did score (scene API, detections feed, review
queue) stays the current model's run. And a job declared failed ("killed or lost", after a
Redis flush) that still runs never completes its run. Real `manage.py rqworker` processes
(workers.rq_worker.Worker), Spark local, PostgreSQL and Redis."""

from __future__ import annotations

import os
import signal
import time

import django_rq
import pytest
from django.db import transaction
from review_helpers import make_scored_scene
from rq.job import Job
from worker_helpers import alive, start_worker, stop_worker

from labeling.jobs.enqueue import ACTIVE, job_state
from labeling.loop import cycle
from labeling.models import Detection, JobRecord, ModelVersion, ScoringRun


@pytest.fixture
def score_settings(settings, storage_dir, tmp_path):
    settings.SPARK_MASTER = "local[1]"
    settings.VAR_DIR = tmp_path / "var"
    return settings


def until(check, what, proc, log_path, timeout=180.0, pause=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        assert proc is None or proc.poll() is None, log_path.read_text()[-3000:]
        time.sleep(pause)
    pytest.fail(f"{what} never happened: {log_path.read_text()[-3000:]}")


def three_scenes(project):
    """Three scenes, each scored by the current model v1 (a real ONNX model's run)."""
    shown = [make_scored_scene(project, 128, 128, seed=i, name=f"scene {i}") for i in range(3)]
    return [s for s, _ in shown], {s.pk: r for s, r in shown}


def scoring_cycle(project, number):
    """A cycle that trained and exported model v<number> (v1's file) and queued the scoring of
    every scene, as workers.loop_jobs.retrain_cycle leaves it."""
    v1 = ModelVersion.objects.get(project=project, number=1)
    version = ModelVersion.objects.create(
        project=project, number=number, status="scoring", parent=v1, classes=v1.classes,
        model_key=v1.model_key,
    )  # fmt: skip
    JobRecord.objects.create(project=project, kind=cycle.CYCLE_KIND, queue="train", status="done",
                             params={"version_id": version.pk})  # fmt: skip
    runs = cycle.enqueue_scoring(version)
    records = [JobRecord.objects.get(kind="score", params__run_id=r.pk) for r in runs]
    return version, runs, records


def horse_of(record) -> int | None:
    record.refresh_from_db()
    if not record.rq_job_id:
        return None
    meta = Job.fetch(record.rq_job_id, connection=django_rq.get_connection("score")).meta
    return meta.get("horse_pid")


def kill_mid_scoring(runs, records, worker, log_path, kill) -> int:
    """Once the first scene is scored and the second is being scored: ``kill(horse)`` while the
    second run's row is locked, so it cannot finish first. Returns the horse's pid."""
    first, second = runs[0], runs[1]
    until(lambda: ScoringRun.objects.get(pk=first.pk).status == "done", "scene 1 scored",
          worker, log_path)  # fmt: skip
    until(lambda: ScoringRun.objects.get(pk=second.pk).status == "running", "scene 2 running",
          worker, log_path)  # fmt: skip
    horse = until(lambda: horse_of(records[1]), "the horse's pid", worker, log_path)
    with transaction.atomic():
        ScoringRun.objects.select_for_update().get(pk=second.pk)
        assert ScoringRun.objects.get(pk=second.pk).status == "running"
        kill(horse)
    return horse


def assert_nothing_in_flight(project, version) -> None:
    version.refresh_from_db()
    assert version.status == "failed" and not version.is_current, version.status
    in_flight = ScoringRun.objects.filter(scene__project=project, status__in=ACTIVE)
    assert list(in_flight.values_list("pk", "status")) == []
    assert list(JobRecord.objects.filter(project=project, status__in=ACTIVE)
                .values_list("pk", "kind", "status")) == []  # fmt: skip
    assert cycle.running_cycle(project) is None


def assert_current_run_shown(client, project, scene, run) -> None:
    detail = client.get(f"/api/scenes/{scene.pk}").json()["latest_run"]
    assert (detail["id"], detail["model_version"]) == (run.pk, 1)
    assert client.get(f"/api/scenes/{scene.pk}/detections").json()["run"] == run.pk
    item = client.get(f"/api/projects/{project.pk}/queue?scene={scene.pk}").json()
    assert (item["run"], item["model_version"]) == (run.pk, 1), item


def watch_cancelled(run, record, worker, log_path, seconds=6.0) -> None:
    """The cancelled job never runs, and its run never leaves `failed`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        record.refresh_from_db()
        run.refresh_from_db()
        assert record.status == "failed" and record.started_at is None, record.status
        assert run.status == "failed" and run.started_at is None, run.status
        assert worker is None or worker.poll() is None, log_path.read_text()[-3000:]
        time.sleep(0.2)


@pytest.mark.django_db(transaction=True)
def test_killed_horse_fails_the_version_its_run_and_cancels_its_siblings_at_once(
    redis_conn, score_settings, project, alice_client, tmp_path
):
    scenes, shown = three_scenes(project)
    v2, runs, records = scoring_cycle(project, 2)
    log_path = tmp_path / "worker.log"
    worker = start_worker(log_path, "score")
    try:
        horse = kill_mid_scoring(runs, records, worker, log_path,
                                 lambda pid: os.kill(pid, signal.SIGKILL))  # fmt: skip
        # The worker lives on and records the failure itself, before any page asks.
        until(lambda: ModelVersion.objects.get(pk=v2.pk).status == "failed", "v2 failed",
              worker, log_path, timeout=10.0)  # fmt: skip
        assert not alive(horse)
        killed_run, queued_run = (ScoringRun.objects.get(pk=r.pk) for r in runs[1:])
        assert killed_run.status == "failed" and "killed" in killed_run.error, killed_run.error
        assert killed_run.finished_at is not None
        v2.refresh_from_db()
        assert "work horse" in v2.error and "killed" in v2.error, v2.error
        cancelled = JobRecord.objects.get(pk=records[2].pk)
        assert cancelled.status == "failed" and cancelled.error.startswith("Cancelled: model v2")
        assert queued_run.error.startswith("Cancelled: model v2 failed"), queued_run.error
        rq_job = Job.fetch(cancelled.rq_job_id, connection=django_rq.get_connection("score"))
        until(lambda: rq_job.get_status(refresh=True) == "canceled", "RQ's cancel", worker,
              log_path, timeout=10.0)  # fmt: skip
        watch_cancelled(queued_run, cancelled, worker, log_path)
        assert_nothing_in_flight(project, v2)
        assert ScoringRun.objects.get(pk=runs[0].pk).status == "done"  # v2's, scored before
        assert_current_run_shown(alice_client, project, scenes[0], shown[scenes[0].pk])
    finally:
        stop_worker(worker)


@pytest.mark.django_db(transaction=True)
def test_killed_score_worker_is_reconciled_on_the_next_read_and_its_queued_job_never_runs(
    redis_conn, score_settings, project, alice_client, tmp_path
):
    scenes, shown = three_scenes(project)
    v2, runs, records = scoring_cycle(project, 2)
    log_path = tmp_path / "worker.log"
    worker = start_worker(log_path, "score")
    # The whole worker (its process group; the horse dies with it): nobody records anything.
    horse = kill_mid_scoring(runs, records, worker, log_path,
                             lambda pid: os.killpg(worker.pid, signal.SIGKILL))  # fmt: skip
    worker.wait(30)
    until(lambda: not alive(horse), "the horse's death", None, log_path, timeout=10.0)
    assert ModelVersion.objects.get(pk=v2.pk).status == "scoring"  # nobody has looked yet

    # The first read of the project (as a retry's 409 check would) settles everything.
    versions = alice_client.get(f"/api/projects/{project.pk}").json()["model_versions"]
    assert {v["number"]: v["status"] for v in versions}[2] == "failed", versions
    killed_run, queued_run = (ScoringRun.objects.get(pk=r.pk) for r in runs[1:])
    assert killed_run.status == "failed" and "worker" in killed_run.error, killed_run.error
    assert queued_run.status == "failed" and queued_run.error.startswith("Cancelled: model v2")
    assert_nothing_in_flight(project, v2)
    assert_current_run_shown(alice_client, project, scenes[0], shown[scenes[0].pk])

    # A new worker never runs the cancelled job.
    log2 = tmp_path / "worker2.log"
    worker = start_worker(log2, "score")
    try:
        cancelled = JobRecord.objects.get(pk=records[2].pk)
        watch_cancelled(queued_run, cancelled, worker, log2, seconds=8.0)
        assert django_rq.get_queue("score").count == 0
    finally:
        stop_worker(worker)
    assert_nothing_in_flight(project, v2)


@pytest.mark.django_db(transaction=True)
def test_a_job_declared_lost_after_a_redis_flush_never_completes_its_run(
    redis_conn, score_settings, project, tmp_path
):
    scene, run1 = make_scored_scene(project, 128, 128, seed=4)
    (run,) = cycle.enqueue_scoring(run1.model_version, [scene])  # a plain rescore
    record = JobRecord.objects.get(kind="score", params__run_id=run.pk)
    log_path = tmp_path / "worker.log"
    worker = start_worker(log_path, "score")
    try:
        until(lambda: ScoringRun.objects.get(pk=run.pk).status == "running", "scoring",
              worker, log_path)  # fmt: skip
        horse = until(lambda: horse_of(record), "the horse's pid", worker, log_path)
        with transaction.atomic():  # the run cannot finish while Redis is flushed and read
            ScoringRun.objects.select_for_update().get(pk=run.pk)
            redis_conn.flushdb()
            state = job_state(JobRecord.objects.get(pk=record.pk))
            assert state["status"] == "failed" and "killed or lost" in state["error"], state
        run.refresh_from_db()
        assert run.status == "failed" and "killed or lost" in run.error, run.error
        # The job runs on (Redis forgot it, its horse is alive) and comes to its end...
        until(lambda: not alive(horse), "the job's end", None, log_path, timeout=120.0, pause=0.2)
    finally:
        stop_worker(worker)
    # ...without completing its run: failed it stays, with no detections; the record too.
    run.refresh_from_db()
    assert run.status == "failed" and "killed or lost" in run.error, run.error
    assert not Detection.objects.filter(run=run).exists()
    record.refresh_from_db()
    assert record.status == "failed" and "killed or lost" in record.error, record.error
    assert "JobAbandoned" in record.log, record.log[-2000:]


@pytest.mark.django_db(transaction=True)
def test_a_sibling_scoring_job_running_on_another_worker_is_stopped(
    redis_conn, score_settings, project, alice_client, tmp_path
):
    scenes, shown = three_scenes(project)
    v2, runs, records = scoring_cycle(project, 2)
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = [start_worker(log, "score") for log in logs]
    try:
        # Scene 1 scored while scene 2 and then scene 3 are scored, one on each worker; a row
        # lock keeps each of them from finishing first.
        first, killed, sibling = runs
        record_of = {r.params["run_id"]: r for r in records}
        status = lambda run: ScoringRun.objects.get(pk=run.pk).status  # noqa: E731
        until(lambda: status(killed) == "running", "scene 2 running", workers[0], logs[0])
        with transaction.atomic():
            ScoringRun.objects.select_for_update().get(pk=killed.pk)
            until(lambda: status(first) == "done" and status(sibling) == "running",
                  "scene 1 scored and scene 3 running", workers[1], logs[1])  # fmt: skip
            ScoringRun.objects.select_for_update().get(pk=sibling.pk)
            horses = [until(lambda r=r: horse_of(record_of[r.pk]), "a horse", None, logs[0])
                      for r in (killed, sibling)]  # fmt: skip
            os.kill(horses[0], signal.SIGKILL)
        until(lambda: not alive(horses[1]), "the sibling's horse stopped", None, logs[1], 15.0)
        sibling_record = JobRecord.objects.get(pk=record_of[sibling.pk].pk)
        assert sibling_record.status == "failed", sibling_record.status
        assert sibling_record.error.startswith("Cancelled: model v2 failed"), sibling_record.error
        sibling.refresh_from_db()
        assert sibling.status == "failed" and sibling.error.startswith("Cancelled"), sibling.error
        killed.refresh_from_db()
        assert killed.status == "failed" and "killed" in killed.error, killed.error
        assert all(w.poll() is None for w in workers)  # both workers live on
        assert_nothing_in_flight(project, v2)
        assert not Detection.objects.filter(run__in=[killed, sibling]).exists()
        assert_current_run_shown(alice_client, project, scenes[0], shown[scenes[0].pk])
    finally:
        for worker in workers:
            stop_worker(worker)

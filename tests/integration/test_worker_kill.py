"""A retrain cycle whose `train` worker is SIGKILLed the ways an operator, a supervisor or the
OOM killer would: the worker's process group, the whole process tree, the work horse alone.

RQ's work horse calls setpgrp(), so a group kill of the worker used to leave it training; the
"failed" cycle then turned done and was promoted, and a retry ran beside it. Each case here is
watched over time (not checked once): the killed horse is gone within seconds, the killed
version never leaves `failed` (never scoring, never ready, never current), no annotation is
consumed by it, and no two versions of the project are ever in training or scoring together.
Real `manage.py rqworker` processes (workers.rq_worker.Worker), PostgreSQL and Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from loop_helpers import add_dataset, add_scene, annotate, run_workers
from rq.job import Job
from worker_helpers import alive, start_worker

from labeling.jobs.enqueue import enqueue
from labeling.jobs.local_services import REPO, worker_env
from labeling.loop.cycle import pending_annotations, running_cycle, start_cycle
from labeling.loop.cycle_lock import cycle_process_running
from labeling.models import Annotation, JobRecord, ModelVersion

LONG = {"steps": 1_000_000}  # a cycle that trains until it is killed


@pytest.fixture
def kill_settings(settings, storage_dir, tmp_path):
    settings.SPARK_MASTER = "local[1]"
    settings.VAR_DIR = tmp_path / "var"
    return settings


class Watch:
    """Samples the project's versions while a case plays out; fails on any overlap of two
    in-flight versions or on a killed version moving anywhere but `failed`."""

    def __init__(self, project):
        self.project, self.killed, self.samples = project, set(), 0

    def sample(self) -> None:
        rows = list(ModelVersion.objects.filter(project=self.project).values_list(
            "pk", "number", "status", "is_current"))  # fmt: skip
        busy = [n for _, n, s, _ in rows if s in ("training", "scoring")]
        assert len(busy) <= 1, f"two cycles at once: versions {busy} ({rows})"
        for pk, number, status, current in rows:
            if pk in self.killed:
                assert status in ("training", "failed") and not current, (number, status)
        consumed = Annotation.objects.filter(
            project=self.project, consumed_by_id__in=self.killed
        ).count()
        assert consumed == 0
        self.samples += 1

    def for_seconds(self, seconds: float, until=None) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.sample()
            if until is not None and until():
                return
            time.sleep(0.2)


def wait_for_training(record, proc, log_path, watch, timeout=240.0) -> int:
    """Until the cycle trains; returns its horse's pid (recorded by workers.runner)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record.refresh_from_db()
        if record.status == "running" and record.message.startswith("training:"):
            pid = Job.fetch(record.rq_job_id, connection=_redis()).meta.get("horse_pid")
            assert pid and alive(pid)
            return pid
        assert record.status in ("queued", "running"), (record.status, record.error)
        assert proc.poll() is None, log_path.read_text()[-3000:]
        watch.sample()
        time.sleep(0.2)
    pytest.fail(f"training never started: {record.status} {record.message!r}\n"
                f"{log_path.read_text()[-3000:]}")  # fmt: skip


def _redis():
    import django_rq

    return django_rq.get_connection("train")


def wait_done(record, watch, proc, log_path, timeout=240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record.refresh_from_db()
        if record.status in ("done", "failed"):
            return
        assert proc.poll() is None, log_path.read_text()[-3000:]
        watch.sample()
        time.sleep(0.3)
    pytest.fail(f"job {record.pk} did not end: {log_path.read_text()[-3000:]}")


def assert_killed_cycle_failed(project, doomed, horse, watch, client=None) -> ModelVersion:
    """The horse is gone within 5 s; the job and the version read failed; watched 10 s more.
    With ``client`` the project's API is where the version is first read (it reconciles)."""
    watch.for_seconds(5.0, until=lambda: not alive(horse))
    assert not alive(horse), f"horse {horse} outlived its killed worker"
    if client is not None:
        number = ModelVersion.objects.get(pk=doomed.params["version_id"]).number
        versions = client.get(f"/api/projects/{project.pk}").json()["model_versions"]
        assert {v["number"]: v["status"] for v in versions}[number] == "failed", versions
    assert running_cycle(project) is None  # reconciles: the dead worker's job is failed
    doomed.refresh_from_db()
    assert doomed.status == "failed" and "worker" in doomed.error, doomed.error
    version = ModelVersion.objects.get(pk=doomed.params["version_id"])
    assert version.status == "failed" and not version.is_current, version.status
    watch.killed.add(version.pk)
    watch.for_seconds(10.0)
    # The database lock of the killed cycle went with its process: nothing blocks a retry.
    watch.for_seconds(5.0, until=lambda: not cycle_process_running(project.pk))
    assert not cycle_process_running(project.pk)
    return version


@pytest.mark.django_db(transaction=True)
def test_killed_train_worker_stops_its_cycle_and_cycles_never_overlap(
    redis_conn, kill_settings, project, alice, alice_client, tmp_path
):
    add_dataset(project)
    scene, _ = add_scene(project)
    enqueue("build_canvases", "workers.loop_jobs.build_canvases", project=project,
            project_id=project.pk, canvas_size=128, canvases_per_class=1)  # fmt: skip
    run_workers("default")
    # No scoring run is needed to see promotion: without a scored scene a cycle promotes its
    # version at the end of training (the scene only carries the annotations).
    scene.pixels_key = ""
    scene.save(update_fields=["pixels_key"])
    annotations = annotate(project, scene, alice)
    watch = Watch(project)
    logs = [tmp_path / f"worker{i}.log" for i in range(3)]

    # 1. The worker's process group is SIGKILLed (an operator's `kill -9 -<pgid>`).
    doomed = start_cycle(project, alice, profile="tiny", config=LONG)
    worker = start_worker(logs[0], "train")
    try:
        horse = wait_for_training(doomed, worker, logs[0], watch)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    assert_killed_cycle_failed(project, doomed, horse, watch, client=alice_client)

    # 2. The horse alone is SIGKILLed (the OOM killer picks the biggest process): the worker
    # lives on, fails the job, and runs the next cycle to the end.
    worker = start_worker(logs[1], "train")
    try:
        doomed = start_cycle(project, alice, profile="tiny", config=LONG)
        horse = wait_for_training(doomed, worker, logs[1], watch)
        os.kill(horse, signal.SIGKILL)
        # The worker records the failure itself, before any page asks (plain reads here).
        version = ModelVersion.objects.get(pk=doomed.params["version_id"])
        watch.for_seconds(10.0, until=lambda: ModelVersion.objects.get(pk=version.pk).status
                          == "failed")  # fmt: skip
        version.refresh_from_db()
        assert version.status == "failed" and "work horse" in version.error, version.error
        assert_killed_cycle_failed(project, doomed, horse, watch)
        assert worker.poll() is None, logs[1].read_text()[-3000:]

        good = start_cycle(project, alice, profile="tiny")
        wait_done(good, watch, worker, logs[1])
        good.refresh_from_db()
        assert good.status == "done", good.error

        # 3. The whole process tree: the worker's group and the horse's group together.
        doomed = start_cycle(project, alice, profile="tiny", config=LONG)
        horse = wait_for_training(doomed, worker, logs[1], watch)
    finally:
        for pgid in (worker.pid, locals().get("horse")):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, TypeError):
                pass
        worker.wait()
    assert_killed_cycle_failed(project, doomed, horse, watch)

    # A retry on a fresh worker learns from every annotation and becomes current.
    retry = start_cycle(project, alice, profile="tiny")
    worker = start_worker(logs[2], "train")
    try:
        wait_done(retry, watch, worker, logs[2])
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)
    retry.refresh_from_db()
    assert retry.status == "done", retry.error
    final = ModelVersion.objects.get(pk=retry.params["version_id"])
    assert final.status == "ready" and final.is_current
    assert project.current_model() == final
    good_version = ModelVersion.objects.get(pk=good.params["version_id"])
    consumed = set(Annotation.objects.filter(project=project).values_list("consumed_by", flat=True))
    assert consumed == {good_version.pk}  # the good cycle consumed them; killed ones never
    assert pending_annotations(project) == []
    assert {a.pk for a in annotations} == set(good_version.data_counts["annotation_ids"])
    killed = ModelVersion.objects.filter(pk__in=watch.killed)
    assert killed.count() == 3 and set(killed.values_list("status", flat=True)) == {"failed"}
    assert watch.samples > 100
    assert JobRecord.objects.filter(project=project, status__in=("queued", "running")).count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_horse_that_outlived_its_worker_is_killed_before_its_job_is_called_failed(
    redis_conn, kill_settings, project, tmp_path
):
    """Without workers.rq_worker (stock rq.Worker: no PR_SET_PDEATHSIG) a group kill of the
    worker leaves the horse running. Declaring its job failed (labeling.jobs.enqueue.reconcile, as
    any page showing it does) first kills that horse, so "failed" means stopped."""
    from labeling.jobs.enqueue import job_state

    record = enqueue("spin", "jobs_for_tests.spin", project=project, queue="train", seconds=120)
    log_path = tmp_path / "stock-worker.log"
    log = open(log_path, "ab")
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "rqworker", "train", "--worker-class", "rq.worker.Worker"],
        cwd=REPO, env=worker_env() | {"PYTHONPATH": str(REPO / "tests")}, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    log.close()
    horse = None
    try:
        deadline = time.monotonic() + 120
        while horse is None and time.monotonic() < deadline:
            record.refresh_from_db()
            if record.status == "running" and record.progress_done >= 1:
                horse = Job.fetch(record.rq_job_id, connection=_redis()).meta.get("horse_pid")
            assert worker.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.2)
        assert horse and alive(horse), log_path.read_text()[-3000:]
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        time.sleep(2)
        assert alive(horse)  # RQ's horse leads its own process group: the group kill missed it
        assert job_state(JobRecord.objects.get(pk=record.pk))["status"] == "failed"
        deadline = time.monotonic() + 5
        while alive(horse) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(horse), "the job reads failed while its horse still runs"
        record.refresh_from_db()
        assert record.status == "failed" and "killed" in record.error
        time.sleep(1)
        record.refresh_from_db()
        assert record.status == "failed"  # never turned done by a survivor
    finally:
        if horse and alive(horse):
            os.killpg(horse, signal.SIGKILL)

"""Redis (the job queue and the review leases) stopped and restarted with real processes: a
private redis-server (append-only file, so a restart keeps its data, as a production Redis
would), a real `manage.py rqworker train` and the real middleware stack.

While Redis is down: the `train` worker stays alive and its cycle trains on; requests that need
Redis answer 503 JSON "the job queue is unavailable, try again"; a scene upload stores nothing;
a retrain refused by Redis fails its version at once (no job left queued, no later 409);
annotations (PostgreSQL only) are still accepted. After the restart the cycle finishes and is
promoted, the worker takes the next cycle, and review leases work again."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import django_rq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from helpers_data import scene_png, storage_files
from loop_helpers import add_dataset, add_scene, annotate, run_workers
from review_helpers import make_scored_scene
from worker_helpers import start_worker

from labeling.jobs.enqueue import enqueue, reconcile
from labeling.loop.cycle import start_cycle
from labeling.models import Annotation, JobRecord, ModelVersion, Project, Scene
from labeling.review import cache

QUEUE_DOWN = "the job queue is unavailable, try again"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    def __init__(self, tmp_path):
        self.port, self.dir = free_port(), tmp_path / "redis"
        self.dir.mkdir()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.dir), "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("private redis-server did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGKILL)  # a crash, not a polite shutdown
        self.proc.wait()


@pytest.fixture
def private_redis(tmp_path, settings, monkeypatch, storage_dir):
    server = PrivateRedis(tmp_path)
    server.start()
    settings.REDIS_URL = server.url
    settings.VAR_DIR = tmp_path / "var"
    for config in django_rq.settings.QUEUES.values():
        monkeypatch.setitem(config, "URL", server.url)
    django_rq.get_connection("default").flushdb()
    yield server
    if server.proc.poll() is None:
        server.proc.terminate()
        server.proc.wait()


def wait_until(predicate, timeout, proc=None, log_path=None, what=""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None:
            assert proc.poll() is None, log_path.read_text()[-3000:]
        time.sleep(0.2)
    tail = log_path.read_text()[-3000:] if log_path else ""
    pytest.fail(f"timed out waiting for {what}\n{tail}")


def status_of(record) -> str:
    return JobRecord.objects.get(pk=record.pk).status


def assert_503(response):
    assert response.status_code == 503, (response.status_code, response.content[:300])
    assert response.json() == {"error": QUEUE_DOWN}


@pytest.mark.django_db(transaction=True)
def test_redis_outage_during_a_cycle_and_review(private_redis, project, alice, alice_client,
                                                storage_dir, tmp_path):  # fmt: skip
    # The loop's project: no scored scene, so a cycle promotes right after training.
    add_dataset(project)
    scene, _ = add_scene(project)
    enqueue("build_canvases", "workers.loop_jobs.build_canvases", project=project,
            project_id=project.pk, canvas_size=128, canvases_per_class=1)  # fmt: skip
    run_workers("default")
    Scene.objects.filter(pk=scene.pk).update(pixels_key="")
    annotate(project, scene, alice)
    # A second project with a scored scene, for the review queue's Redis leases.
    reviewed = Project.objects.create(name="reviewed")
    reviewed.members.add(alice)
    cache._cache.clear()
    rscene, _ = make_scored_scene(reviewed, 128, 160, seed=2)
    queue_url = f"/api/projects/{reviewed.pk}/queue"
    assert alice_client.get(queue_url).status_code == 200

    log = tmp_path / "worker.log"
    worker = start_worker(log, "train", worker_class="fast_heartbeat_worker.FastHeartbeatWorker")
    try:
        # 1. Redis crashes while the cycle trains.
        cycle = start_cycle(project, alice, profile="tiny", config={"steps": 1500})
        wait_until(lambda: JobRecord.objects.get(pk=cycle.pk).message.startswith("training:"),
                   240, worker, log, "training")  # fmt: skip
        private_redis.stop()
        outage_start = time.monotonic()
        # Meanwhile: the review queue and a scene upload answer 503 JSON and store nothing;
        # a retrain is refused while the cycle is in flight; annotations are still taken.
        assert_503(alice_client.get(queue_url))
        assert_503(alice_client.get(queue_url, {"scene": rscene.pk}))
        scenes, files = Scene.objects.count(), storage_files(storage_dir)
        upload = SimpleUploadedFile("new.png", scene_png(96, 64, seed=9), "image/png")
        assert_503(alice_client.post(f"/api/projects/{reviewed.pk}/scenes", {"image": upload}))
        assert Scene.objects.count() == scenes and storage_files(storage_dir) == files
        r = alice_client.post(f"/api/projects/{project.pk}/retrain", "{}",
                              content_type="application/json")  # fmt: skip
        assert r.status_code == 409, r.content
        r = alice_client.post(
            f"/api/scenes/{rscene.pk}/annotations",
            '{"kind": "false_negative", "label": "car", "x": 0, "y": 0, "w": 32, "h": 32}',
            content_type="application/json",
        )
        assert r.status_code == 201, r.content
        # The outage lasts until the worker has skipped two heartbeats (2 s apart) of the job,
        # which trains on meanwhile; then Redis comes back.
        wait_until(lambda: log.read_text().count("heartbeat skipped, Redis unavailable") >= 2,
                   60, worker, log, "two skipped heartbeats")  # fmt: skip
        assert status_of(cycle) == "running"
        assert time.monotonic() - outage_start >= 2
        private_redis.start()

        # 2. The worker is still there, the cycle finishes and is promoted.
        wait_until(lambda: status_of(cycle) in ("done", "failed"), 240, worker, log, "the cycle")
        cycle.refresh_from_db()
        assert cycle.status == "done", cycle.error
        version = ModelVersion.objects.get(pk=cycle.params["version_id"])
        assert version.status == "ready" and version.is_current
        assert worker.poll() is None, log.read_text()[-3000:]

        # 3. Redis down again with no cycle running: a retrain answers 503, its version is
        # failed at once and its job is not left queued.
        private_redis.stop()
        time.sleep(1)
        r = alice_client.post(f"/api/projects/{project.pk}/retrain", '{"profile": "tiny"}',
                              content_type="application/json")  # fmt: skip
        assert_503(r)
        refused = ModelVersion.objects.filter(project=project).order_by("-number").first()
        assert refused.status == "failed" and "unavailable" in refused.error
        assert not JobRecord.objects.filter(project=project, status="queued").exists()
        time.sleep(5)  # the idle worker waits in its dequeue loop
        assert worker.poll() is None, log.read_text()[-3000:]
        private_redis.start()

        # 4. Redis back: the next retrain is accepted (no 409 from the refused one) and the
        # same worker runs it to the end; the review queue leases windows again.
        r = alice_client.post(f"/api/projects/{project.pk}/retrain", '{"profile": "tiny"}',
                              content_type="application/json")  # fmt: skip
        assert r.status_code == 202, r.content
        nxt = JobRecord.objects.get(pk=r.json()["job"])
        wait_until(lambda: status_of(nxt) in ("done", "failed"), 240, worker, log, "2nd cycle")
        nxt.refresh_from_db()
        assert nxt.status == "done", nxt.error
        assert ModelVersion.objects.get(pk=nxt.params["version_id"]).is_current
        item = alice_client.get(queue_url)
        assert item.status_code == 200 and not item.json()["done"]
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)

    assert "found an unhandled exception" not in log.read_text()
    for record in JobRecord.objects.all():
        assert reconcile(record).status not in ("queued", "running"), (record.kind, record.pk)
    assert Annotation.objects.filter(scene=rscene).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_job_that_never_reached_redis_is_failed_not_left_queued(
    redis_conn, project, alice, storage_dir
):
    """A record whose push to Redis never happened (the process died between the commit and
    the push) is failed once it is older than the push could take, and the project's next
    retrain is accepted instead of answering 409 forever."""
    from datetime import timedelta

    from django.utils import timezone

    from labeling.jobs.enqueue import UNPUSHED_GRACE_S
    from labeling.loop.cycle import CycleAlreadyRunning, running_cycle

    add_dataset(project)  # something to train the first model on
    version = ModelVersion.objects.create(project=project, number=1, status="pending")
    stuck = JobRecord.objects.create(
        project=project, kind="retrain_cycle", queue="train", status="queued",
        params={"version_id": version.pk},
    )  # fmt: skip
    assert reconcile(stuck).status == "queued"  # young: its push may still be under way
    with pytest.raises(CycleAlreadyRunning):
        start_cycle(project, alice, profile="tiny")
    old = timezone.now() - timedelta(seconds=UNPUSHED_GRACE_S + 1)
    JobRecord.objects.filter(pk=stuck.pk).update(created_at=old)
    assert running_cycle(project) is None
    stuck.refresh_from_db()
    assert stuck.status == "failed" and "never reached the job queue" in stuck.error
    assert ModelVersion.objects.get(pk=version.pk).status == "failed"
    record = start_cycle(project, alice, profile="tiny")
    assert JobRecord.objects.get(pk=record.pk).rq_job_id  # pushed this time

"""`manage.py demo --profile tiny --no-serve` end to end on a small collage, run twice: the first
run does every step through real RQ worker processes (started by the command, stopped at the
end), Spark local and PostgreSQL; the second run reuses every step and creates nothing."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from labeling.management.commands.demo import DEMO_PROJECT, live_workers
from labeling.models import Dataset, JobRecord, ModelVersion, Project, Scene, ScoringRun

ARGS = ["--profile", "tiny", "--no-serve", "--collage-cols", "12", "--canvases-per-class", "1",
        "--canvas-size", "256", "--step-timeout", "240"]  # fmt: skip


@pytest.fixture
def demo_env(settings, storage_dir, tmp_path, monkeypatch, shared_data):
    settings.SPARK_MASTER = "local[2]"
    settings.VAR_DIR = tmp_path / "var"
    monkeypatch.setenv("DEMO_PASSWORD", "demo-pass-123")
    return settings


def run_demo() -> str:
    out = io.StringIO()
    call_command("demo", *ARGS, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_demo_builds_everything_then_reuses_it(redis_conn, demo_env, client):
    first = run_demo()
    project = Project.objects.get(name=DEMO_PROJECT)
    user = project.members.get(username="demo")
    assert user.check_password("demo-pass-123")
    assert "login: demo / demo-pass-123" in first
    for queue in ("default", "train", "score"):
        assert f"queue {queue}: started worker pid" in first
    assert "stopped: worker-default, worker-train, worker-score" in first
    assert live_workers("train") == []  # the workers it started are gone

    dataset = Dataset.objects.get(project=project)
    assert dataset.status == "ready" and dataset.name == "CIFAR-10 train"
    v1 = project.current_model()
    assert v1.number == 1 and v1.status == "ready" and v1.train_config["profile"] == "tiny"
    scene = Scene.objects.get(project=project)
    assert scene.pixels_key and scene.ground_truth_key and scene.dzi_key
    assert scene.width == 12 * 32
    run = ScoringRun.objects.get(scene=scene, model_version=v1)
    assert run.status == "done" and run.n_partitions >= 1
    assert {"window", "object", "detections"} <= set(run.metrics)
    assert "windows scored; object F1" in first
    assert all(j.status == "done" for j in JobRecord.objects.filter(project=project))

    counts = (JobRecord.objects.count(), ModelVersion.objects.count(), Scene.objects.count(),
              ScoringRun.objects.count(), Dataset.objects.count())  # fmt: skip
    second = run_demo()
    for line in ("reusing dataset 'CIFAR-10 train'", "reusing", "reusing model v1",
                 "reusing scene 'Mona Lisa collage'", "reusing the scoring of v1",
                 "deep-zoom tiles ready"):  # fmt: skip
        assert line in second, second
    assert (JobRecord.objects.count(), ModelVersion.objects.count(), Scene.objects.count(),
            ScoringRun.objects.count(), Dataset.objects.count()) == counts  # fmt: skip

    # The printed login works.
    assert client.login(username="demo", password="demo-pass-123")
    assert client.get(f"/api/projects/{project.pk}/jobs").status_code == 200

"""`manage.py demo --profile tiny --no-serve` end to end on a small collage, run twice: the first
run does every step through real RQ worker processes (started by the command, stopped at the
end), Spark local and PostgreSQL; the second run reuses every step and creates nothing."""

from __future__ import annotations

import io
import json
import re

import pytest
from django.core.management import call_command

from labeling.jobs.local_services import live_workers
from labeling.management.commands.demo import DEMO_PROJECT
from labeling.models import Annotation, Dataset, JobRecord, ModelVersion, Project, Scene, ScoringRun
from labeling.projects.storage_keys import get_storage
from labeling.web.formatting import share3
from mlcore.eval.oracle import Oracle

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
    assert {"window", "object", "coco", "thresholds", "detections"} <= set(run.metrics)
    assert "windows scored; thresholds car " in first and "COCO AP@0.5 " in first
    assert re.search(r"object P [0-9.]+ R [0-9.]+ F1 [0-9.]+", first), first
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

    # The simulated reviewer on the demo: oracle answers through labeling.review, one real
    # retrain cycle through the queues (workers started for it), metrics per cycle.
    out_json = demo_env.VAR_DIR / "sim.json"
    out = io.StringIO()
    call_command("simulate_review", DEMO_PROJECT, "--cycles", "1", "--per-cycle", "30",
                 "--strategy", "uncertainty", "--start-workers", "--step-timeout", "240",
                 "--json", str(out_json), stdout=out, stderr=io.StringIO())  # fmt: skip
    result = json.loads(out_json.read_text())
    assert [c["labels_used"] for c in result["cycles"]] == [0, 30]
    assert "[uncertainty] cycle 1 v2: labels   30" in out.getvalue()
    for row in result["cycles"]:
        assert 0.0 <= row["window"]["f1"] <= 1.0 and 0.0 <= row["object"]["f1"] <= 1.0
    # Corrections stick: v2 is judged on the 30 answers it learnt from.
    stick = result["cycles"][1]["corrections_stick"]
    assert stick["answered"] == 30 and 0 <= stick["kept"] <= 30
    assert f"stick {share3(stick['share'])}" in out.getvalue()
    v2 = project.current_model()
    assert v2.number == 2 and v2.parent.number == 1
    answers = list(Annotation.objects.filter(project=project))
    assert len(answers) == 30
    assert {(a.kind, a.source, a.consumed_by_id) for a in answers} == {
        ("review", "simulated", v2.pk)
    }
    # Every answer is the ground truth of its window (the metrics' centre rule).
    truth = json.loads(get_storage().read(scene.ground_truth_key))
    oracle = Oracle(truth, project.negative_class)
    assert all(a.label == oracle.label(a.x, a.y, a.w, a.h) for a in answers)
    assert len({(a.x, a.y) for a in answers}) == 30  # the queue never repeats a window

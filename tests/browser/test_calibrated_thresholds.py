"""Calibrated thresholds travel with the model version: read from the ONNX file's metadata when
the file is registered, used by the scoring run, shown by the viewer (its slider starts there),
the detections feed, the metrics page and the dashboard; the published 0.9 stays a choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from browser_helpers import add_dzi
from django.urls import reverse
from review_helpers import colour_onnx_model, config_of, make_scored_scene

from labeling.models import ScoringRun
from labeling.scoring.results import load_grid, store_scoring_result
from labeling.scoring.thresholds import model_file_thresholds, version_thresholds

pytestmark = pytest.mark.django_db

CALIBRATED = {"car": 0.62, "boat": 0.7}


def with_metadata(path: Path, **props) -> Path:
    import onnx

    model = onnx.load(str(path))
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(model, str(path))
    return path


def test_thresholds_come_from_the_model_file(tmp_path, project):
    plain = colour_onnx_model(tmp_path / "plain.onnx", project.class_names)
    assert model_file_thresholds(plain) == {}
    calibrated = with_metadata(
        colour_onnx_model(tmp_path / "calibrated.onnx", project.class_names),
        thresholds=CALIBRATED,
        calibration={"method": "max object F1", "scene": "held-out"},
    )
    assert model_file_thresholds(calibrated) == CALIBRATED
    assert model_file_thresholds(tmp_path / "model-symbol.json") == {}  # not ONNX: none


def test_version_thresholds_fall_back_per_class(project):
    from labeling.models import ModelVersion

    version = ModelVersion(project=project, number=1, thresholds={"car": 0.6})
    classes = project.class_names
    assert version_thresholds(project, version, classes) == (
        {"car": 0.6, "boat": 0.9},
        "calibrated",
    )
    project.class_thresholds = {"boat": 0.8}
    assert version_thresholds(project, version, classes)[0] == {"car": 0.6, "boat": 0.8}
    project.use_calibrated_thresholds = False
    assert version_thresholds(project, version, classes) == (
        {"car": 0.9, "boat": 0.8},
        "project",
    )
    assert version_thresholds(project, ModelVersion(project=project, number=2), classes)[1] == (
        "project"
    )


@pytest.fixture
def calibrated_run(project, storage_dir):
    scene, run = make_scored_scene(project, 256, 256, seed=7)
    version = run.model_version
    version.thresholds = CALIBRATED
    version.save(update_fields=["thresholds"])
    again = ScoringRun.objects.create(scene=scene, model_version=version, status="running")
    store_scoring_result(again, load_grid(run))
    again.refresh_from_db()
    run.delete()  # the scene's latest run is the calibrated one
    return scene, again


def test_viewer_slider_starts_at_the_calibrated_threshold(alice_client, project, calibrated_run):
    scene, run = calibrated_run
    add_dzi(scene)
    response = alice_client.get(reverse("scene-viewer", args=[scene.pk]))
    config = config_of(response, "viewer-config")
    assert config["class_thresholds"] == CALIBRATED
    assert config["threshold"] == 0.62 and config["threshold_source"] == "calibrated"
    assert config["published_threshold"] == 0.9 and config["threshold_from_url"] is False
    html = response.content.decode()
    assert 'value="0.62"' in html and 'id="threshold-published"' in html
    # The published 0.9 stays a choice: ?threshold=0.9 starts the slider there.
    config = config_of(
        alice_client.get(reverse("scene-viewer", args=[scene.pk]) + "?threshold=0.9"),
        "viewer-config",
    )
    assert config["threshold"] == 0.9 and config["threshold_from_url"] is True
    bad = alice_client.get(reverse("scene-viewer", args=[scene.pk]) + "?threshold=lots")
    assert config_of(bad, "viewer-config")["threshold"] == 0.62


def test_feed_and_metrics_pages_report_the_runs_thresholds(alice_client, project, calibrated_run):
    scene, run = calibrated_run
    feed = alice_client.get(reverse("api-detections", args=[scene.pk])).json()
    assert feed["class_thresholds"] == CALIBRATED and feed["threshold"] == 0.62
    assert feed["threshold_source"] == "calibrated"
    assert min(s for s, lab in zip(feed["score"], feed["label"], strict=True)
               if feed["classes"][lab] == "car") >= 0.62  # fmt: skip

    metrics = alice_client.get(reverse("project-metrics", args=[project.pk])).content.decode()
    coco = run.metrics["coco"]
    assert f'<td class="ap">{coco["ap50"]:.3f}</td>' in metrics
    assert f'<td class="ap">{coco["ap"]:.3f}</td>' in metrics
    assert "car 0.620, boat 0.700" in metrics and "calibrated" in metrics
    f1 = run.metrics["object"]["overall"]["f1"]
    assert f'<td class="f1 headline">{f1:.3f}</td>' in metrics

    dashboard = alice_client.get(reverse("project-dashboard", args=[project.pk]))
    html = dashboard.content.decode()
    assert "car 0.620, boat 0.700" in html
    assert f"{coco['ap50']:.3f} / {coco['ap']:.3f}" in html


def project_post(name, **extra):
    return {"name": name, "class_name": ["car", ""], "class_color": ["#e6194b", "#4363d8"],
            "class_sources": ["automobile", ""], "negative_class": "negative",
            "window_size": 32, "train_step": 8, "score_step": 16, "threshold": 0.9,
            "engine": "torch", **extra}  # fmt: skip


def test_the_project_chooses_calibrated_or_fixed_thresholds(alice_client):
    from labeling.models import Project

    assert alice_client.get("/projects/new/").content.decode().count('name="threshold_mode"') == 1
    alice_client.post("/projects/new/", project_post("fixed one", threshold_mode="fixed"))
    assert Project.objects.get(name="fixed one").use_calibrated_thresholds is False
    alice_client.post("/projects/new/", project_post("calibrated one"))
    assert Project.objects.get(name="calibrated one").use_calibrated_thresholds is True
    r = alice_client.post("/api/projects", {"name": "by api"}, content_type="application/json")
    assert r.status_code == 201
    assert Project.objects.get(name="by api").use_calibrated_thresholds is True


def test_api_reports_calibrated_thresholds(alice_client, project, calibrated_run):
    scene, run = calibrated_run
    body = alice_client.get(reverse("api-project", args=[project.pk])).json()
    assert body["model_versions"][0]["thresholds"] == CALIBRATED
    runs = alice_client.get(reverse("api-runs", args=[project.pk])).json()["runs"]
    assert runs[0]["metrics"]["thresholds"] == CALIBRATED
    assert runs[0]["metrics"]["threshold_source"] == "calibrated"
    assert set(runs[0]["metrics"]["coco"]) >= {"ap50", "ap", "per_class"}


def test_demo_summary_prints_thresholds_object_figures_and_ap(calibrated_run):
    from labeling.management.commands.demo import Command

    _, run = calibrated_run
    line = Command.metrics_line(run)
    obj, coco = run.metrics["object"]["overall"], run.metrics["coco"]
    # Three decimals like every figure; counts as words, never a Python dict.
    assert "thresholds car 0.620, boat 0.700 (calibrated)" in line
    assert "{" not in line and "detections car " in line
    assert f"object P {obj['precision']:.3f} R {obj['recall']:.3f} F1 {obj['f1']:.3f}" in line
    assert f"COCO AP@0.5 {coco['ap50']:.3f} AP@[.5:.95] {coco['ap']:.3f}" in line
    assert "(diagnostic)" in line


def test_hit_class_is_the_detection_rule():
    from labeling.scoring.thresholds import hit_class

    classes = ["car", "boat", "negative"]
    thresholds = {"car": 0.4, "boat": 0.5}
    assert hit_class(classes, [0.45, 0.0, 0.55], thresholds, "negative") == 0  # car, not argmax
    assert hit_class(classes, [0.35, 0.1, 0.55], thresholds, "negative") == 2
    assert hit_class(classes, [0.42, 0.48, 0.1], thresholds, "negative") == 0  # boat < 0.5
    assert hit_class(classes, [0.45, 0.52, 0.03], thresholds, "negative") == 1  # both: likelier
    assert hit_class(["a", "b"], [0.3, 0.7], {}, None) == 1


def test_queue_guess_follows_the_runs_thresholds(project, alice, calibrated_run, redis_conn):
    from labeling.review.queue import next_queue_window
    from labeling.scoring.thresholds import hit_class

    scene, run = calibrated_run
    for _ in range(8):
        item = next_queue_window(project, alice, "uncertainty", scene=scene, redis=redis_conn)
        probs = [item["probs"][c] for c in project.class_names]
        expected = project.class_names[hit_class(project.class_names, probs, CALIBRATED,
                                                 "negative")]  # fmt: skip
        assert item["guess"] == expected and item["score"] == item["probs"][expected]

"""GET /api/projects/<p>/runs/<r>/coco-results: a run's detections as a COCO results file whose
image and category ids match the annotations export, so pycocotools and faster-coco-eval load
both together (COCO.loadRes); login and per-project access like every API route."""

from __future__ import annotations

import pytest
from django.urls import reverse

from labeling.models import Detection
from labeling.review.annotations import record_annotation
from labeling.scoring.coco_results import category_ids, export_run_results
from labeling.scoring.results import load_grid, load_scene_ground_truth, ranked_detections
from mlcore.eval.coco_eval import coco_ap
from tests.review_helpers import make_scored_scene

pytestmark = pytest.mark.django_db


@pytest.fixture
def scored(project, storage_dir, alice):
    scene, run = make_scored_scene(project, 192, 192, seed=5)
    record_annotation(project, scene, alice, kind="false_negative", label="boat", x=0, y=0,
                      w=32, h=32, client_id="c-1")  # fmt: skip
    record_annotation(project, scene, alice, kind="false_positive", label="negative", x=32,
                      y=32, w=32, h=32, client_id="c-2")  # fmt: skip
    return scene, run


def url(project, run, query=""):
    return reverse("api-run-coco-results", args=[project.pk, run.pk]) + query


@pytest.mark.parametrize("library", ["pycocotools", "faster-coco-eval"])
def test_export_loads_with_the_annotations_export(alice_client, project, scored, library):
    scene, run = scored
    r = alice_client.get(url(project, run))
    assert r.status_code == 200 and r["Content-Type"] == "application/json"
    assert "attachment" in r["Content-Disposition"]
    results = r.json()
    annotations = alice_client.get(reverse("api-export", args=[project.pk]) + "?format=coco")
    dataset = annotations.json()
    assert {row["image_id"] for row in results} == {scene.pk}
    assert scene.pk in {image["id"] for image in dataset["images"]}
    names = {c["id"]: c["name"] for c in dataset["categories"]}
    assert {names[row["category_id"]] for row in results} <= {"car", "boat"}
    assert category_ids(project) == {v: k for k, v in names.items()}

    if library == "pycocotools":
        from pycocotools.coco import COCO
    else:
        from faster_coco_eval import COCO
    gt = COCO()
    gt.dataset = dataset
    gt.createIndex()
    dt = gt.loadRes(results)
    assert len(dt.getAnnIds(imgIds=[scene.pk])) == len(results) > 0
    for row, ann in zip(results, dt.loadAnns(dt.getAnnIds())):
        assert names[ann["category_id"]] == names[row["category_id"]]


def test_ranked_export_is_what_the_runs_ap_was_computed_on(alice_client, project, scored):
    scene, run = scored
    results = alice_client.get(url(project, run)).json()
    assert len(results) == len(ranked_detections(project, load_grid(run)).x)
    ranks = [r["rank_score"] for r in results]
    assert ranks == sorted(ranks, reverse=True)
    label = {v: k for k, v in category_ids(project).items()}
    detections = [
        {"x": x, "y": y, "w": w, "h": h, "label": label[r["category_id"]], "score": r["rank_score"]}
        for r in results
        for x, y, w, h in [r["bbox"]]
    ]
    again = coco_ap(detections, load_scene_ground_truth(scene), project.class_names)
    assert again["ap"] == pytest.approx(run.metrics["coco"]["ap"], abs=1e-3)
    assert again["ap50"] == pytest.approx(run.metrics["coco"]["ap50"], abs=1e-3)


def test_merged_export_and_min_score(alice_client, project, scored):
    _, run = scored
    merged = alice_client.get(url(project, run, "?boxes=merged")).json()
    assert len(merged) == Detection.objects.filter(run=run, kind="merged").count() > 0
    assert min(r["score"] for r in merged) >= 0.9
    high = alice_client.get(url(project, run, "?min_score=0.95")).json()
    assert high and all(r["score"] >= 0.95 for r in high)
    assert high == [r for r in export_run_results(run) if r["score"] >= 0.95]


@pytest.mark.parametrize(
    "query, message",
    [("?boxes=all", "boxes must be one of"), ("?min_score=x", "min_score must be a number"),
     ("?min_score=2", "min_score must be in")],
)  # fmt: skip
def test_bad_queries(alice_client, project, scored, query, message):
    _, run = scored
    r = alice_client.get(url(project, run, query))
    assert r.status_code == 400 and message in r.json()["error"]


def test_login_and_project_access(client, bob, project, scored):
    _, run = scored
    r = client.get(url(project, run))
    assert r.status_code == 401 and "error" in r.json()
    client.force_login(bob)
    r = client.get(url(project, run))
    assert r.status_code == 404 and "error" in r.json()
    r = client.get(reverse("api-run-coco-results", args=[project.pk, run.pk + 999]))
    assert r.status_code == 404


def test_dashboard_links_the_export(alice_client, project, scored):
    _, run = scored
    html = alice_client.get(reverse("project-dashboard", args=[project.pk])).content.decode()
    assert url(project, run) in html

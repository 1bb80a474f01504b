"""The scene's labels (labeling.review.scene_labels): on a hand-made scene, the reviewed boxes
(confirmed, corrected, added) plus the model's boxes no reviewer rejected, each with its source,
probability and reviewer; exported as COCO ground truth (pycocotools loads it, no negative
category, a real file name), YOLO, CSV and GeoJSON from the API and the dashboard; and one
probability per box in the viewer's feed, the API and every export. Real scoring through ONNX
Runtime, PostgreSQL, the real API."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile

import pytest
from django.urls import reverse
from review_helpers import make_scored_scene

from labeling.models import Detection
from labeling.review import cache
from labeling.review.annotations import record_annotation
from labeling.web.formatting import fixed3

pytestmark = pytest.mark.django_db


@pytest.fixture
def reviewed(project, storage_dir, alice, redis_conn):
    """A scored scene with five reviews: one detection confirmed, one rejected in the viewer,
    one corrected to the other class, one rejected by a queue answer on a window holding its
    centre, and one missed object added."""
    cache._cache.clear()
    scene, run = make_scored_scene(project, 256, 256, seed=5)
    dets = list(Detection.objects.filter(run=run, kind="merged").order_by("id"))
    assert len(dets) >= 6
    confirmed, rejected, corrected, queued = dets[:4]

    def review(kind, label, box, detection=None):
        x, y, w, h = box
        return record_annotation(project, scene, alice, kind=kind, label=label, x=x, y=y, w=w,
                                 h=h, detection=detection)[0]  # fmt: skip

    def box(d):
        return d.x, d.y, d.w, d.h

    a_confirm = review("confirm", confirmed.label, box(confirmed), confirmed.pk)
    review("false_positive", rejected.label, box(rejected), rejected.pk)
    other = "boat" if corrected.label == "car" else "car"
    a_correct = review("wrong_class", other, box(corrected), corrected.pk)
    # A queue window (not the detection's box) that holds the detection's centre.
    cx, cy = queued.x + queued.w // 2, queued.y + queued.h // 2
    window = (max(0, cx - 20), max(0, cy - 20), 32, 32)
    review("review", project.negative_class, window)
    covered = lambda d: any(  # noqa: E731
        a.x <= d.x + d.w / 2 < a.x + a.w and a.y <= d.y + d.h / 2 < a.y + a.h
        for a in (a_confirm, a_correct)
    )
    free = next(  # an added box away from every detection
        (x, y) for y in range(0, 224, 8) for x in range(0, 224, 8)
        if all(x + 32 <= d.x or d.x + d.w <= x or y + 32 <= d.y or d.y + d.h <= y for d in dets)
    )  # fmt: skip
    a_added = review("false_negative", "boat", (*free, 32, 32))
    expected = {
        f"a{a_confirm.pk}": ("reviewed", confirmed.label, round(confirmed.score, 3)),
        f"a{a_correct.pk}": ("reviewed", other, round(corrected.score, 3)),
        f"a{a_added.pk}": ("reviewed", "boat", None),
    }
    for d in dets[4:]:
        assert not covered(d)
        expected[f"d{d.pk}"] = ("model", d.label, round(d.score, 3))
    return scene, run, expected


def labels_url(project, fmt, scene=None):
    query = f"?format={fmt}" + (f"&scene={scene.pk}" if scene else "")
    return reverse("api-labels", args=[project.pk]) + query


def test_labels_hold_exactly_the_expected_boxes(alice_client, project, reviewed):
    scene, _, expected = reviewed
    body = alice_client.get(labels_url(project, "json")).json()
    [entry] = body["scenes"]
    got = {b["id"]: (b["source"], b["label"], b["probability"]) for b in entry["labels"]}
    assert got == expected
    for b in entry["labels"]:
        assert (b["reviewer"] == "alice") == (b["source"] == "reviewed")
    summary = entry["summary"]
    assert summary["reviewed"] == 3 and summary["labels"] == len(expected)
    one = alice_client.get(reverse("api-scene-labels", args=[scene.pk])).json()
    assert one["scenes"][0]["labels"] == entry["labels"]


def test_coco_labels_load_as_ground_truth(alice_client, project, reviewed):
    from pycocotools.coco import COCO

    scene, run, expected = reviewed
    r = alice_client.get(labels_url(project, "coco"))
    assert r.status_code == 200 and "attachment" in r["Content-Disposition"]
    dataset = r.json()
    names = [c["name"] for c in dataset["categories"]]
    assert project.negative_class not in names and sorted(names) == ["boat", "car"]
    [image] = dataset["images"]
    assert re.fullmatch(r"[A-Za-z0-9._-]+\.(png|jpg|jpeg|tif|tiff)", image["file_name"])
    gt = COCO()
    gt.dataset = dataset
    gt.createIndex()
    anns = gt.loadAnns(gt.getAnnIds(imgIds=[scene.pk]))
    by_name = {c["id"]: c["name"] for c in dataset["categories"]}
    got = {a["attributes"]["id"]: (a["attributes"]["source"], by_name[a["category_id"]],
                                   a["attributes"]["probability"]) for a in anns}  # fmt: skip
    assert got == expected
    # The model's detections evaluate against it (COCOeval runs: a loader's use of it).
    from pycocotools.cocoeval import COCOeval

    results = alice_client.get(
        reverse("api-run-coco-results", args=[project.pk, run.pk]) + "?boxes=merged"
    ).json()
    evaluation = COCOeval(gt, gt.loadRes(results), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()


def test_yolo_csv_and_geojson_hold_the_same_boxes(alice_client, project, reviewed):
    scene, _, expected = reviewed
    labels = alice_client.get(labels_url(project, "json")).json()["scenes"][0]["labels"]

    zipped = zipfile.ZipFile(io.BytesIO(alice_client.get(labels_url(project, "yolo")).content))
    classes = zipped.read("classes.txt").decode().split()
    assert classes == ["car", "boat"]
    [name] = [n for n in zipped.namelist() if n.startswith("labels/")]
    lines = zipped.read(name).decode().splitlines()
    assert len(lines) == len(expected)
    first = labels[0]
    cls, cx, cy, w, h = lines[0].split()
    assert classes[int(cls)] == first["label"]
    assert float(cx) == pytest.approx((first["x"] + first["w"] / 2) / scene.width, abs=1e-6)
    assert float(w) == pytest.approx(first["w"] / scene.width, abs=1e-6)

    rows = list(csv.DictReader(io.StringIO(alice_client.get(labels_url(project, "csv"))
                                           .content.decode())))  # fmt: skip
    assert {r["id"]: (r["source"], r["label"], float(r["probability"]) if r["probability"]
                      else None) for r in rows} == expected  # fmt: skip

    r = alice_client.get(reverse("api-scene-labels", args=[scene.pk]) + "?format=geojson")
    assert r.status_code == 409 and "crs=pixels" in r.json()["error"]  # not georeferenced
    r = alice_client.get(reverse("api-scene-labels", args=[scene.pk])
                         + "?format=geojson&crs=pixels")  # fmt: skip
    geo = json.loads(r.content)
    props = {f["properties"]["id"]: f["properties"] for f in geo["features"]}
    assert {k: (p["source"], p["label"], p["probability"]) for k, p in props.items()} == expected


def probabilities_shown(client, project, scene, run, d) -> dict:
    """Where the merged detection ``d`` (a model label of the scene) shows its probability."""
    key, box = f"d{d.pk}", [d.x, d.y, d.w, d.h]
    shown = {}
    feed = client.get(reverse("api-detections", args=[scene.pk]) + "?kind=merged").json()
    shown["viewer feed"] = feed["score"][feed["id"].index(d.pk)]
    labels = client.get(labels_url(project, "json")).json()["scenes"][0]["labels"]
    shown["labels API"] = next(b["probability"] for b in labels if b["id"] == key)
    coco = client.get(labels_url(project, "coco")).json()
    shown["labels COCO"] = next(a["score"] for a in coco["annotations"] if a["bbox"] == box)
    rows = csv.DictReader(io.StringIO(client.get(labels_url(project, "csv")).content.decode()))
    shown["labels CSV"] = next(float(r["probability"]) for r in rows if r["id"] == key)
    geo = json.loads(client.get(labels_url(project, "geojson") + "&crs=pixels").content)
    shown["labels GeoJSON"] = next(f["properties"]["probability"] for f in geo["features"]
                                   if f["properties"]["id"] == key)  # fmt: skip
    url = reverse("api-scene-geojson", args=[scene.pk]) + "?crs=pixels"
    detections_geo = json.loads(client.get(url).content)
    shown["detections GeoJSON"] = next(
        f["properties"]["score"] for f in detections_geo["features"]
        if f["properties"].get("source") == "detection" and f["properties"]["id"] == d.pk
    )  # fmt: skip
    results = reverse("api-run-coco-results", args=[project.pk, run.pk])
    for boxes in ("merged", "ranked"):
        rows = client.get(f"{results}?boxes={boxes}").json()
        shown[f"COCO results {boxes}"] = next(r["score"] for r in rows if r["bbox"] == box)
    return {k: round(float(v), 3) for k, v in shown.items()}


def test_one_probability_per_box_everywhere(alice_client, project, reviewed):
    scene, run, expected = reviewed
    key = next(k for k, v in expected.items() if v[0] == "model")
    d = Detection.objects.get(pk=int(key[1:]))
    shown = probabilities_shown(alice_client, project, scene, run, d)
    assert shown == dict.fromkeys(shown, expected[key][2])


def test_one_probability_per_box_from_a_model_with_a_box_head(alice_client, project, storage_dir):
    """Its ranking score (probability x centredness) differs from the probability: the COCO
    results name it rank_score, and every "score" and "probability" is the probability."""
    from helpers_boxes import export_box_model

    cache._cache.clear()
    scene, run = make_scored_scene(project, 256, 256, seed=2, model=export_box_model)
    ranked = alice_client.get(reverse("api-run-coco-results", args=[project.pk, run.pk])).json()
    # The ranked list (down to 0.05) may keep a better-centred window of an object than the
    # detections at the threshold do: a box both hold.
    d, row = next(
        (d, r)
        for d in Detection.objects.filter(run=run, kind="merged").order_by("-score")
        for r in ranked
        if r["bbox"] == [d.x, d.y, d.w, d.h]
    )
    shown = probabilities_shown(alice_client, project, scene, run, d)
    assert shown == dict.fromkeys(shown, round(d.score, 3))
    assert row["rank_score"] < row["score"] - 0.05  # centredness < 1: a different number


def test_dashboard_buttons_and_per_scene_counts(alice_client, project, reviewed):
    scene, _, expected = reviewed
    r = alice_client.get(reverse("project-dashboard", args=[project.pk]))
    html = r.content.decode()
    for fmt in ("coco", "yolo", "csv"):
        assert labels_url(project, fmt) in html.replace("&amp;", "&")
    assert reverse("api-scene-labels", args=[scene.pk]) + "?format=geojson&amp;crs=pixels" in html
    [card] = [s for s in r.context["scenes"] if s["scene"] == scene]
    assert card["labels"]["reviewed"] == 3 and card["labels"]["labels"] == len(expected)
    assert f"3 of {len(expected)} labels reviewed" in html


def test_bad_format_and_geojson_without_a_scene(alice_client, project, reviewed):
    r = alice_client.get(labels_url(project, "xml"))
    assert r.status_code == 400 and "format must be one of" in r.json()["error"]
    r = alice_client.get(reverse("api-labels", args=[project.pk]) + "?scene=abc")
    assert r.status_code == 400
    r = alice_client.get(reverse("api-labels", args=[project.pk]) + "?scene=999999")
    assert r.status_code == 404


def test_dashboard_estimates_the_share_still_wrong(alice_client, project, reviewed):
    """From the calibration precision P and recall R of the version whose boxes the labels hold
    (recorded on it by the export job's calibrate step): n unreviewed model boxes give
    n (1 - P) expected false boxes and n P (1 - R) / R expected missed objects."""
    scene, run, expected = reviewed
    version = run.model_version
    version.metrics = {"calibration": {"precision": {"car": 0.8, "boat": 0.8},
                                       "recall": {"car": 0.5, "boat": 0.5}}}  # fmt: skip
    version.save()
    n = sum(1 for v in expected.values() if v[0] == "model")
    false, missed = n * 0.2, n * 0.8
    share = (false + missed) / (len(expected) + missed)
    r = alice_client.get(reverse("project-dashboard", args=[project.pk]))
    [card] = [s for s in r.context["scenes"] if s["scene"] == scene]
    estimate = card["labels"]["estimate"]
    assert estimate["wrong_share"] == pytest.approx(share, abs=1e-3)
    assert estimate["false_boxes"] == pytest.approx(false, abs=0.05)
    assert f"estimated share still wrong {fixed3(estimate['wrong_share'])}" in r.content.decode()

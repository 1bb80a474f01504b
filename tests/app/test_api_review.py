"""The review area's JSON API against real PostgreSQL, Redis and storage: every endpoint, good
and bad input, other users' projects, logged-out callers, idempotency, concurrent reviewers."""

from __future__ import annotations

import csv
import gzip
import io
import json
import uuid

import pytest
from django.test import Client
from django.urls import reverse
from PIL import Image

from labeling.models import Annotation, Project
from labeling.review import annotations, cache, exports
from labeling.review.scene_labels import image_file_name
from labeling.web.openapi import OPERATIONS, api_routes, build_schema
from tests.review_helpers import make_scored_scene

pytestmark = pytest.mark.django_db


@pytest.fixture
def scored(project, storage_dir, redis_conn):
    cache._cache.clear()
    return make_scored_scene(project, 256, 320, seed=1)


@pytest.fixture
def bob_client(bob):
    c = Client()
    c.force_login(bob)
    return c


@pytest.fixture
def bobs_project(bob):
    p = Project.objects.create(name="bob's project")
    p.members.add(bob)
    return p


def post_json(client, url, body, **extra):
    return client.post(url, json.dumps(body), content_type="application/json", **extra)


def new_annotation(**changes):
    body = {"client_id": str(uuid.uuid4()), "kind": "false_negative", "label": "car",
            "x": 10, "y": 20, "w": 32, "h": 32, "detection": None}  # fmt: skip
    body.update(changes)
    return body


# -- login and access ----------------------------------------------------------------------------


def test_every_api_route_needs_login(client, project, scored):
    scene, _ = scored
    a = Annotation.objects.create(project=project, scene=scene, kind="review", label="car",
                                  x=0, y=0, w=32, h=32)  # fmt: skip
    urls = [
        reverse("api-projects"), reverse("api-project", args=[project.pk]),
        reverse("api-runs", args=[project.pk]), reverse("api-queue", args=[project.pk]),
        reverse("api-export", args=[project.pk]), reverse("api-scene", args=[scene.pk]),
        reverse("api-detections", args=[scene.pk]), reverse("api-annotations", args=[scene.pk]),
        reverse("api-window-image", args=[scene.pk]) + "?x=0&y=0",
        reverse("api-openapi"),
    ]  # fmt: skip
    for url in urls:
        r = client.get(url)
        assert r.status_code == 401, url
        assert "error" in r.json()
    r = post_json(client, reverse("api-annotations", args=[scene.pk]), new_annotation())
    assert r.status_code == 401
    r = post_json(client, reverse("api-annotation-undo", args=[a.pk]), {})
    assert r.status_code == 401
    assert Annotation.objects.count() == 1


def test_other_users_project_is_404_everywhere(bob_client, project, scored):
    scene, run = scored
    a = Annotation.objects.create(project=project, scene=scene, kind="review", label="car",
                                  x=0, y=0, w=32, h=32)  # fmt: skip
    for url in [
        reverse("api-project", args=[project.pk]), reverse("api-runs", args=[project.pk]),
        reverse("api-queue", args=[project.pk]), reverse("api-export", args=[project.pk]),
        reverse("api-scene", args=[scene.pk]), reverse("api-detections", args=[scene.pk]),
        reverse("api-annotations", args=[scene.pk]),
        reverse("api-window-image", args=[scene.pk]) + "?x=0&y=0",
    ]:  # fmt: skip
        r = bob_client.get(url)
        assert r.status_code == 404, url
        assert "error" in r.json()
    r = post_json(bob_client, reverse("api-annotations", args=[scene.pk]), new_annotation())
    assert r.status_code == 404
    r = post_json(bob_client, reverse("api-annotation-undo", args=[a.pk]), {})
    assert r.status_code == 404
    assert Annotation.objects.count() == 1
    assert bob_client.get(reverse("api-projects")).json() == {"projects": []}


# -- projects, scenes, runs ----------------------------------------------------------------------


def test_projects_list_and_create_share_the_url(alice_client, project, bobs_project, scored):
    r = alice_client.get(reverse("api-projects"))
    assert r.status_code == 200
    (p,) = r.json()["projects"]
    assert p["id"] == project.pk and p["scenes"] == 1 and p["current_model"] == 1
    assert p["class_names"] == ["car", "boat", "negative"] and p["colors"]["car"] == "#e6194b"
    r = post_json(alice_client, reverse("api-projects"), {"name": "new one"})
    assert r.status_code == 201, r.content
    assert len(alice_client.get(reverse("api-projects")).json()["projects"]) == 2


def test_project_detail_counts(alice_client, alice, project, scored):
    scene, _ = scored
    annotations.record_annotation(project, scene, alice, kind="review", label="car", x=0, y=0, w=32,
                             h=32)  # fmt: skip
    r = alice_client.get(reverse("api-project", args=[project.pk]))
    assert r.status_code == 200
    body = r.json()
    assert body["counts"] == {"scenes": 1, "model_versions": 1, "annotations": 1,
                              "pending_annotations": 1}  # fmt: skip
    assert body["current_model"] == 1 and body["scenes"][0]["id"] == scene.pk
    assert alice_client.get(reverse("api-project", args=[999999])).status_code == 404


def test_scene_json(alice_client, project, scored):
    scene, run = scored
    body = alice_client.get(reverse("api-scene", args=[scene.pk])).json()
    assert (body["id"], body["width"], body["height"]) == (scene.pk, 320, 256)
    assert body["dzi_url"] is None
    assert body["latest_run"]["id"] == run.pk and body["latest_run"]["status"] == "done"
    assert (
        body["latest_run"]["detections"]["merged"] == run.detections.filter(kind="merged").count()
    )
    assert body["colors"] == {"car": "#e6194b", "boat": "#3cb44b"}
    assert body["threshold"] == 0.9
    scene.dzi_key = f"projects/{project.pk}/scenes/{scene.pk}/dzi/scene.dzi"
    scene.save()
    body = alice_client.get(reverse("api-scene", args=[scene.pk])).json()
    assert body["dzi_url"] == f"/scenes/{scene.pk}/dzi/scene.dzi"


def test_runs(alice_client, project, scored):
    scene, run = scored
    body = alice_client.get(reverse("api-runs", args=[project.pk])).json()
    (r,) = body["runs"]
    assert r["id"] == run.pk and r["status"] == "done" and r["model_version"] == 1
    assert r["metrics"]["against"] == "ground_truth"
    assert r["n_windows"] == run.n_windows > 0
    url = reverse("api-runs", args=[project.pk]) + f"?scene={scene.pk}"
    assert len(alice_client.get(url).json()["runs"]) == 1


# -- detections feed -----------------------------------------------------------------------------


def feed(client, scene, query="", **headers):
    return client.get(reverse("api-detections", args=[scene.pk]) + query, **headers)


def test_detections_feed_columns(alice_client, scored):
    scene, run = scored
    r = feed(alice_client, scene)
    assert r.status_code == 200 and r["Content-Type"] == "application/json"
    body = r.json()
    merged = list(run.detections.filter(kind="merged").order_by("-score", "id"))
    assert body["run"] == run.pk and body["kind"] == "merged" and body["window"] == 32
    assert body["model_version"] == 1
    assert body["classes"] == ["car", "boat", "negative"]
    assert body["colors"] == {"car": "#e6194b", "boat": "#3cb44b"}
    assert body["count"] == len(merged) > 0
    for col in ("id", "x", "y", "w", "h", "label", "score"):
        assert len(body[col]) == body["count"], col
    assert body["id"] == [d.pk for d in merged]
    assert body["x"][0] == merged[0].x and body["classes"][body["label"][0]] == merged[0].label
    assert body["score"][0] == round(merged[0].score, 3)
    assert "probs" not in body


def test_detections_feed_windows_with_probs_and_filters(alice_client, scored):
    scene, run = scored
    body = feed(alice_client, scene, "?kind=window").json()
    windows = run.detections.filter(kind="window")
    assert body["count"] == windows.count() > body_count_merged(alice_client, scene)
    assert len(body["probs"]) == body["count"] and len(body["probs"][0]) == 3
    assert abs(sum(body["probs"][0]) - 1) < 0.01
    boat = feed(alice_client, scene, "?kind=window&label=boat").json()
    assert boat["count"] == windows.filter(label="boat").count() > 0
    assert set(boat["label"]) == {1}
    high = feed(alice_client, scene, "?kind=window&min_score=0.95").json()
    assert high["count"] == windows.filter(score__gte=0.95).count()
    assert min(high["score"]) >= 0.95
    region = feed(alice_client, scene, "?kind=window&region=0,0,100,80").json()
    expected = [d for d in windows if d.x < 100 and d.x + d.w > 0 and d.y < 80 and d.y + d.h > 0]
    assert region["count"] == len(expected) and sorted(region["id"]) == sorted(
        d.pk for d in expected
    )
    assert all(x < 100 for x in region["x"]) and all(y < 80 for y in region["y"])


def body_count_merged(client, scene) -> int:
    return feed(client, scene).json()["count"]


@pytest.mark.parametrize(
    "query, message",
    [
        ("?kind=boxes", "kind must be one of"),
        ("?label=plane", "unknown class"),
        ("?min_score=high", "min_score must be a number"),
        ("?min_score=2", "min_score must be in"),
        ("?region=1,2,3", "region must be x0,y0,x1,y1"),
        ("?region=10,10,5,20", "is empty"),
        ("?run=abc", "run must be"),
    ],
)
def test_detections_feed_bad_queries(alice_client, scored, query, message):
    scene, _ = scored
    r = feed(alice_client, scene, query)
    assert r.status_code == 400
    assert message in r.json()["error"]


def test_detections_feed_gzip_etag_and_run(alice_client, project, scored):
    scene, run = scored
    plain = feed(alice_client, scene, "?kind=window")
    zipped = feed(alice_client, scene, "?kind=window", HTTP_ACCEPT_ENCODING="gzip, deflate")
    assert zipped["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(zipped.content)) == plain.json()
    assert len(zipped.content) < len(plain.content) / 2
    etag = plain["ETag"]
    assert etag and "no-cache" in plain["Cache-Control"]
    again = feed(alice_client, scene, "?kind=window", HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304 and not again.content
    weak = feed(alice_client, scene, "?kind=window", HTTP_IF_NONE_MATCH="W/" + etag)
    assert weak.status_code == 304
    assert feed(alice_client, scene, "?kind=merged", HTTP_IF_NONE_MATCH=etag).status_code == 200
    assert feed(alice_client, scene, f"?run={run.pk}").json()["run"] == run.pk
    assert feed(alice_client, scene, "?run=999999").status_code == 404


def test_detections_feed_without_a_run_is_404(alice_client, project, storage_dir):
    from labeling.models import Scene

    scene = Scene.objects.create(project=project, name="unscored", image_key="k", width=64,
                                 height=64)  # fmt: skip
    r = feed(alice_client, scene)
    assert r.status_code == 404 and "no finished scoring run" in r.json()["error"]


# -- annotations ---------------------------------------------------------------------------------


def test_post_annotation_then_duplicate_is_idempotent(alice_client, scored):
    scene, run = scored
    det = run.detections.filter(kind="merged").first()
    url = reverse("api-annotations", args=[scene.pk])
    body = new_annotation(kind="confirm", label=det.label, x=det.x, y=det.y, w=det.w, h=det.h,
                          detection=det.pk)  # fmt: skip
    r = post_json(alice_client, url, body)
    assert r.status_code == 201, r.content
    created = r.json()
    assert created["detection"] == det.pk and created["user"] == "alice"
    assert created["client_id"] == body["client_id"] and created["kind"] == "confirm"
    again = post_json(alice_client, url, body)
    assert again.status_code == 200 and again.json()["id"] == created["id"]
    assert Annotation.objects.count() == 1
    listed = alice_client.get(url).json()
    assert [a["id"] for a in listed["effective"]] == [created["id"]]
    assert [a["id"] for a in listed["history"]] == [created["id"]]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"x": 300}, "outside scene"),
        ({"y": -5}, "outside scene"),
        ({"x": 310, "w": 32}, "outside scene"),
        ({"label": "plane"}, "unknown class"),
        ({"kind": "delete"}, "unknown kind"),
        ({"w": "wide"}, "integer"),
        ({"detection": 123456789}, "does not exist"),
        ({"detection": [1]}, "detection must be"),
    ],
)
def test_post_annotation_bad_input(alice_client, scored, changes, message):
    scene, _ = scored
    r = post_json(alice_client, reverse("api-annotations", args=[scene.pk]),
                  new_annotation(**changes))  # fmt: skip
    assert r.status_code == 400
    assert message in r.json()["error"]
    assert Annotation.objects.count() == 0


def test_post_annotation_malformed_bodies(alice_client, scored):
    scene, _ = scored
    url = reverse("api-annotations", args=[scene.pk])
    r = alice_client.post(url, "{not json", content_type="application/json")
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = alice_client.post(url, "[1, 2]", content_type="application/json")
    assert r.status_code == 400 and "JSON object" in r.json()["error"]
    r = post_json(alice_client, url, {"kind": "review"})
    assert r.status_code == 400 and "missing field(s) label, x, y, w, h" in r.json()["error"]
    assert Annotation.objects.count() == 0


def test_post_annotation_needs_csrf_token(alice, scored):
    scene, _ = scored
    c = Client(enforce_csrf_checks=True)
    c.force_login(alice)
    url = reverse("api-annotations", args=[scene.pk])
    assert post_json(c, url, new_annotation()).status_code == 403
    c.get(reverse("api-scene", args=[scene.pk]))  # any page; then take the cookie
    from django.middleware.csrf import _get_new_csrf_string

    token = _get_new_csrf_string()
    c.cookies["csrftoken"] = token
    assert post_json(c, url, new_annotation(), HTTP_X_CSRFTOKEN=token).status_code == 201


def test_two_reviewers_on_the_same_window(alice_client, bob_client, project, bob, scored):
    scene, _ = scored
    project.members.add(bob)
    url = reverse("api-annotations", args=[scene.pk])
    place = {"x": 64, "y": 64, "w": 32, "h": 32}
    first = post_json(alice_client, url, new_annotation(kind="review", label="car", **place))
    second = post_json(bob_client, url, new_annotation(kind="review", label="boat", **place))
    assert first.status_code == second.status_code == 201
    body = alice_client.get(url).json()
    assert [a["id"] for a in body["history"]] == [second.json()["id"], first.json()["id"]]
    (effective,) = body["effective"]
    assert effective["id"] == second.json()["id"] and effective["label"] == "boat"
    assert effective["user"] == "bob"


def test_undo(alice_client, scored):
    scene, _ = scored
    url = reverse("api-annotations", args=[scene.pk])
    a = post_json(alice_client, url, new_annotation(kind="false_negative", label="boat")).json()
    undo_url = reverse("api-annotation-undo", args=[a["id"]])
    r = post_json(alice_client, undo_url, {"client_id": "undo-1"})
    assert r.status_code == 201
    u = r.json()
    assert u["kind"] == "undo" and u["undoes"] == a["id"] and (u["x"], u["y"]) == (a["x"], a["y"])
    assert post_json(alice_client, undo_url, {"client_id": "undo-1"}).json()["id"] == u["id"]
    body = alice_client.get(url).json()
    assert body["effective"] == []
    assert {x["id"] for x in body["history"]} == {a["id"], u["id"]}
    # Undo the undo: the false negative is back.
    r = post_json(alice_client, reverse("api-annotation-undo", args=[u["id"]]), {})
    assert r.status_code == 201
    assert [x["id"] for x in alice_client.get(url).json()["effective"]] == [a["id"]]
    r = alice_client.post(undo_url, "nope", content_type="application/json")
    assert r.status_code == 400
    missing = post_json(alice_client, reverse("api-annotation-undo", args=[99999]), {})
    assert missing.status_code == 404
    assert alice_client.get(undo_url).status_code == 405


# -- queue ---------------------------------------------------------------------------------------


def test_queue_hands_out_distinct_windows_and_skips_answered(
    alice_client, bob_client, bob, project, scored
):
    scene, _ = scored
    project.members.add(bob)
    url = reverse("api-queue", args=[project.pk])
    a = alice_client.get(url + "?strategy=margin").json()
    b = bob_client.get(url + "?strategy=margin").json()
    assert a["done"] is False and b["done"] is False
    assert (a["scene"], a["x"], a["y"]) != (b["scene"], b["x"], b["y"])
    assert set(a["probs"]) == {"car", "boat", "negative"} and a["guess"] in a["probs"]
    assert a["lease_seconds"] > 0 and a["strategy"] == "margin"
    # Answer it; then even with the leases gone it is not handed out again.
    r = post_json(alice_client, reverse("api-annotations", args=[a["scene"]]),
                  new_annotation(kind="review", label=a["guess"], x=a["x"], y=a["y"], w=a["w"],
                                 h=a["h"], source="queue"))  # fmt: skip
    assert r.status_code == 201 and r.json()["source"] == "queue"
    from django_rq import get_connection

    get_connection("default").flushdb()
    nxt = alice_client.get(url + "?strategy=margin").json()
    assert (nxt["x"], nxt["y"]) != (a["x"], a["y"])
    assert nxt["remaining"] == a["remaining"] - 1


def test_a_released_window_goes_to_the_next_reviewer(
    alice_client, bob_client, bob, project, bobs_project, scored
):
    scene, _ = scored
    project.members.add(bob)
    url = reverse("api-queue", args=[project.pk]) + f"?strategy=top_score&scene={scene.pk}"
    release = reverse("api-queue-release", args=[project.pk])
    a = alice_client.get(url).json()
    where = {"scene": a["scene"], "x": a["x"], "y": a["y"]}
    assert post_json(bob_client, release, where).json() == {"released": False}  # not bob's
    first_for_bob = bob_client.get(url).json()
    assert (first_for_bob["x"], first_for_bob["y"]) != (a["x"], a["y"])
    assert post_json(alice_client, release, where).json() == {"released": True}
    again = bob_client.get(url).json()
    assert (again["x"], again["y"]) == (a["x"], a["y"])  # the best window, free again
    bad = post_json(alice_client, release, {"scene": scene.pk})
    assert bad.status_code == 400 and "scene" in bad.json()["error"]
    assert alice_client.get(release).status_code == 405
    theirs = reverse("api-queue-release", args=[bobs_project.pk])
    assert post_json(alice_client, theirs, where).status_code == 404


@pytest.mark.parametrize("strategy", ["uncertainty", "margin", "entropy", "random", "top_score"])
def test_queue_strategies(alice_client, project, scored, strategy):
    scene, _ = scored
    url = reverse("api-queue", args=[project.pk]) + f"?strategy={strategy}&scene={scene.pk}"
    r = alice_client.get(url)
    assert r.status_code == 200 and r.json()["scene"] == scene.pk


def test_queue_bad_input_and_done(alice_client, project, bobs_project, storage_dir, redis_conn):
    url = reverse("api-queue", args=[project.pk])
    from labeling.review.queue import DEFAULT_STRATEGY

    assert alice_client.get(url).json() == {"done": True, "strategy": DEFAULT_STRATEGY,
                                            "remaining": 0}  # fmt: skip
    r = alice_client.get(url + "?strategy=best")
    assert r.status_code == 400 and "unknown strategy" in r.json()["error"]
    cache._cache.clear()
    other_scene, _ = make_scored_scene(bobs_project, 64, 64)
    assert alice_client.get(url + f"?scene={other_scene.pk}").status_code == 404


# -- exports -------------------------------------------------------------------------------------


def _annotate_some(client, scene, run):
    url = reverse("api-annotations", args=[scene.pk])
    det = run.detections.filter(kind="merged").first()
    ids = []
    for body in (
        new_annotation(kind="confirm", label=det.label, x=det.x, y=det.y, w=det.w, h=det.h,
                       detection=det.pk),
        new_annotation(kind="false_positive", label="negative", x=0, y=0),
        new_annotation(kind="false_negative", label="boat", x=100, y=100),
        new_annotation(kind="false_negative", label="car", x=100, y=100),
    ):  # fmt: skip
        ids.append(post_json(client, url, body).json()["id"])
    return ids


def test_export_coco(alice_client, project, scored):
    scene, run = scored
    ids = _annotate_some(alice_client, scene, run)
    r = alice_client.get(reverse("api-export", args=[project.pk]) + "?format=coco")
    assert r.status_code == 200 and "attachment" in r["Content-Disposition"]
    coco = json.loads(r.content)
    assert set(coco) >= {"info", "images", "categories", "annotations"}
    assert coco["images"] == [{"id": scene.pk, "file_name": image_file_name(scene), "width": 320,
                               "height": 256, "scene_name": scene.name}]  # fmt: skip
    assert coco["images"][0]["file_name"].endswith(".png")  # a real file name, not "scene 1 (..)"
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    assert sorted(cats.values()) == ["boat", "car", "negative"]
    anns = {a["id"]: a for a in coco["annotations"]}
    assert set(anns) == {ids[0], ids[1], ids[3]}, "only effective labels (newest per place)"
    for a in anns.values():
        assert a["image_id"] == scene.pk and a["category_id"] in cats and a["iscrowd"] == 0
        x, y, w, h = a["bbox"]
        assert a["area"] == w * h and 0 <= x and x + w <= 320 and 0 <= y and y + h <= 256
    assert cats[anns[ids[1]]["category_id"]] == "negative"
    assert cats[anns[ids[3]]["category_id"]] == "car"
    full = json.loads(
        alice_client.get(
            reverse("api-export", args=[project.pk]) + "?format=coco&history=1"
        ).content
    )
    assert len(full["annotations"]) == 4


def test_export_csv(alice_client, project, scored):
    scene, run = scored
    ids = _annotate_some(alice_client, scene, run)
    r = alice_client.get(reverse("api-export", args=[project.pk]) + "?format=csv")
    assert r.status_code == 200 and r["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.content.decode())))
    assert list(rows[0].keys()) == exports.CSV_COLUMNS
    assert [int(row["id"]) for row in rows] == sorted([ids[0], ids[1], ids[3]])
    assert all(row["effective"] == "1" and row["user"] == "alice" for row in rows)
    fp = next(row for row in rows if row["kind"] == "false_positive")
    assert fp["training_label"] == "negative" and fp["scene_name"] == scene.name
    history = alice_client.get(reverse("api-export", args=[project.pk]) + "?format=csv&history=1")
    rows = list(csv.DictReader(io.StringIO(history.content.decode())))
    assert len(rows) == 4 and sorted(row["effective"] for row in rows) == ["0", "1", "1", "1"]
    bad = alice_client.get(reverse("api-export", args=[project.pk]) + "?format=xml")
    assert bad.status_code == 400 and "coco or csv" in bad.json()["error"]


# -- window crops --------------------------------------------------------------------------------


def test_window_png(alice_client, project, scored):
    scene, _ = scored
    url = reverse("api-window-image", args=[scene.pk])
    r = alice_client.get(url + "?x=64&y=32&size=32&context=16")
    assert r.status_code == 200 and r["Content-Type"] == "image/png"
    image = Image.open(io.BytesIO(r.content))
    assert image.format == "PNG" and image.size == (64, 64) and image.mode == "RGB"
    # Without outline the window's pixels are exactly the scene's.
    from labeling.projects.storage_keys import get_storage
    from mlcore.ingest.scenes import NpyScene

    pixels = NpyScene(get_storage(), scene.pixels_key).read_rows(0, scene.height)
    r = alice_client.get(url + "?x=64&y=32&size=32&context=16&outline=0")
    crop = Image.open(io.BytesIO(r.content))
    import numpy as np

    assert np.array_equal(np.asarray(crop), pixels[16:80, 48:112])
    # Corner: context outside the scene is grey; scaled 3x.
    r = alice_client.get(url + "?x=0&y=0&context=8&scale=3&outline=0")
    corner = np.asarray(Image.open(io.BytesIO(r.content)))
    assert corner.shape == ((32 + 16) * 3, (32 + 16) * 3, 3)
    assert (corner[:24, :24] == 128).all()
    assert np.array_equal(corner[24::3, 24::3][:40, :40], pixels[:40, :40])


@pytest.mark.parametrize(
    "query, message",
    [
        ("?y=0", "x is required"),
        ("?x=1000&y=0", "outside scene"),
        ("?x=0&y=0&size=0", "size must be"),
        ("?x=0&y=0&context=-1", "context must be"),
        ("?x=0&y=0&scale=20", "scale must be"),
        ("?x=a&y=0", "integer"),
    ],
)
def test_window_png_bad_input(alice_client, scored, query, message):
    scene, _ = scored
    r = alice_client.get(reverse("api-window-image", args=[scene.pk]) + query)
    assert r.status_code == 400 and message in r.json()["error"]


# -- OpenAPI -------------------------------------------------------------------------------------


def test_openapi_lists_and_documents_every_api_route(alice_client):
    r = alice_client.get(reverse("api-openapi"))
    assert r.status_code == 200
    schema = r.json()
    assert schema["openapi"].startswith("3.") and schema["info"]["title"]
    routes = api_routes()
    names = {name for _, name, _ in routes}
    assert {"api-projects", "api-detections", "api-queue", "api-retrain", "api-scenes",
            "api-jobs"} <= names  # fmt: skip
    for path, name, params in routes:
        assert path in schema["paths"], f"route {name} ({path}) is missing from the schema"
        item = schema["paths"][path]
        assert "x-undocumented" not in item, f"route {name} ({path}) has no OPERATIONS entry"
        assert name in OPERATIONS, name
        for method in OPERATIONS[name]:
            assert item[method]["summary"] and item[method]["responses"]
        assert [p["name"] for p in item.get("parameters", [])] == [p for p, _ in params]
    assert schema["paths"]["/api/projects"].keys() >= {"get", "post"}
    assert "/api/scenes/{scene_id}/detections" in schema["paths"]


def test_openapi_flags_an_undocumented_route(settings):
    """A route nobody documented shows up flagged, so the test above would fail for it."""
    import sys
    import types

    from django.urls import clear_url_caches, include, path

    module = types.ModuleType("tests_extra_urls")
    module.urlpatterns = [
        path("api/made-up/<int:thing_id>", lambda r, thing_id: None, name="api-made-up"),
        path("", include("collage_app.urls")),
    ]
    sys.modules["tests_extra_urls"] = module
    settings.ROOT_URLCONF = "tests_extra_urls"
    clear_url_caches()
    try:
        schema = build_schema()
        assert schema["paths"]["/api/made-up/{thing_id}"]["x-undocumented"] == ["api-made-up"]
    finally:
        clear_url_caches()
        del sys.modules["tests_extra_urls"]


def test_annotations_are_listed_a_page_at_a_time(alice_client, alice, scored):
    """Following `next` gives every row once, newest first, and the pages' effective rows are
    the scene's (undo and newer-per-place decided over the whole history, across pages)."""
    from datetime import timedelta

    from django.utils import timezone

    scene, _ = scored
    start = timezone.now()
    rows = [
        Annotation(project=scene.project, scene=scene, user=alice, kind="false_negative",
                   label="car", x=8 * (i % 9), y=0, w=32, h=32,
                   created_at=start + timedelta(seconds=i // 2))  # two at each instant
        for i in range(30)
    ]  # fmt: skip
    Annotation.objects.bulk_create(rows)
    first = Annotation.objects.filter(scene=scene).order_by("created_at", "id").first()
    annotations.undo(first, alice)
    url = reverse("api-annotations", args=[scene.pk])
    whole = alice_client.get(url, {"limit": 5000}).json()
    assert len(whole["history"]) == 31 and whole["next"] is None and whole["next_cursor"] is None
    assert len(whole["effective"]) == 9  # nine places; the undone row is not among them
    history, effective, page = [], [], alice_client.get(url, {"limit": 7}).json()
    while True:
        assert len(page["history"]) <= 7 and page["limit"] == 7
        history += page["history"]
        effective += page["effective"]
        if page["next"] is None:
            break
        assert page["next_cursor"] == page["history"][-1]["id"]
        page = alice_client.get(page["next"]).json()
    assert [a["id"] for a in history] == [a["id"] for a in whole["history"]]
    assert [a["id"] for a in effective] == [a["id"] for a in whole["effective"]]
    assert alice_client.get(url).json()["limit"] == annotations.PAGE_DEFAULT


@pytest.mark.parametrize(
    "query, message",
    [
        ({"limit": 0}, "limit must be between 1 and 5000"),
        ({"limit": 5001}, "limit must be between 1 and 5000"),
        ({"limit": "²"}, "limit must be an integer"),
        ({"cursor": "x"}, "cursor must be an integer"),
        ({"cursor": 99999999}, "cursor 99999999 is not an annotation of this scene"),
    ],
)
def test_annotation_pages_refuse_bad_limits_and_cursors(alice_client, scored, query, message):
    scene, _ = scored
    r = alice_client.get(reverse("api-annotations", args=[scene.pk]), query)
    assert r.status_code == 400 and message in r.json()["error"], r.content

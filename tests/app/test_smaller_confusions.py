"""The smaller confusions of a new user's walk (issue 34.5), server side: the queue asks for a
choice when its guess would go against the ranking, a skipped window comes back after exactly
REVIEW_SKIP_RETURNS_AFTER answers as the queue page counts them (it asks for the next window
while one is on screen), annotation kinds read as words on the dashboard, the scene's GeoJSON
exports are linked from the dashboard and the viewer (and the links work), and a running retrain
cycle is named to the dashboard's script so its status line can follow it."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from review_helpers import make_scored_scene

from labeling.models import Annotation, JobRecord
from labeling.review import cache, queue

pytestmark = pytest.mark.django_db


@pytest.fixture
def scored(project, storage_dir, redis_conn):
    cache._cache.clear()
    return make_scored_scene(project, 256, 256, seed=3)


def test_the_guess_needs_a_choice_only_against_the_ranking():
    classes, t = ["car", "boat", "negative"], {"car": 0.6, "boat": 0.6}
    # The walk's case: nothing reaches its threshold, the negative class ranks last.
    assert queue.needs_choice(classes, [0.440, 0.439, 0.121], 2, t, "negative")
    # Nothing reaches its threshold and the negative class ranks first: Enter may accept it.
    assert not queue.needs_choice(classes, [0.40, 0.05, 0.55], 2, t, "negative")
    # A class reaches its threshold: the guess is that class.
    assert not queue.needs_choice(classes, [0.70, 0.10, 0.20], 0, t, "negative")
    # No thresholds (no rule to go against): the guess is the argmax.
    assert not queue.needs_choice(classes, [0.2, 0.1, 0.7], 2, {}, "negative")


def test_the_queue_item_says_when_it_needs_a_choice(project, scored, alice_client):
    scene, run = scored
    # Thresholds no window reaches: windows on objects rank a class above the negative one.
    run.metrics = {**(run.metrics or {}), "thresholds": {"car": 0.9999, "boat": 0.9999}}
    run.save(update_fields=["metrics"])
    url = reverse("api-queue", args=[project.pk])
    item = alice_client.get(url, {"strategy": "top_score"}).json()
    top = max(item["probs"], key=item["probs"].get)
    assert top != "negative" and item["guess"] == "negative"
    assert item["needs_choice"] is True
    assert item["reason"].startswith(f"negative: {top} ")


def answer(client, item):
    url = reverse("api-annotations", args=[item["scene"]])
    body = {"kind": "review", "label": item["guess"], "x": item["x"], "y": item["y"],
            "w": item["w"], "h": item["h"]}  # fmt: skip
    assert client.post(url, body, content_type="application/json").status_code == 201


def test_a_skipped_window_returns_after_n_answers_counting_the_one_on_screen(
    project, scored, alice_client, settings
):
    settings.REVIEW_SKIP_RETURNS_AFTER = 3
    url = reverse("api-queue", args=[project.pk])
    skipped = alice_client.get(url).json()
    body = {"scene": skipped["scene"], "x": skipped["x"], "y": skipped["y"]}
    skip = alice_client.post(reverse("api-queue-skip", args=[project.pk]), body,
                             content_type="application/json")  # fmt: skip
    assert skip.status_code == 201 and skip.json()["returns_after"] == 3
    on_screen = alice_client.get(url).json()
    for _ in range(2):  # answers 1 and 2; then the third window is on screen
        answer(alice_client, on_screen)
        on_screen = alice_client.get(url).json()
        assert (on_screen["x"], on_screen["y"]) != (skipped["x"], skipped["y"])
    # Asked for while the third is on screen (the page's prefetch): the skipped window is what
    # shows after the third answer, not one window later.
    ahead = alice_client.get(url, {"ahead": "1"}).json()
    assert (ahead["x"], ahead["y"]) == (skipped["x"], skipped["y"])
    assert alice_client.get(url, {"ahead": "7"}).status_code == 400


def test_kinds_read_as_words_and_the_geojson_exports_are_linked(project, scored, alice,
                                                                alice_client):  # fmt: skip
    scene, run = scored
    det = run.detections.filter(kind="merged").first()
    for kind, label, x in (("false_negative", "car", 0), ("false_positive", "negative", 40),
                           ("false_positive", "negative", 80)):  # fmt: skip
        Annotation.objects.create(project=project, scene=scene, user=alice, kind=kind,
                                  label=label, x=x, y=200, w=32, h=32)  # fmt: skip
    Annotation.objects.create(project=project, scene=scene, user=alice, kind="confirm",
                              label=det.label, x=det.x, y=det.y, w=det.w, h=det.h,
                              detection=det)  # fmt: skip
    page = alice_client.get(reverse("project-dashboard", args=[project.pk])).content.decode()
    breakdown = re.search(r'id="pending-breakdown">\((.*?)\)</span>', page).group(1)
    assert breakdown == "1 confirmed detection, 1 missed object, 2 false positives"
    assert "_" not in breakdown

    viewer = alice_client.get(reverse("scene-viewer", args=[scene.pk])).content.decode()
    for html, ids in ((page, ("detections-geojson", "labels-geojson")),
                      (viewer, ('id="detections-geojson"', 'id="labels-geojson"'))):  # fmt: skip
        for needle in ids:
            tag = re.search(r"<a [^>]*" + needle + r"[^>]*>", html).group(0)
            href = re.search(r'href="([^"]+)"', tag).group(1).replace("&amp;", "&")
            answer_ = alice_client.get(href)
            assert answer_.status_code == 200, (href, answer_.content[:300])
            assert answer_["Content-Type"] == "application/geo+json"
            assert answer_.json()["type"] == "FeatureCollection" and answer_.json()["features"]


def test_the_dashboard_names_the_running_cycle_to_follow(project, scored, alice_client):
    job = JobRecord.objects.create(project=project, kind="retrain_cycle", status="running",
                                   progress_total=10, progress_done=3)  # fmt: skip
    r = alice_client.get(reverse("project-dashboard", args=[project.pk]))
    assert r.context["config"]["cycle_job"] == job.pk
    assert f"Retrain cycle running (job {job.pk})" in r.content.decode()
    JobRecord.objects.filter(pk=job.pk).update(status="done")
    r = alice_client.get(reverse("project-dashboard", args=[project.pk]))
    assert r.context["config"]["cycle_job"] is None
    assert "Retrain cycle running" not in r.content.decode()


def test_a_detection_reads_with_three_decimals_as_on_every_page():
    from labeling.models import Detection

    # The admin's rows once read "car 0.82" beside the pages' "car 0.820".
    assert str(Detection(label="car", score=0.82, x=1, y=2, w=32, h=32)) == "car 0.820 at (1, 2)"

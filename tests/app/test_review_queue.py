"""labeling.review services: record_annotation (checks, idempotency, undo) and the review queue
(ranking strategies, skipping annotated windows, Redis leases between concurrent reviewers)."""

from __future__ import annotations

import numpy as np
import pytest

from labeling.loop.cycle import effective_annotations
from labeling.models import Annotation
from labeling.review import annotations, cache, common, queue
from labeling.scoring.results import load_grid
from mlcore.inference.postprocess import uncertainty
from mlcore.sampling import DEFAULT_STRATEGY, DIVERSE_STRATEGIES, select_batch
from tests.review_helpers import make_scored_scene, run_reviewers

pytestmark = pytest.mark.django_db


@pytest.fixture
def scored(project, storage_dir, redis_conn):
    cache._cache.clear()
    return make_scored_scene(project, 256, 256, seed=3)


# -- record_annotation --------------------------------------------------------------------------


def test_record_annotation_creates_and_is_idempotent(project, alice, scored):
    scene, run = scored
    det = run.detections.filter(kind="merged").first()
    assert det is not None, "the colour model should find the red and green squares"
    a, created = annotations.record_annotation(
        project, scene, alice, kind="confirm", label=det.label, x=det.x, y=det.y, w=det.w,
        h=det.h, detection=det.pk, client_id="c-1",
    )  # fmt: skip
    assert created and a.detection_id == det.pk and a.user == alice
    again, created2 = annotations.record_annotation(
        project, scene, alice, kind="confirm", label=det.label, x=det.x, y=det.y, w=det.w,
        h=det.h, detection=det.pk, client_id="c-1",
    )  # fmt: skip
    assert not created2 and again.pk == a.pk
    assert Annotation.objects.count() == 1


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"x": -1}, "outside scene"),
        ({"x": 250}, "outside scene"),
        ({"y": 240, "h": 32}, "outside scene"),
        ({"w": 0}, "at least 1x1"),
        ({"x": "abc"}, "integer"),
        ({"x": 1.5}, "whole number"),
        ({"label": "plane"}, "unknown class"),
        ({"kind": "maybe"}, "unknown kind"),
        ({"source": "robot"}, "unknown source"),
        ({"detection": 999999}, "does not exist"),
        ({"client_id": "x" * 65}, "at most 64"),
    ],
)
def test_record_annotation_rejects_bad_input(project, alice, scored, changes, message):
    scene, _ = scored
    args = {"kind": "false_negative", "label": "car", "x": 10, "y": 10, "w": 32, "h": 32}
    args.update(changes)
    with pytest.raises(common.ReviewError, match=message):
        annotations.record_annotation(project, scene, alice, **args)
    assert Annotation.objects.count() == 0


def test_detection_of_another_scene_is_rejected(project, alice, scored):
    scene, _ = scored
    _, other_run = make_scored_scene(project, 128, 128, seed=4)
    det = other_run.detections.first()
    assert det is not None
    with pytest.raises(common.ReviewError, match="another scene"):
        annotations.record_annotation(
            project, scene, alice, kind="confirm", label="car", x=0, y=0, w=32, h=32,
            detection=det.pk,
        )  # fmt: skip


def test_client_id_of_another_user_is_not_returned(project, alice, bob, scored):
    scene, _ = scored
    project.members.add(bob)
    annotations.record_annotation(project, scene, alice, kind="review", label="car", x=0, y=0, w=32,
                             h=32, client_id="shared")  # fmt: skip
    with pytest.raises(common.ReviewError, match="already used"):
        annotations.record_annotation(project, scene, bob, kind="review", label="car", x=0, y=0,
                                 w=32, h=32, client_id="shared")  # fmt: skip


def test_undo_appends_and_restores_previous_label(project, alice, bob, scored):
    scene, _ = scored
    place = {"x": 16, "y": 16, "w": 32, "h": 32}
    first, _ = annotations.record_annotation(project, scene, alice, kind="review", label="car",
                                        **place)  # fmt: skip
    second, _ = annotations.record_annotation(project, scene, bob, kind="review", label="boat",
                                         **place)  # fmt: skip
    eff = effective_annotations(Annotation.objects.filter(scene=scene))
    assert [a.pk for a in eff] == [second.pk], "newest wins"
    u, created = annotations.undo(second, bob, client_id="u-1")
    assert created and u.kind == "undo" and u.undoes_id == second.pk and u.label == "boat"
    assert (u.x, u.y, u.w, u.h) == (16, 16, 32, 32)
    eff = effective_annotations(Annotation.objects.filter(scene=scene))
    assert [a.pk for a in eff] == [first.pk], "undo brings back the older label"
    assert Annotation.objects.filter(scene=scene).count() == 3, "history is kept"
    assert annotations.undo(second, bob, client_id="u-1")[0].pk == u.pk


def test_undo_needs_a_target_in_the_scene(project, alice, scored):
    scene, _ = scored
    with pytest.raises(common.ReviewError, match="needs the id"):
        annotations.record_annotation(project, scene, alice, kind="undo", label="car", x=0, y=0,
                                 w=32, h=32)  # fmt: skip
    with pytest.raises(common.ReviewError, match="not an annotation of this scene"):
        annotations.record_annotation(project, scene, alice, kind="undo", label="car", x=0, y=0,
                                 w=32, h=32, undoes=123456)  # fmt: skip


# -- the queue -----------------------------------------------------------------------------------


def test_queue_follows_uncertainty_order(project, alice, scored, redis_conn):
    scene, run = scored
    grid = load_grid(run)
    item = queue.next_queue_window(project, alice, "uncertainty", redis=redis_conn)
    unc = uncertainty(grid.probs, "least_confidence")
    i, j = list(grid.ys).index(item["y"]), list(grid.xs).index(item["x"])
    assert unc[i, j] == pytest.approx(unc.max())
    assert item["scene"] == scene.pk and item["w"] == item["h"] == grid.window
    assert set(item["probs"]) == set(grid.classes)
    assert item["guess"] == max(item["probs"], key=item["probs"].get)
    assert (
        item["lease_seconds"] > 0 and item["remaining"] == grid.probs.shape[0] * grid.probs.shape[1]
    )
    ttl = redis_conn.ttl(queue.lease_key(project.pk, scene.pk, item["x"], item["y"]))
    assert 0 < ttl <= item["lease_seconds"]


@pytest.mark.parametrize("strategy", queue.STRATEGIES)
def test_each_strategy_hands_out_distinct_windows_best_first(
    project, alice, scored, redis_conn, strategy
):
    _, run = scored
    items = [queue.next_queue_window(project, alice, strategy, redis=redis_conn) for _ in range(5)]
    places = {(i["x"], i["y"]) for i in items}
    assert len(places) == 5, "a leased window is not handed out again"
    prio = [i["priority"] for i in items]
    assert prio == sorted(prio, reverse=True)
    if strategy == "top_score":
        assert items[0]["guess"] in ("car", "boat") and items[0]["score"] > 0.99


@pytest.mark.parametrize("strategy", [s for s in queue.STRATEGIES if s in DIVERSE_STRATEGIES])
def test_diverse_strategies_hand_two_reviewers_no_overlapping_windows(
    project, alice, bob, scored, redis_conn, strategy
):
    """The queue walks mlcore.sampling's order (what a simulator using select_batch gets), and
    a diverse strategy's windows never overlap, whoever of the reviewers gets them."""
    _, run = scored
    items = [
        queue.next_queue_window(project, (alice, bob)[i % 2], strategy, redis=redis_conn)
        for i in range(12)
    ]
    places = [(i["y"], i["x"]) for i in items]
    window = items[0]["w"]
    for a, (y, x) in enumerate(places):
        for yy, xx in places[:a]:
            assert abs(y - yy) >= window or abs(x - xx) >= window, (places, strategy)
    batch = select_batch(load_grid(run), strategy, 12, seed=run.pk)
    assert places == [(it.y, it.x) for it in batch]


def test_the_default_strategy_is_mlcores(project):
    assert queue.DEFAULT_STRATEGY == DEFAULT_STRATEGY
    assert queue.next_queue_window.__defaults__[0] == queue.DEFAULT_STRATEGY


@pytest.mark.parametrize("name", ["smart", "top-score", "least_confidence"])
def test_unknown_strategy_is_an_error(project, alice, scored, redis_conn, name):
    """One spelling per strategy: mlcore's names; no hyphenated or second spelling."""
    with pytest.raises(common.ReviewError, match="unknown strategy"):
        queue.next_queue_window(project, alice, name, redis=redis_conn)


def test_queue_skips_annotated_windows_and_undone_ones_come_back(
    project, alice, scored, redis_conn
):
    scene, _ = scored
    first = queue.next_queue_window(project, alice, "top_score", redis=redis_conn)
    redis_conn.flushdb()  # leases gone: only the annotation may keep it from coming back
    a, _ = annotations.record_annotation(
        project, scene, alice, kind="review", label=first["guess"], x=first["x"], y=first["y"],
        w=first["w"], h=first["h"], source="queue",
    )  # fmt: skip
    second = queue.next_queue_window(project, alice, "top_score", redis=redis_conn)
    assert (second["x"], second["y"]) != (first["x"], first["y"])
    assert second["remaining"] == first["remaining"] - 1
    annotations.undo(a, alice)
    redis_conn.flushdb()
    again = queue.next_queue_window(project, alice, "top_score", redis=redis_conn)
    assert (again["x"], again["y"]) == (first["x"], first["y"])


def test_queue_is_done_when_everything_is_annotated(project, alice, redis_conn, storage_dir):
    cache._cache.clear()
    scene, run = make_scored_scene(project, 64, 64, seed=5)
    grid = load_grid(run)
    for y in grid.ys:
        for x in grid.xs:
            annotations.record_annotation(project, scene, alice, kind="review", label="negative",
                                     x=int(x), y=int(y), w=32, h=32)  # fmt: skip
    assert queue.next_queue_window(project, alice, redis=redis_conn) is None


def test_queue_for_one_scene_and_across_scenes(project, alice, scored, redis_conn):
    scene, _ = scored
    other, _ = make_scored_scene(project, 128, 128, seed=9)
    item = queue.next_queue_window(project, alice, "uncertainty", scene=other, redis=redis_conn)
    assert item["scene"] == other.pk
    seen = set()
    for _ in range(200):
        item = queue.next_queue_window(project, alice, "random", redis=redis_conn)
        seen.add(item["scene"])
    assert seen == {scene.pk, other.pk}


def test_leases_expire_and_the_window_comes_back(project, alice, bob, scored, redis_conn):
    first = queue.next_queue_window(project, alice, "uncertainty", redis=redis_conn)
    other = queue.next_queue_window(project, bob, "uncertainty", redis=redis_conn)
    assert (other["x"], other["y"]) != (first["x"], first["y"])
    redis_conn.delete(queue.lease_key(project.pk, first["scene"], first["x"], first["y"]))
    back = queue.next_queue_window(project, bob, "uncertainty", redis=redis_conn)
    assert (back["x"], back["y"]) == (first["x"], first["y"])


def test_release_lease_only_by_its_holder(project, alice, bob, scored, redis_conn):
    item = queue.next_queue_window(project, alice, redis=redis_conn)
    assert not queue.release_lease(project, item["scene"], item["x"], item["y"], bob, redis_conn)
    assert queue.release_lease(project, item["scene"], item["x"], item["y"], alice, redis_conn)


@pytest.mark.django_db(transaction=True)
def test_concurrent_reviewers_never_get_the_same_window(project, make_user, scored, redis_conn):
    """20 reviewers in threads, 10 requests each, against real Redis and PostgreSQL."""
    users = [make_user(f"reviewer{i}") for i in range(20)]
    for u in users:
        project.members.add(u)

    def turn(user, _):
        item = queue.next_queue_window(project, user, "uncertainty")
        return (item["scene"], item["x"], item["y"])

    got = run_reviewers(users, 10, turn)
    assert len(got) == 200
    assert len(set(got)) == 200, "two reviewers were handed the same window"


def test_ranked_order_is_cached_per_run(project, scored):
    _, run = scored
    a = queue.ranked_run(run, "margin")
    b = queue.ranked_run(run, "margin")
    assert a is b
    assert np.all(np.diff(a.priority[a.order]) <= 0)


@pytest.mark.django_db(transaction=True)
def test_concurrent_reviewers_answering_and_releasing_never_share_a_window(
    project, make_user, scored, redis_conn
):
    """The review loop under contention: each reviewer takes a window, answers it and lets its
    lease go at once (the worst case: the window is free in Redis, annotated in the database,
    and another reviewer may have read the annotated places just before the answer)."""
    scene, _ = scored
    users = [make_user(f"answerer{i}") for i in range(12)]
    project.members.add(*users)

    def turn(user, _):
        item = queue.next_queue_window(project, user, "margin")
        annotations.record_annotation(
            project, scene, user, kind="review", label=item["guess"], x=item["x"],
            y=item["y"], w=item["w"], h=item["h"], source="queue",
        )  # fmt: skip
        queue.release_lease(project, item["scene"], item["x"], item["y"], user)
        return (item["scene"], item["x"], item["y"])

    got = run_reviewers(users, 8, turn)
    assert len(got) == 96
    assert len(set(got)) == 96, "a window was handed out (and answered) twice"
    assert Annotation.objects.filter(scene=scene).count() == 96

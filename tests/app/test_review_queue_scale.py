"""The review queue at scale (issue 25 item 1): what one queue request reads does not grow with
the project's annotations (SQL queries and annotation rows the database touched, at a few and at
thousands), the Redis set of answered windows agrees with the database, undone and skipped
windows behind the walk's cursor come back, and concurrent reviewers on a busy project never get
the same window. Real PostgreSQL and Redis."""

from __future__ import annotations

import random

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from labeling.loop.cycle import effective_annotations
from labeling.models import Annotation, QueueSkip
from labeling.review import annotations, answered, cache, queue
from tests.review_helpers import make_scored_scene, run_reviewers

pytestmark = pytest.mark.django_db


@pytest.fixture
def scored(project, storage_dir, redis_conn):
    cache._cache.clear()
    return make_scored_scene(project, 512, 512, seed=7)  # 31 x 31 windows at step 16


def annotation_reads() -> int:
    """Rows of labeling_annotation this transaction has read so far (sequential + index)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
            "FROM pg_stat_xact_user_tables WHERE relname = 'labeling_annotation'"
        )
        return int(cursor.fetchone()[0])


def measured_request(project, user, redis_conn) -> tuple[int, int, dict]:
    """(SQL queries, annotation rows read, item) of one queue request; its lease let go after."""
    before = annotation_reads()
    with CaptureQueriesContext(connection) as queries:
        item = queue.next_queue_window(project, user, "uncertainty", redis=redis_conn)
    reads = annotation_reads() - before
    queue.release_lease(project, item["scene"], item["x"], item["y"], user, redis_conn)
    return len(queries), reads, item


def bulk_annotations(project, scene, user, places, kind="review"):
    """Annotation rows written straight to the database (as a bulk load would), then Redis told
    to rebuild its answered windows."""
    now = timezone.now()
    rows = [
        Annotation(project=project, scene=scene, user=user, kind=kind, label="negative", x=x, y=y,
                   w=w, h=h, source="api", created_at=now)
        for x, y, w, h in places
    ]  # fmt: skip
    Annotation.objects.bulk_create(rows, batch_size=2000)
    answered.forget_scenes([scene.pk])


def top_places(run, count):
    ranked = queue.ranked_run(run, "uncertainty")
    places = []
    for flat in ranked.order[:count]:
        y, x = ranked.origin(int(flat))
        places.append((x, y, ranked.window, ranked.window))
    return places


def open_walk(run, redis_conn):
    ranked = queue.ranked_run(run, "uncertainty")
    return answered.open_walks([(run, ranked)], "uncertainty", redis_conn)[0]


def test_queue_request_reads_the_same_at_a_few_and_at_thousands_of_annotations(
    project, alice, scored, redis_conn
):
    """A few annotations, then 6,000 (the top 900 windows of the ranking, as reviewers answering
    the queue leave them, and 5,100 boxes drawn elsewhere in the viewer): once the answered set
    is built (the first request after a bulk load reads the scene's rows once), a request runs
    the same SQL queries and reads at most skip_returns_after() more annotation rows (the
    newest answers, for the skipped windows)."""
    scene, run = scored
    QueueSkip.objects.create(project=project, scene=scene, user=alice, x=3, y=5, w=32, h=32)
    bulk_annotations(project, scene, alice, top_places(run, 3))
    queue.next_queue_window(project, alice, "uncertainty", redis=redis_conn)  # builds the set
    redis_conn.delete(*redis_conn.keys("review:lease:*"))
    few = [measured_request(project, alice, redis_conn) for _ in range(3)]

    rng = random.Random(1)
    drawn = [(rng.randrange(0, 480), rng.randrange(0, 480), rng.randrange(8, 32),
              rng.randrange(8, 32)) for _ in range(5100)]  # fmt: skip
    bulk_annotations(project, scene, alice, top_places(run, 900)[3:] + drawn)
    total = Annotation.objects.filter(project=project).count()
    assert total >= 6000
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE labeling_annotation")
    cold_reads = annotation_reads()
    first = queue.next_queue_window(project, alice, "uncertainty", redis=redis_conn)
    cold_reads = annotation_reads() - cold_reads
    assert cold_reads >= 900, "the rebuild reads the scene's rows once"
    queue.release_lease(project, first["scene"], first["x"], first["y"], alice, redis_conn)
    many = [measured_request(project, alice, redis_conn) for _ in range(3)]

    need = queue.skip_returns_after()
    assert {q for q, _, _ in many} == {q for q, _, _ in few}, (few, many)
    assert max(r for _, r, _ in many) <= max(r for _, r, _ in few) + need, (few, many)
    assert max(r for _, r, _ in many) < total / 100
    # And the answer is right: the best window nobody answered, 900 windows down the ranking.
    assert (many[0][2]["x"], many[0][2]["y"]) == top_places(run, 901)[900][:2]
    assert many[0][2]["remaining"] == 31 * 31 - 900


def test_the_answered_set_agrees_with_the_database(project, alice, bob, scored, redis_conn):
    """Answers, answers over answers, undos and undos of undos through record_annotation, the
    queue walking meanwhile: the Redis set equals the database's effective windows, and equals
    a set rebuilt from scratch."""
    scene, run = scored
    project.members.add(bob)
    project.reviewers.add(alice, bob)  # each may undo the other's answers
    rng = random.Random(3)
    ranked = queue.ranked_run(run, "margin")
    places = top_places(run, 40)
    made = []
    for step in range(150):
        if step % 5 == 0:
            item = queue.next_queue_window(project, alice, "margin", redis=redis_conn)
            queue.release_lease(project, item["scene"], item["x"], item["y"], alice, redis_conn)
        if made and rng.random() < 0.3:
            row, _ = annotations.undo(rng.choice(made), rng.choice([alice, bob]))
        else:
            x, y, w, h = rng.choice(places)
            row, _ = annotations.record_annotation(
                project, scene, rng.choice([alice, bob]), kind="review",
                label=rng.choice(project.class_names), x=x, y=y, w=w, h=h,
            )  # fmt: skip
        made.append(row)

    def redis_set():
        walk = answered.open_walks([(run, ranked)], "margin", redis_conn)[0]
        return {int(v) for v in redis_conn.smembers(walk.answered_key)} - {answered.SENTINEL}

    rows = Annotation.objects.filter(scene=scene)
    truth = {ranked.flat_of(a.x, a.y, a.w, a.h) for a in effective_annotations(rows)}
    kept = redis_set()
    assert kept == truth and 0 < len(truth) < 40
    answered.forget_scenes([scene.pk], redis_conn)
    assert redis_set() == truth


def test_an_undone_window_behind_the_cursor_comes_back(project, alice, scored, redis_conn):
    scene, run = scored
    got = []
    for _ in range(6):
        item = queue.next_queue_window(project, alice, "uncertainty", redis=redis_conn)
        row, _ = annotations.record_annotation(
            project, scene, alice, kind="review", label=item["guess"], x=item["x"], y=item["y"],
            w=item["w"], h=item["h"], source="queue",
        )  # fmt: skip
        queue.release_lease(project, item["scene"], item["x"], item["y"], alice, redis_conn)
        got.append((item, row))
    walk = open_walk(run, redis_conn)
    assert walk.cursor == 5, "the walk starts past the answered top of the ranking"
    first, first_row = got[0]
    annotations.undo(first_row, alice)
    back = queue.next_queue_window(project, alice, "uncertainty", redis=redis_conn)
    assert (back["x"], back["y"]) == (first["x"], first["y"])
    assert back["remaining"] == got[-1][0]["remaining"]  # 5 answered: 6 answers, 1 undone


def test_a_skipped_window_the_cursor_passed_returns_after_n_answers(
    project, alice, scored, redis_conn, settings
):
    settings.REVIEW_SKIP_RETURNS_AFTER = 3
    scene, run = scored
    skipped = queue.next_queue_window(project, alice, "uncertainty", redis=redis_conn)
    queue.skip_window(project, scene, alice, skipped["x"], skipped["y"])
    seen = []
    for _ in range(3):
        item = queue.next_queue_window(project, alice, "uncertainty", redis=redis_conn)
        seen.append((item["x"], item["y"]))
        annotations.record_annotation(
            project, scene, alice, kind="review", label=item["guess"], x=item["x"], y=item["y"],
            w=item["w"], h=item["h"], source="queue",
        )  # fmt: skip
        queue.release_lease(project, item["scene"], item["x"], item["y"], alice, redis_conn)
    assert (skipped["x"], skipped["y"]) not in seen
    walk = open_walk(run, redis_conn)
    assert (
        walk.cursor >= 3
        and walk.ranked.flat_of(skipped["x"], skipped["y"], skipped["w"], skipped["h"])
        in walk.loose
    ), "the cursor moved past the held-back window and noted it"
    back = queue.next_queue_window(project, alice, "uncertainty", redis=redis_conn)
    assert (back["x"], back["y"]) == (skipped["x"], skipped["y"])


def test_an_answer_redis_never_heard_of_is_not_handed_out(project, alice, scored, redis_conn):
    """The database is the truth: an annotation written without record_annotation (and without
    telling Redis) keeps its window out of the queue all the same."""
    scene, run = scored
    queue.next_queue_window(project, alice, "top_score", redis=redis_conn)  # builds the set
    redis_conn.delete(*redis_conn.keys("review:lease:*"))
    ranked = queue.ranked_run(run, "top_score")
    y, x = ranked.origin(int(ranked.order[0]))
    Annotation.objects.create(project=project, scene=scene, user=alice, kind="review",
                              label="car", x=x, y=y, w=32, h=32)  # fmt: skip
    item = queue.next_queue_window(project, alice, "top_score", redis=redis_conn)
    assert (item["x"], item["y"]) != (x, y)
    assert item["remaining"] == 31 * 31 - 1, "and the set now knows it"


@pytest.mark.django_db(transaction=True)
def test_concurrent_reviewers_on_a_busy_project_never_share_a_window(
    project, make_user, scored, redis_conn
):
    """16 reviewers in threads racing the first rebuild after a bulk load of 3,000 annotations
    (the ranking's top 600 windows answered), then answering, now and then changing their minds
    (undo, answer again) and letting leases go at once: no window handed out twice, none of the
    bulk-answered ones handed out."""
    scene, run = scored
    users = [make_user(f"busy{i}") for i in range(16)]
    project.members.add(*users)
    answered_before = set(top_places(run, 600))
    rng = random.Random(5)
    drawn = [(rng.randrange(0, 480), rng.randrange(0, 480), 20, 20) for _ in range(2400)]
    bulk_annotations(project, scene, users[0], sorted(answered_before) + drawn)
    rngs = [random.Random(seed) for seed in range(len(users))]

    def turn(user, index):
        item = queue.next_queue_window(project, user, "uncertainty")
        row, _ = annotations.record_annotation(
            project, scene, user, kind="review", label=item["guess"], x=item["x"],
            y=item["y"], w=item["w"], h=item["h"], source="queue",
        )  # fmt: skip
        if rngs[index].random() < 0.2:  # changed their mind, while still holding the lease
            annotations.undo(row, user)
            annotations.record_annotation(
                project, scene, user, kind="review", label=item["guess"], x=item["x"],
                y=item["y"], w=item["w"], h=item["h"], source="queue",
            )  # fmt: skip
        queue.release_lease(project, item["scene"], item["x"], item["y"], user)
        return (item["x"], item["y"], item["w"], item["h"])

    got = run_reviewers(users, 6, turn)
    assert len(got) == 96
    assert len(set(got)) == 96, "a window was handed out twice"
    assert not set(got) & answered_before, "a window answered before was handed out"

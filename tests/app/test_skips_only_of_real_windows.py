"""A skip ("not sure") is stored only for a window the queue can hand out: a window origin of
the scene's scoring run. Any other place is a 400 that says what to send, and stores nothing
(2,000 skips of places that are not windows were all stored)."""

from __future__ import annotations

import pytest
from django.urls import reverse
from review_helpers import make_scored_scene

from labeling.models import QueueSkip, Scene
from labeling.review import cache


@pytest.fixture
def scored(project, storage_dir, redis_conn):
    cache._cache.clear()
    return make_scored_scene(project, 128, 160, seed=4)


def skip(client, project, scene, x, y):
    body = {"scene": scene.pk, "x": x, "y": y}
    url = reverse("api-queue-skip", args=[project.pk])
    return client.post(url, body, content_type="application/json")


@pytest.mark.django_db
def test_only_windows_of_the_run_are_skipped(project, scored, alice_client):
    scene, run = scored
    step, window = project.score_step, project.window_size
    # The grid's own origins, the last column's included.
    for x, y in ((0, 0), (step, 2 * step), (scene.width - window, 0)):
        answer = skip(alice_client, project, scene, x, y)
        assert answer.status_code == 201, answer.content
    assert QueueSkip.objects.count() == 3
    for x, y in ((1, 0), (0, step + 3), (7, 7)):  # inside the scene, but no window starts there
        answer = skip(alice_client, project, scene, x, y)
        assert answer.status_code == 400, (x, y, answer.content)
        assert "no window at" in answer.json()["error"]
    assert QueueSkip.objects.count() == 3


@pytest.mark.django_db
def test_a_scene_without_scores_has_nothing_to_skip(project, scored, alice_client):
    bare = Scene.objects.create(project=project, name="unscored", image_key="-", width=64,
                                height=64)  # fmt: skip
    answer = skip(alice_client, project, bare, 0, 0)
    assert answer.status_code == 400 and "no scored windows" in answer.json()["error"]
    assert not QueueSkip.objects.exists()

"""Object size measured from the boxes reviewers drew (issue 34.3): the median of their longer
sides (labeling.projects.measured_size.median_side, on hand-made boxes), from drawn and corrected
boxes only (not click boxes, queue answers, the model's own boxes, background marks, regions or
undone marks), offered in GET /api/projects/<id> and on the edit page as "use N px (median of
K boxes)", refused in words below 5 boxes, not offered once the object size is locked."""

from __future__ import annotations

import pytest

from labeling.models import Detection, ModelVersion, Scene, ScoringRun
from labeling.projects.measured_size import MIN_BOXES, drawn_boxes, median_side
from labeling.review.annotations import record_annotation, undo

pytestmark = pytest.mark.django_db


def test_the_median_of_the_longer_sides_on_hand_made_boxes():
    boxes = [(10, 12), (20, 8), (30, 30), (14, 40), (16, 16)]  # longer sides 12 20 30 40 16
    assert median_side(boxes) == (20, 5)
    assert median_side([(10, 10), (20, 20), (30, 30), (40, 40), (50, 50), (60, 60)]) == (35, 6)
    assert MIN_BOXES == 5
    assert median_side(boxes[:4]) == (None, 4)  # too few to say
    assert median_side([]) == (None, 0)
    assert median_side([(5000, 10)] * 5) == (4096, 5)  # never above what a project may state


@pytest.fixture
def scene(project, redis_conn):
    return Scene.objects.create(project=project, name="s", image_key="x.png", width=800,
                                height=600)  # fmt: skip


def mark(project, scene, user, kind, label, box, **extra):
    x, y, w, h = box
    return record_annotation(project, scene, user, kind=kind, label=label, x=x, y=y, w=w, h=h,
                             **extra)[0]  # fmt: skip


def reviewed_scene(project, scene, alice, drawn_last=(300, 300, 50, 20)):
    """Four boxes a person sized, and every kind of box that is no measurement."""
    version = ModelVersion.objects.create(project=project, number=1, status="failed")
    run = ScoringRun.objects.create(scene=scene, model_version=version, status="done")
    det = [Detection.objects.create(run=run, kind="merged", label="car", score=0.9, x=x, y=y,
                                    w=48, h=48) for x, y in ((400, 10), (500, 10))]  # fmt: skip
    mark(project, scene, alice, "false_negative", "car", (10, 10, 40, 30))  # drawn: 40
    mark(project, scene, alice, "wrong_class", "boat", (500, 10, 60, 44), detection=det[1].pk)
    mark(project, scene, alice, "false_negative", "boat", (100, 10, 24, 18))  # drawn: 24
    mark(project, scene, alice, "false_negative", "car", (150, 10, 36, 36))  # drawn: 36
    # Not measurements:
    mark(project, scene, alice, "false_negative", "boat", (200, 10, 32, 32))  # a click box
    mark(project, scene, alice, "review", "car", (250, 10, 50, 50), source="queue")
    mark(project, scene, alice, "confirm", "car", (400, 10, 48, 48), detection=det[0].pk)
    mark(project, scene, alice, "review", "negative", (10, 100, 20, 26))  # nothing here
    mark(project, scene, alice, "region", "negative", (10, 200, 300, 200))
    undone = mark(project, scene, alice, "false_negative", "car", (600, 10, 90, 90))
    undo(undone, alice)
    if drawn_last:
        mark(project, scene, alice, "false_negative", "car", drawn_last)  # drawn: 50


def test_only_boxes_a_person_sized_count(project, scene, alice):
    reviewed_scene(project, scene, alice)
    assert sorted(drawn_boxes(project)) == [(24, 18), (36, 36), (40, 30), (50, 20), (60, 44)]
    assert median_side(drawn_boxes(project)) == (40, 5)


def test_offered_in_the_api_and_on_the_edit_page(project, scene, alice, alice_client):
    reviewed_scene(project, scene, alice)
    answer = alice_client.get(f"/api/projects/{project.pk}").json()
    assert answer["measured_object_size"] == {
        "size": 40, "boxes": 5, "needed": 5, "text": "use 40 px (median of 5 boxes)"
    }  # fmt: skip
    page = alice_client.get(f"/projects/{project.pk}/edit/").content.decode()
    assert 'id="use-measured-size" data-size="40"' in page
    assert "Use 40 px (median of 5 boxes)" in page

    # Once a model depends on the object size, it is not offered (the lock says why).
    ModelVersion.objects.create(project=project, number=2, status="ready")
    page = alice_client.get(f"/projects/{project.pk}/edit/").content.decode()
    assert 'id="use-measured-size"' not in page
    assert "40 px (median of 5 boxes); the object size is locked" in page


def test_too_few_boxes_are_refused_in_words(project, scene, alice, alice_client):
    reviewed_scene(project, scene, alice, drawn_last=None)
    measured = alice_client.get(f"/api/projects/{project.pk}").json()["measured_object_size"]
    assert measured["size"] is None and measured["boxes"] == 4
    assert "needs at least 5 boxes drawn with shift + drag" in measured["text"]
    assert "(4 so far" in measured["text"]
    page = alice_client.get(f"/projects/{project.pk}/edit/").content.decode()
    assert 'id="use-measured-size"' not in page
    assert "needs at least 5 boxes drawn with shift + drag in the viewer (4 so far" in page

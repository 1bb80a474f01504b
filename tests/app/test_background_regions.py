"""Background regions (issue 34.2): a reviewer marks a whole rectangle of a scene as holding no
object of any class. The API stores it as an annotation of kind "region" (the negative class,
the region's box) after checking it (inside the scene, one object size to 32 a side, the
negative class, a member's scene, CSRF); the scene-only first model counts the samples it
yields (objects inside win, capped); undo cancels it like any annotation; the scene's label
exports never show it as an object. Real PostgreSQL and Redis."""

from __future__ import annotations

import pytest
from django.test import Client

from labeling.loop.cycle import pending_annotations
from labeling.loop.first_model import material_problem, scene_marks
from labeling.models import Annotation, Scene
from labeling.review.annotations import record_annotation, undo
from labeling.review.scene_labels import scene_labels

pytestmark = pytest.mark.django_db


@pytest.fixture
def scene(project, redis_conn):
    return Scene.objects.create(project=project, name="field", image_key="x.png",
                                width=2000, height=1500)  # fmt: skip


def region(client, scene, **box):
    body = {"kind": "region", "label": "negative", "x": 0, "y": 0, "w": 96, "h": 64} | box
    return client.post(f"/api/scenes/{scene.pk}/annotations", body,
                       content_type="application/json")  # fmt: skip


def test_a_region_is_stored_and_checked(alice_client, scene, project, bob):
    made = region(alice_client, scene, x=100, y=200, w=300, h=150)
    assert made.status_code == 201, made.content
    row = Annotation.objects.get(pk=made.json()["id"])
    assert (row.kind, row.label, row.x, row.y, row.w, row.h) == ("region", "negative", 100, 200,
                                                                   300, 150)  # fmt: skip
    refused = {
        "outside": region(alice_client, scene, x=1900, y=0, w=200, h=64),
        "too large": region(alice_client, scene, x=0, y=0, w=1100, h=64),  # > 32 x 32 px
        "smaller than one object": region(alice_client, scene, w=31, h=64),
        "its label is the negative class": region(alice_client, scene, label="car"),
        "send detection null": region(alice_client, scene, detection=1),
    }
    for words, answer in refused.items():
        assert answer.status_code == 400, (words, answer.content)
        assert words in answer.json()["error"], (words, answer.json())
    assert Annotation.objects.count() == 1

    # The limits follow the object size: 48 px objects allow 32 x 48 = 1536 px, and need 48.
    project.object_size = 48
    project.save()
    assert region(alice_client, scene, x=0, y=0, w=1100, h=47).status_code == 400
    assert region(alice_client, scene, x=0, y=0, w=1500, h=1500).status_code == 201

    # Another project's scene: not found for a non-member; and CSRF is enforced.
    other = Client()
    other.force_login(bob)
    assert region(other, scene).status_code == 404
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(project.members.first())
    assert region(strict, scene).status_code == 403
    assert Annotation.objects.count() == 2


def test_a_region_counts_its_samples_for_the_first_model(alice, alice_client, scene, project):
    # A drawn car box inside the region: the region x 0..96, y 0..64 holds 5 x 3 windows of 32 at
    # step 16; the car (40..50, 20..30) touches 6 of them, so the region teaches 9.
    record_annotation(project, scene, alice, kind="false_negative", label="car", x=40, y=20,
                      w=10, h=10)  # fmt: skip
    assert "so far 1 object and 0 background marks" in material_problem(
        project, pending_annotations(project)
    )
    first, _ = record_annotation(project, scene, alice, kind="region", label="negative", x=0,
                                 y=0, w=96, h=64)  # fmt: skip
    assert scene_marks(project, pending_annotations(project)) == (1, 9)
    assert material_problem(project, pending_annotations(project)) is None
    page = alice_client.get(f"/projects/{project.pk}/").content.decode()
    assert "1 object and 9 background marks (9 from 1 region)" in page

    # A huge region yields at most 32 samples (the cap), a click's "nothing here" one.
    record_annotation(project, scene, alice, kind="region", label="negative", x=0, y=100,
                      w=1000, h=700)  # fmt: skip
    record_annotation(project, scene, alice, kind="review", label="negative", x=600, y=0,
                      w=32, h=32)  # fmt: skip
    assert scene_marks(project, pending_annotations(project)) == (1, 9 + 32 + 1)
    page = alice_client.get(f"/projects/{project.pk}/").content.decode()
    assert "1 object and 42 background marks (41 from 2 regions)" in page

    # Undo cancels a region like any annotation: its samples are gone from the count.
    undo(first, alice)
    assert scene_marks(project, pending_annotations(project)) == (1, 33)
    answer = alice_client.post(f"/api/annotations/{Annotation.objects.get(w=1000).pk}/undo", {},
                               content_type="application/json")  # fmt: skip
    assert answer.status_code == 201
    assert scene_marks(project, pending_annotations(project)) == (1, 1)


def test_the_scenes_labels_never_show_a_region(alice, alice_client, scene, project):
    record_annotation(project, scene, alice, kind="false_negative", label="boat", x=40, y=20,
                      w=12, h=12)  # fmt: skip
    record_annotation(project, scene, alice, kind="region", label="negative", x=0, y=0, w=200,
                      h=200)  # fmt: skip
    labels = scene_labels(scene)
    assert [(b["label"], b["kind"], b["x"], b["y"]) for b in labels] == [("boat", "false_negative",
                                                                         40, 20)]  # fmt: skip
    csv = alice_client.get(f"/api/scenes/{scene.pk}/labels?format=csv")
    assert csv.status_code == 200, csv.content
    text = csv.content.decode()
    rows = text.strip().splitlines()[1:]
    assert len(rows) == 1 and ",boat," in rows[0] and ",region," not in text


def test_a_regions_window_truth_is_the_windows_it_teaches(alice, scene, project):
    """The metrics page's confusion and "corrections stick" judge a region on every window it
    taught (objects inside win), not on one window at its centre."""
    import numpy as np

    from labeling.loop.cycle import effective_annotations
    from labeling.loop.metrics_view import annotation_truth
    from mlcore.inference.scoring import ScoreGrid

    record_annotation(project, scene, alice, kind="false_negative", label="car", x=40, y=20,
                      w=10, h=10)  # fmt: skip
    record_annotation(project, scene, alice, kind="region", label="negative", x=0, y=0, w=96,
                      h=64)  # fmt: skip
    origins = np.arange(0, 225, 16)
    grid = ScoreGrid(origins, origins, np.zeros((15, 15, 3)), project.class_names, 32, 16)
    truth = annotation_truth(grid, project, effective_annotations(Annotation.objects.all()))
    negative = {(int(grid.xs[c]), int(grid.ys[r])) for r, c in zip(*np.nonzero(truth == 2))}
    touching = {(x, y) for x in (16, 32, 48) for y in (0, 16)}
    assert negative == {(x, y) for x in (0, 16, 32, 48, 64) for y in (0, 16, 32)} - touching
    assert (truth == 0).sum() == 1 and (truth >= 0).sum() == 10  # the car's window, 9 negatives

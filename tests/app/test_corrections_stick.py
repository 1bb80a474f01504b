"""Corrections stick in the app on a hand-made case: a scored scene (the colour model, whose
decisions are known), answers the version learnt from, answers it did not, an undone one; the
figure stored on the version and shown on the metrics page."""

from __future__ import annotations

import numpy as np
import pytest
from django.urls import reverse
from review_helpers import make_scored_scene

from labeling.loop.corrections import learnt_annotations, record_corrections_stick
from labeling.loop.metrics_view import predicted_labels, version_rows
from labeling.models import ModelVersion
from labeling.review.annotations import record_annotation, undo
from labeling.scoring.results import load_grid
from labeling.scoring.thresholds import run_thresholds

pytestmark = pytest.mark.django_db


def _answer(project, scene, user, grid, rc, label, name):
    r, c = rc
    annotation, _ = record_annotation(
        project, scene, user, kind="review", label=label, x=int(grid.xs[c]), y=int(grid.ys[r]),
        w=32, h=32, client_id=name,
    )  # fmt: skip
    return annotation


def test_corrections_stick_counts_the_learnt_answers_the_version_keeps(
    alice_client, alice, project, storage_dir
):
    scene, run = make_scored_scene(project, 256, 320, seed=3)
    version = run.model_version
    grid = load_grid(run)
    classes = list(grid.classes)
    decided = predicted_labels(grid, project, run_thresholds(run))
    car, neg = classes.index("car"), classes.index("negative")
    car_rc = tuple(int(v) for v in np.argwhere(decided == car)[0])
    neg_rcs = [tuple(int(v) for v in rc) for rc in np.argwhere(decided == neg)[:4]]
    learnt = [
        _answer(project, scene, alice, grid, car_rc, "car", "kept-car"),  # decided car: kept
        _answer(project, scene, alice, grid, neg_rcs[0], "negative", "kept-neg"),  # kept
        _answer(project, scene, alice, grid, neg_rcs[1], "car", "lost"),  # decided negative
        _answer(project, scene, alice, grid, neg_rcs[2], "car", "undone"),
    ]
    undo(learnt[3], alice, client_id="undo-it")
    later = _answer(project, scene, alice, grid, neg_rcs[3], "car", "after-training")
    version.data_counts = {"seen_annotation_ids": [a.pk for a in learnt]}
    version.save(update_fields=["data_counts"])

    assert {a.pk for a in learnt_annotations(version)} == {a.pk for a in learnt[:3]}
    stick = record_corrections_stick(version)
    assert stick == {
        "answered": 3, "kept": 2, "share": 0.6667,
        "scenes": {scene.name: {"answered": 3, "kept": 2, "share": 2 / 3}},
    }  # fmt: skip
    version.refresh_from_db()
    assert version.metrics["corrections_stick"]["share"] == 0.6667
    assert version_rows(project)[0]["corrections_stick"]["kept"] == 2

    # The next version learnt them all (the earlier ones replayed), and the new answer too.
    v2 = ModelVersion.objects.create(
        project=project, number=2, status="ready", classes=version.classes, parent=version,
        data_counts={"seen_annotation_ids": [later.pk]},
    )  # fmt: skip
    type(later).objects.filter(pk__in=[a.pk for a in learnt]).update(consumed_by=version)
    assert {a.pk for a in learnt_annotations(v2)} == {a.pk for a in learnt[:3]} | {later.pk}

    html = alice_client.get(reverse("project-metrics", args=[project.pk])).content.decode()
    assert "Corrections stick" in html
    row = html.split('data-version="1"')[1].split("</tr>")[0]
    assert "0.666" in row and "2 of 3" in row  # rounded down: never more than was kept

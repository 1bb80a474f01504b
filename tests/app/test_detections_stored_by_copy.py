"""A scoring run's detections go into the database by COPY on PostgreSQL (seconds, not minutes, for
a gigapixel scene's rows) and by batched INSERTs elsewhere: both store exactly the same rows."""

from __future__ import annotations

import json

import pytest
from django.db import connection

from labeling.models import Detection, Project, ScoringRun
from labeling.scoring.results import (
    copy_detections,
    insert_detections,
    insert_detections_in_batches,
)


def _rows(run, n):
    for i in range(n):
        kind = "window" if i % 3 else "merged"
        probs = {"car": round(0.001 * (i % 1000), 4), "boat": 0.25} if kind == "window" else {}
        yield (run.pk, kind, ("car", "boat")[i % 2], 0.5 + (i % 500) / 1000, i, 2 * i, 32, 32,
               json.dumps(probs))  # fmt: skip


def _stored(run):
    return sorted(
        Detection.objects.filter(run=run).values_list(
            "kind", "label", "score", "x", "y", "w", "h", "probs"
        ),
        key=lambda r: r[3],
    )


@pytest.fixture
def two_runs(db):
    from labeling.models import ModelVersion, Scene

    project = Project.objects.create(name="copy")
    scene = Scene.objects.create(project=project, name="s", width=64, height=64)
    version = ModelVersion.objects.create(project=project, number=1)
    return [ScoringRun.objects.create(scene=scene, model_version=version) for _ in range(2)]


@pytest.mark.django_db
def test_copy_and_batched_inserts_store_the_same_rows(two_runs):
    assert connection.vendor == "postgresql", "the suite runs on PostgreSQL (make test)"
    by_copy, by_insert = two_runs
    copy_detections(_rows(by_copy, 4500))
    insert_detections_in_batches(_rows(by_insert, 4500))
    assert len(_stored(by_copy)) == 4500
    assert _stored(by_copy) == _stored(by_insert)
    window = Detection.objects.filter(run=by_copy, kind="window", x=1).get()
    assert window.probs == {"car": 0.001, "boat": 0.25} and window.label == "boat"


@pytest.mark.django_db
def test_insert_detections_takes_copy_on_postgresql(two_runs, django_assert_max_num_queries):
    with django_assert_max_num_queries(1):  # one COPY, not one INSERT per batch
        insert_detections(_rows(two_runs[0], 5000))
    assert Detection.objects.filter(run=two_runs[0]).count() == 5000

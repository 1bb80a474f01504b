"""Every JSON answer is strict JSON (issue 38, point 5): a non-finite number that reaches a view
(here a NaN score of a diverged model's detection) leaves as null, never as the NaN token that
JSON.parse and GIS tools refuse; NaN inside a string is left alone."""

from __future__ import annotations

import json

import pytest

from labeling.models import Detection, ModelVersion, Scene, ScoringRun
from labeling.web.strict_json import strict_body


def strict_loads(text):
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_only_non_finite_numbers_are_rewritten():
    assert strict_body(b'{"name": "NaN Infinity"}') is None
    assert strict_body(b"not json NaN") is None
    fixed = strict_body(b'{"s": [NaN, Infinity, -Infinity, 1.5], "t": "NaN"}')
    assert strict_loads(fixed) == {"s": [None, None, None, 1.5], "t": "NaN"}


@pytest.mark.django_db
def test_a_nan_score_reaches_the_client_as_null(alice_client, project):
    scene = Scene.objects.create(project=project, name="s", image_key="k", width=64, height=64)
    version = ModelVersion.objects.create(project=project, number=1, status="ready",
                                          is_current=True, classes=project.class_names)  # fmt: skip
    run = ScoringRun.objects.create(scene=scene, model_version=version, status="done")
    Detection.objects.create(run=run, kind="merged", label="car", score=float("nan"), x=0, y=0,
                             w=32, h=32)  # fmt: skip
    Detection.objects.create(run=run, kind="merged", label="car", score=0.75, x=32, y=0, w=32,
                             h=32)  # fmt: skip
    r = alice_client.get(f"/api/scenes/{scene.pk}/detections")
    assert r.status_code == 200 and "Content-Encoding" not in r
    data = strict_loads(r.content)
    assert sorted(data["score"], key=lambda s: s is None) == [0.75, None]

"""Issue 13 in the app: the review queue page shows the class mix of this cycle's answers and
asks about the window centre; manage.py simulate_review records its per-cycle results, and the
metrics page draws the project's learning curve beside the simulated random baseline."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from review_helpers import json_script, make_scored_scene

from labeling.loop.learning_curve import learning_curve, simulation_series
from labeling.loop.metrics_view import version_rows
from labeling.management.commands import simulate_review
from labeling.models import Annotation, ModelVersion, SimulationRun
from labeling.review.annotations import record_annotation
from labeling.review.queue import DEFAULT_STRATEGY, STRATEGIES

pytestmark = pytest.mark.django_db


@pytest.fixture
def scored(project, storage_dir):
    return make_scored_scene(project, 256, 256, seed=5)


def annotate(project, scene, user, kind, label, x, n=[0]):  # noqa: B006 - a counter
    n[0] += 1
    row, _ = record_annotation(project, scene, user, kind=kind, label=label, x=x, y=0, w=32,
                               h=32, client_id=f"mix-{n[0]}")  # fmt: skip
    return row


def test_queue_page_shows_the_class_mix_of_this_cycles_answers(
    alice_client, alice, project, scored
):
    scene, run = scored
    v1 = run.model_version
    annotate(project, scene, alice, "review", "car", 0)
    annotate(project, scene, alice, "review", "car", 32)
    annotate(project, scene, alice, "false_positive", "boat", 64)  # teaches "negative"
    annotate(project, scene, alice, "review", "negative", 96)
    consumed = annotate(project, scene, alice, "review", "boat", 128)
    Annotation.objects.filter(pk=consumed.pk).update(consumed_by=v1)  # an earlier cycle's
    undone = annotate(project, scene, alice, "review", "boat", 160)
    from labeling.review.annotations import undo

    undo(undone, alice)
    response = alice_client.get(reverse("review-queue", args=[project.pk]))
    html = response.content.decode()
    config = json_script(html, "queue-config")
    assert config["class_mix"] == {"car": 2, "boat": 0, "negative": 2}
    assert '<span id="class-mix-total">4</span>' in html
    assert re.search(r'<li data-class="car">.*?<strong>2</strong>', html)
    assert re.search(r'<li data-class="boat">.*?<strong>0</strong>', html)


def test_queue_page_marks_the_centre_and_says_so(alice_client, project, scored):
    html = alice_client.get(reverse("review-queue", args=[project.pk])).content.decode()
    assert 'id="queue-centre"' in html
    assert "what lies under the window's centre" in html
    # every strategy is offered, the default selected
    for name in STRATEGIES:
        assert f'value="{name}"' in html
    assert re.search(rf'<option value="{DEFAULT_STRATEGY}" selected', html)
    assert json_script(html, "queue-config")["strategy"] == DEFAULT_STRATEGY


def test_simulate_review_records_each_cycle(project, scored):
    scene, _ = scored
    rows = [
        {"cycle": 0, "version": 1, "labels_used": 0, "window": {"f1": 0.5}, "object": {"f1": 0.4}}
    ]
    record = simulate_review.record_simulation(
        project, project, scene, "random", 200, "quick", {"seed": 3}, rows
    )
    assert record.cycles == [simulate_review.simulation_point(rows[0])]
    assert not record.finished and record.simulated_project == ""
    rows.append({"cycle": 1, "version": 2, "labels_used": 200, "window": {"f1": 0.6},
                 "object": {"f1": 0.45},
                 "corrections_stick": {"answered": 200, "kept": 190, "share": 0.95}})  # fmt: skip
    simulate_review.record_simulation_cycles(record, rows, finished=True)
    record.refresh_from_db()
    assert record.finished and record.config == {"seed": 3}
    assert [p["object_f1"] for p in record.cycles] == [0.4, 0.45]
    assert record.cycles[0]["corrections_stick"] is None  # the first model learnt no answer
    assert record.cycles[1] == {"cycle": 1, "version": 2, "labels_used": 200, "object_f1": 0.45,
                                "window_f1": 0.6, "corrections_stick": 0.95}  # fmt: skip
    # API names are stored as mlcore names
    other = simulate_review.record_simulation(
        project, project, scene, "top_score", 10, "", None, rows[:1]
    )
    assert other.strategy == "top_score"


def add_simulation(project, strategy, f1s, per_cycle=200):
    return SimulationRun.objects.create(
        project=project,
        strategy=strategy,
        per_cycle=per_cycle,
        cycles=[
            {"cycle": c, "labels_used": c * per_cycle, "object_f1": f, "window_f1": None}
            for c, f in enumerate(f1s)
        ],
        finished=True,
    )


def test_learning_curve_groups_runs_per_strategy(project, scored):
    add_simulation(project, "least_confidence", [0.3, 0.35, 0.4])
    add_simulation(project, "random", [0.3, 0.32, 0.38])
    add_simulation(project, "random", [0.3, 0.36])  # unfinished: two points
    series = simulation_series(project)
    assert [s["strategy"] for s in series] == ["random", "least_confidence"]  # baseline first
    random = series[0]
    assert random["baseline"] and random["runs"] == 2
    assert [p["labels"] for p in random["points"]] == [0, 200, 400]
    assert [p["runs"] for p in random["points"]] == [2, 2, 1]
    assert random["points"][1] == {"cycle": 1, "labels": 200, "object_f1": 0.34, "low": 0.32,
                                   "high": 0.36, "runs": 2}  # fmt: skip
    curve = learning_curve(project, version_rows(project))
    assert curve["has_baseline"]
    assert [p["version"] for p in curve["project"]] == [1]


def test_metrics_page_shows_the_learning_curve_beside_the_random_baseline(
    alice_client, alice, project, scored
):
    scene, run = scored
    url = reverse("project-metrics", args=[project.pk])
    html = alice_client.get(url).content.decode()
    curve = json_script(html, "learning-curve-data")
    assert curve["simulations"] == [] and not curve["has_baseline"]
    assert "--strategy random</code> records one" in html
    # a second cycle of the project: v2 learnt 1 label
    v1 = run.model_version
    a = annotate(project, scene, alice, "review", "car", 0)
    v2 = ModelVersion.objects.create(project=project, number=2, status="ready", classes=v1.classes,
                                     parent=v1, data_counts={"annotations_used": 1})  # fmt: skip
    Annotation.objects.filter(pk=a.pk).update(consumed_by=v2)
    add_simulation(project, "random", [0.3, 0.33])
    add_simulation(project, "diverse_uncertainty", [0.3, 0.37])
    html = alice_client.get(url).content.decode()
    curve = json_script(html, "learning-curve-data")
    assert curve["project"][0]["version"] == 1 and curve["project"][0]["labels"] == 0
    assert curve["project"][0]["object_f1"] == version_rows(project)[0]["object"]["f1"]
    assert [s["strategy"] for s in curve["simulations"]] == ["random", "diverse_uncertainty"]
    assert curve["has_baseline"]
    assert 'id="learning-curve"' in html and "learning_curve.js" in html
    assert re.search(r'<tr data-strategy="random">.*?baseline.*?200: 0\.330', html, re.S)
    assert "The random strategy is the baseline" in html

"""A cycle whose new version is worse than the current model on held-out data (the calibration
scene both are calibrated on) beyond ``PROMOTION_MARGIN`` is kept, ready, but not made current;
the dashboard says why with both figures and offers to make it current by hand, which a person
can do (its annotations are consumed then). Real ONNX models scored by ONNX Runtime on a real
calibration scene in the project's canvas set, PostgreSQL, the real pages and API."""

from __future__ import annotations

import pytest
from django.urls import reverse
from loop_helpers import finished_cycle, save_calibration_scene
from review_helpers import make_scored_scene

from labeling.loop import cycle
from labeling.models import Annotation, ScoringRun
from labeling.review.scene_labels import scene_labels

pytestmark = pytest.mark.django_db


@pytest.fixture
def current(project, storage_dir):
    scene, run = make_scored_scene(project, 128, 160, seed=5)
    save_calibration_scene(project)
    return scene, run


def test_a_worse_version_is_kept_not_current_and_the_page_says_why(
    alice_client, alice, project, current
):
    scene, run1 = current
    v1 = run1.model_version
    # The same detector with its classes swapped: every red car is called a boat.
    swapped = ["boat", "car", project.negative_class]
    v2 = finished_cycle(project, scene, run1, v1, swapped, alice)
    held = v2.metrics["held_out"]
    assert held["current_version"] == 1 and held["current"] > held["new"] + 0.5
    # The calibration figures the dashboard's estimate reads are recorded on the version.
    assert set(v2.metrics["calibration"]["precision"]) == {"car", "boat"}
    assert set(v2.metrics["calibration"]["recall"]) == {"car", "boat"}

    assert cycle.after_scoring(v2) == "ready"
    v1.refresh_from_db()
    v2.refresh_from_db()
    assert v1.is_current and not v2.is_current and v2.status == "ready"
    decision = v2.metrics["promotion"]
    assert not decision["promoted"] and decision["margin"] == 0.01
    assert (decision["new"], decision["current"]) == (held["new"], held["current"])
    # What people see and export stays the current model's: the labels come from v1's run.
    assert {b["run"] for b in scene_labels(scene) if b["source"] == "model"} == {run1.pk}
    # Its answer was not learnt by the current model: it waits for the next retrain.
    assert Annotation.objects.filter(consumed_by__isnull=False).count() == 0
    assert len(cycle.pending_annotations(project)) == 1

    html = alice_client.get(reverse("project-dashboard", args=[project.pk])).content.decode()
    assert "Model v2 was not made current" in html
    assert f"{held['new']:.3f}" in html and f"{held['current']:.3f}" in html
    button = reverse("api-model-current", args=[project.pk, 2])
    assert f'action="{button}"' in html and "Make v2 current anyway" in html
    # Its int8 copy's check (calibration scene, fp32 thresholds) is on the version and the page.
    check = v2.metrics["calibration"]["int8"]
    assert check["kept"] == (check["int8_f1"] >= check["fp32_f1"] - check["margin"])
    assert ("int8 copy: F1" if check["kept"] else "no int8 copy: it lost") in html

    # A person decides otherwise: the button makes it current and its answer consumed.
    r = alice_client.post(button, {"next": f"/projects/{project.pk}/"})
    assert r.status_code == 302
    v2.refresh_from_db()
    assert v2.is_current and v2.metrics["promotion"]["by_hand"] == "alice"
    assert Annotation.objects.get().consumed_by_id == v2.pk
    run2 = ScoringRun.objects.get(model_version=v2)
    assert {b["run"] for b in scene_labels(scene) if b["source"] == "model"} == {run2.pk}
    html = alice_client.get(reverse("project-dashboard", args=[project.pk])).content.decode()
    assert "was not made current" not in html and "made current by alice" in html


def test_a_version_as_good_is_promoted_and_the_margin_is_a_setting(
    alice, project, current, settings
):
    scene, run1 = current
    v1 = run1.model_version
    v2 = finished_cycle(project, scene, run1, v1, project.class_names, alice)
    assert v2.metrics["held_out"]["new"] == v2.metrics["held_out"]["current"]
    assert cycle.after_scoring(v2) == "ready"
    v2.refresh_from_db()
    assert v2.is_current and v2.metrics["promotion"]["promoted"]
    assert Annotation.objects.get().consumed_by_id == v2.pk

    # With a margin wider than any F1 difference even the swapped detector is promoted.
    settings.PROMOTION_MARGIN = 1.0
    v3 = finished_cycle(project, scene, run1, v2, ["boat", "car", project.negative_class], alice)
    assert cycle.after_scoring(v3) == "ready"
    v3.refresh_from_db()
    assert v3.is_current and v3.metrics["promotion"]["margin"] == 1.0

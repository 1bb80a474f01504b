"""labeling.scoring.results.store_scoring_result: the grid in storage, detections (raw windows >=
0.5 with their probabilities, NMS-merged boxes at the project threshold), metrics against ground
truth,
and a retried run replacing only its own rows. Scenes are scored for real through ONNX Runtime
(tests/review_helpers.py)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from labeling.models import Detection, ScoringRun
from labeling.projects.storage_keys import get_storage
from labeling.scoring.results import WINDOW_FLOOR, load_grid, store_scoring_result
from mlcore.inference.postprocess import nms, window_hits
from mlcore.inference.scoring import ScoreGrid
from tests.review_helpers import make_scored_scene

pytestmark = pytest.mark.django_db


@pytest.fixture
def scored(project, storage_dir):
    return make_scored_scene(project, 256, 256, seed=2)


def test_grid_round_trips_through_storage(scored):
    _, run = scored
    assert run.status == "done" and run.grid_key.endswith(f"runs/{run.pk}/grid.npz")
    assert get_storage().exists(run.grid_key)
    grid = load_grid(run)
    assert grid.classes == ["car", "boat", "negative"] and grid.window == 32 and grid.step == 16
    assert run.n_windows == grid.probs.shape[0] * grid.probs.shape[1] == 15 * 15
    assert np.allclose(grid.probs.sum(-1), 1, atol=1e-5)
    assert run.timings["test_helper"] is True and run.finished_at is not None


def test_window_detections_are_every_positive_window_above_the_floor(scored):
    _, run = scored
    grid = load_grid(run)
    rows = list(Detection.objects.filter(run=run, kind="window"))
    flat = grid.probs.reshape(-1, 3)
    positive_best = flat[:, :2].max(1)
    assert len(rows) == int((positive_best >= WINDOW_FLOOR).sum()) > 0
    for d in rows:
        i, j = list(grid.ys).index(d.y), list(grid.xs).index(d.x)
        p = grid.probs[i, j]
        assert d.w == d.h == 32
        assert d.label == ["car", "boat"][int(p[:2].argmax())]
        assert d.score == pytest.approx(float(p[:2].max()), abs=1e-6)
        assert d.probs == {c: pytest.approx(float(v), abs=1e-4) for c, v in zip(grid.classes, p)}


def test_merged_detections_are_nms_at_the_project_threshold(project, scored):
    scene, run = scored
    grid = load_grid(run)
    expected = nms(
        window_hits(grid, {"car": 0.9, "boat": 0.9}, "negative"),
        iou=project.nms_iou_for(grid.window, grid.step),
    )
    rows = list(Detection.objects.filter(run=run, kind="merged").order_by("-score", "id"))
    assert len(rows) == len(expected) > 0
    assert all(d.score >= 0.9 for d in rows)
    truth = json.loads(get_storage().read(scene.ground_truth_key))
    # The colour model finds every square: each object has a merged box of its class on it.
    for box in truth:
        cx, cy = box["x"] + 16, box["y"] + 16
        assert any(
            d.label == box["label"] and d.x <= cx <= d.x + d.w and d.y <= cy <= d.y + d.h
            for d in rows
        ), box


def test_metrics_against_ground_truth(scored):
    scene, run = scored
    m = run.metrics
    truth = json.loads(get_storage().read(scene.ground_truth_key))
    assert m["against"] == "ground_truth"
    assert m["detections"] == {
        c: Detection.objects.filter(run=run, kind="merged", label=c).count()
        for c in ("car", "boat")
    }
    overall = m["object"]["overall"]
    assert overall["tp"] + overall["fn"] == len(truth)
    assert overall["recall"] == pytest.approx(1.0)
    assert "matches" not in m["object"]
    assert m["window"]["windows"] == run.n_windows
    assert m["window"]["classes"] == ["car", "boat", "negative"]


def test_without_ground_truth_only_counts(project, storage_dir):
    scene, run = make_scored_scene(project, 128, 128, seed=3)
    scene.ground_truth_key = ""
    scene.save()
    again = ScoringRun.objects.create(scene=scene, model_version=run.model_version)
    store_scoring_result(again, load_grid(run))
    again.refresh_from_db()
    assert set(again.metrics) == {"detections", "thresholds", "threshold_source"}


def test_retried_run_replaces_only_its_own_rows(project, scored):
    scene, run = scored
    other_scene, other_run = make_scored_scene(project, 128, 128, seed=4)
    before_other = Detection.objects.filter(run=other_run).count()
    grid = load_grid(run)
    # A grid where nothing is an object: the retried run ends with no detections.
    empty = ScoreGrid(grid.ys, grid.xs, np.tile([0.0, 0.0, 1.0], grid.probs.shape[:2] + (1,)),
                      grid.classes, grid.window, grid.step)  # fmt: skip
    store_scoring_result(run, empty, {"retry": 1})
    run.refresh_from_db()
    assert Detection.objects.filter(run=run).count() == 0
    assert run.metrics["detections"] == {"car": 0, "boat": 0}
    assert run.metrics["object"]["overall"]["tp"] == 0
    assert run.timings["retry"] == 1 and run.timings["test_helper"] is True
    assert Detection.objects.filter(run=other_run).count() == before_other


def test_class_threshold_override(project, scored):
    scene, run = scored
    project.class_thresholds = {"boat": 0.999999}
    project.save()
    again = ScoringRun.objects.create(scene=scene, model_version=run.model_version)
    store_scoring_result(again, load_grid(run))
    merged = Detection.objects.filter(run=again, kind="merged")
    assert all(d.score >= 0.999999 for d in merged.filter(label="boat"))
    assert (
        merged.filter(label="boat").count()
        < Detection.objects.filter(run=run, kind="merged", label="boat").count()
    )
    # Raw windows keep the 0.5 floor whatever the threshold.
    assert (
        Detection.objects.filter(run=again, kind="window").count()
        == Detection.objects.filter(run=run, kind="window").count()
    )


def test_a_run_uses_the_versions_calibrated_thresholds(project, scored):
    scene, run = scored
    assert run.metrics["thresholds"] == {"car": 0.9, "boat": 0.9}  # a version without any
    assert run.metrics["threshold_source"] == "project"
    version = run.model_version
    version.thresholds = {"car": 0.6, "boat": 0.75}
    version.save()
    again = ScoringRun.objects.create(scene=scene, model_version=version)
    store_scoring_result(again, load_grid(run))
    again.refresh_from_db()
    assert again.metrics["thresholds"] == {"car": 0.6, "boat": 0.75}
    assert again.metrics["threshold_source"] == "calibrated"
    merged = Detection.objects.filter(run=again, kind="merged")
    assert min(d.score for d in merged.filter(label="car")) >= 0.6
    assert min(d.score for d in merged.filter(label="boat")) >= 0.75
    expected = nms(
        window_hits(load_grid(run), {"car": 0.6, "boat": 0.75}, "negative"),
        iou=project.nms_iou_for(32, 16),
    )
    assert merged.count() == len(expected)
    # The published 0.9 stays a choice of the project.
    project.use_calibrated_thresholds = False
    project.save()
    scene.refresh_from_db()
    fixed = ScoringRun.objects.create(scene=scene, model_version=version)
    store_scoring_result(fixed, load_grid(run))
    fixed.refresh_from_db()
    assert fixed.metrics["thresholds"] == {"car": 0.9, "boat": 0.9}
    assert fixed.metrics["threshold_source"] == "project"


def test_run_metrics_hold_coco_ap(scored):
    _, run = scored
    coco = run.metrics["coco"]
    # The colour model finds every square: AP@0.5 is high, and AP@[.5:.95] cannot exceed it.
    assert 0.5 < coco["ap50"] <= 1.0 and 0 <= coco["ap"] <= coco["ap50"]
    assert set(coco["per_class"]) == {"car", "boat"} and coco["score_floor"] == 0.05
    assert coco["library"] == "faster-coco-eval"


def test_window_truth_uses_negative_tiles_too(project, storage_dir):
    """A negative tile pasted over a car's centre makes the windows there negative in the stored
    window metrics (the one mlcore.eval.metrics.window_truth, given every box)."""
    from labeling.scoring.results import compute_metrics
    from labeling.scoring.thresholds import version_thresholds

    scene, run = make_scored_scene(project, 128, 128, seed=3)
    grid = load_grid(run)
    truth = json.loads(get_storage().read(scene.ground_truth_key))
    car = next(b for b in truth if b["label"] == "car")
    cover = dict(car, id="cover", label="negative", order=99, visible=1.0)
    get_storage().write(scene.ground_truth_key, json.dumps(truth + [cover]).encode())
    thresholds, _ = version_thresholds(project, run.model_version, grid.classes)
    merged = nms(window_hits(grid, thresholds, "negative"), iou=0.129)
    covered = compute_metrics(project, scene, grid, merged, thresholds)
    support = covered["window"]["per_class"]["car"]["support"]
    assert support < run.metrics["window"]["per_class"]["car"]["support"]


def test_ranked_detections_keep_the_best_windows_per_class(project, scored, monkeypatch):
    import labeling.scoring.results as results

    _, run = scored
    grid = load_grid(run)
    everything = results.ranked_detections(project, grid)
    assert min(everything.score) >= results.AP_FLOOR
    monkeypatch.setattr(results, "AP_MAX_WINDOWS", 5)
    capped = results.ranked_detections(project, grid)
    assert 0 < len(capped.x) < len(everything.x)
    for c in (0, 1):  # each class keeps its 5 best windows, so its best box survives
        assert (
            capped.score[capped.label == c].max() == everything.score[everything.label == c].max()
        )


def test_refresh_metrics_adds_ap_to_an_old_run_without_rescoring(project, scored):
    from django.core.management import call_command

    from labeling.scoring.results import refresh_metrics

    _, run = scored
    stored = dict(run.metrics)
    rows = Detection.objects.filter(run=run).count()
    run.metrics = {k: stored[k] for k in ("detections", "window", "object")}  # before AP
    run.save(update_fields=["metrics"])
    fresh = refresh_metrics(run)
    assert fresh["coco"] == stored["coco"] and fresh["thresholds"] == stored["thresholds"]
    assert fresh["object"] == stored["object"]
    assert fresh["window"]["confusion"] == stored["window"]["confusion"]
    assert Detection.objects.filter(run=run).count() == rows
    out = io.StringIO()
    call_command("refresh_metrics", project.name, stdout=out)
    assert f"run {run.pk} " in out.getvalue() and "COCO AP@0.5" in out.getvalue()

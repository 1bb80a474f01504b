"""One window truth everywhere: the stored run metrics (labeling.scoring.results), the metrics
page's confusion matrix (labeling.loop.metrics_view.run_confusion) and the simulated reviewer
(simulate_review's Oracle) agree on a hand-made scene where tiles cover each other, and a
negative tile pasted over a car's centre makes the windows there negative in all three."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labeling.loop.metrics_view import predicted_labels, run_confusion
from labeling.models import ModelVersion, Scene, ScoringRun
from labeling.projects.storage_keys import get_storage, scene_prefix
from labeling.scoring.results import store_scoring_result
from labeling.scoring.thresholds import run_thresholds
from mlcore.eval.metrics import window_metrics, window_truth
from mlcore.eval.oracle import Oracle
from mlcore.inference.scoring import ScoreGrid

pytestmark = pytest.mark.django_db

CLASSES = ["car", "boat", "negative"]

# 128 x 128 px scene, 32 px windows at step 16: window centres at 16, 32, ..., 112.
TRUTH = [
    # A car whose centre a negative tile covers (pasted later): the car's centre windows are
    # negative, its top-left corner window (centre (16, 16)) is still car.
    {"id": "car-under", "label": "car", "x": 0, "y": 0, "w": 40, "h": 40, "order": 0,
     "visible": 0.4},
    {"id": "neg-over", "label": "negative", "x": 24, "y": 24, "w": 32, "h": 32, "order": 1,
     "visible": 1.0},
    # A boat with a car pasted on top of its right half.
    {"id": "boat", "label": "boat", "x": 64, "y": 64, "w": 40, "h": 40, "order": 2,
     "visible": 0.5},
    {"id": "car-over", "label": "car", "x": 88, "y": 64, "w": 32, "h": 48, "order": 3,
     "visible": 1.0},
    # A negative tile under a car: the car wins where it lies on top.
    {"id": "neg-under", "label": "negative", "x": 64, "y": 0, "w": 48, "h": 48, "order": 4,
     "visible": 0.3},
    {"id": "car-top", "label": "car", "x": 72, "y": 8, "w": 24, "h": 24, "order": 5,
     "visible": 1.0},
]  # fmt: skip


def hand_grid(seed=0) -> ScoreGrid:
    starts = np.arange(0, 128 - 32 + 1, 16)
    probs = np.random.default_rng(seed).dirichlet([1, 1, 1], (len(starts), len(starts)))
    return ScoreGrid(starts, starts, probs.astype(np.float32), CLASSES, 32, 16)


@pytest.fixture
def occluded_run(project, storage_dir):
    storage = get_storage()
    scene = Scene.objects.create(project=project, name="occluded", image_key="x", width=128,
                                 height=128)  # fmt: skip
    scene.ground_truth_key = f"{scene_prefix(scene)}/ground_truth.json"
    storage.write(scene.ground_truth_key, json.dumps(TRUTH).encode())
    scene.save()
    version = ModelVersion.objects.create(project=project, number=1, status="ready",
                                          is_current=True, classes=CLASSES,
                                          thresholds={"car": 0.4, "boat": 0.5})  # fmt: skip
    run = ScoringRun.objects.create(scene=scene, model_version=version, status="running")
    grid = hand_grid()
    store_scoring_result(run, grid)
    run.refresh_from_db()
    return run, grid


def test_results_metrics_page_and_simulated_reviewer_agree(project, occluded_run):
    run, grid = occluded_run
    thresholds = run_thresholds(run)
    assert thresholds == {"car": 0.4, "boat": 0.5}  # the version's calibrated thresholds
    predicted = predicted_labels(grid, project, thresholds)

    # The simulated reviewer answers each window as the queue would show it.
    oracle = Oracle(TRUTH, project.negative_class, project.class_names)
    by_oracle = np.array(
        [[CLASSES.index(oracle.label(int(x), int(y), 32, 32)) for x in grid.xs] for y in grid.ys]
    )
    oracle_confusion = window_metrics(by_oracle, predicted, CLASSES)["confusion"]

    stored = run.metrics["window"]["confusion"]  # labeling.scoring.results, when the run was stored
    page = run_confusion(run)  # the metrics page
    assert page["against"] == "ground_truth" and page["thresholds"] == thresholds
    assert stored == page["matrix"] == oracle_confusion

    # The one definition, given every box: hand-checked windows.
    truth = window_truth(grid.ys, grid.xs, 32, TRUTH, CLASSES, "negative")
    assert np.array_equal(truth, by_oracle)
    at = {(int(x), int(y)): CLASSES[truth[i, j]] for i, y in enumerate(grid.ys)
          for j, x in enumerate(grid.xs)}  # fmt: skip
    assert at[(0, 0)] == "car"  # centre (16, 16): the car, not yet covered
    assert at[(16, 16)] == "negative"  # centre (32, 32): the negative tile over the car
    assert at[(48, 48)] == "boat"  # centre (64, 64): the boat's uncovered corner
    assert at[(80, 64)] == "car"  # centre (96, 80): the car pasted over the boat
    assert at[(64, 0)] == "car"  # centre (80, 16): the car over a negative tile
    assert at[(80, 16)] == "negative"  # centre (96, 32): the negative tile around that car

    # Positive boxes only (the old results code) would call the covered car's centre a car.
    positives_only = [b for b in TRUTH if b["label"] != "negative"]
    old = window_truth(grid.ys, grid.xs, 32, positives_only, CLASSES, "negative")
    assert CLASSES[old[1, 1]] == "car" and not np.array_equal(old, truth)

"""Objects of any size (issue 34.3): a project whose objects are 64 px on its scenes (model
window 32) has its scenes scored by the real scoring job (RQ worker, Spark local) in 64 px windows
resized to 32, stores 64 px detections where the objects are, feeds the viewer 64 px boxes, and
trains on its reviewed windows cut at 64 px and resized, as scoring shows them."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from loop_helpers import Ctx, build_small_project, run_workers
from review_helpers import colour_onnx_model, json_script, scene_pixels

from labeling.jobs.enqueue import enqueue
from labeling.models import Detection, ModelVersion, Scene, ScoringRun
from labeling.projects.storage_keys import get_storage, model_prefix, scene_prefix
from labeling.review.annotations import record_annotation
from mlcore.data.windows import grid_positions, resize_windows
from mlcore.ingest.scenes import NpyScene
from workers.loop_jobs import CanvasDir, feed_corrections

SIZE = 64  # the objects' size on the scene; the model's window stays 32


@pytest.fixture
def loop_settings(settings, storage_dir):
    settings.SPARK_MASTER = "local[2]"
    return settings


def iou(a, b) -> float:
    ix = max(0.0, min(a["x"] + a["w"], b["x"] + b["w"]) - max(a["x"], b["x"]))
    iy = max(0.0, min(a["y"] + a["h"], b["y"] + b["h"]) - max(a["y"], b["y"]))
    inter = ix * iy
    return inter / (a["w"] * a["h"] + b["w"] * b["h"] - inter)


def scene_of_large_objects(project, height=384, width=448, seed=4):
    pixels, truth = scene_pixels(height, width, seed, objects=6, size=SIZE)
    for box in truth:
        box["label"] = project.class_names[box["label"]]
    scene = Scene.objects.create(project=project, name="large objects", image_key="-",
                                 width=width, height=height)  # fmt: skip
    storage = get_storage()
    buffer = io.BytesIO()
    np.save(buffer, pixels)
    scene.pixels_key = f"{scene_prefix(scene)}/pixels.npy"
    storage.write(scene.pixels_key, buffer.getvalue())
    scene.ground_truth_key = f"{scene_prefix(scene)}/ground_truth.json"
    storage.write(scene.ground_truth_key, json.dumps(truth).encode())
    scene.save()
    return scene, truth


@pytest.mark.django_db(transaction=True)
def test_a_project_of_64_px_objects_stores_64_px_detections_on_them(
    redis_conn, loop_settings, project, alice_client
):
    project.object_size = SIZE
    project.save()
    scene, truth = scene_of_large_objects(project)
    version = ModelVersion.objects.create(project=project, number=1, status="ready",
                                          is_current=True, classes=project.class_names)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        model = colour_onnx_model(Path(tmp) / "model.onnx", project.class_names, 32)
        version.model_key = f"{model_prefix(version)}/model.onnx"
        get_storage().write(version.model_key, model.read_bytes())
    version.save()
    run = ScoringRun.objects.create(scene=scene, model_version=version, status="queued")
    enqueue("score", "workers.score_jobs.score_scene", project=project, run_id=run.pk)
    run_workers("score")
    run.refresh_from_db()
    assert run.status == "done", run.error

    # Windows of 64 scene pixels at a step of 16 * 64 / 32 = 32.
    step = 32
    assert project.scene_score_step == step
    rows, cols = grid_positions(scene.height, SIZE, step), grid_positions(scene.width, SIZE, step)
    assert run.n_windows == len(rows) * len(cols)
    merged = list(Detection.objects.filter(run=run, kind="merged").values())
    assert merged
    assert {(d["w"], d["h"]) for d in merged} == {(SIZE, SIZE)}
    windows = list(Detection.objects.filter(run=run, kind="window").values("x", "y", "w", "h"))
    assert windows and {(d["w"], d["h"]) for d in windows} == {(SIZE, SIZE)}
    assert {d["x"] for d in windows} <= set(cols.tolist())
    for box in truth:  # every object found, with its class, where it is
        best = max((d for d in merged if d["label"] == box["label"]), key=lambda d: iou(d, box))
        assert iou(best, box) >= 0.5, (box, best)
    # The metrics against ground truth compare scene pixels with scene pixels.
    assert run.metrics["object"]["overall"]["f1"] == 1.0

    # The viewer draws them and places a click's box at the object size.
    feed = alice_client.get(f"/api/scenes/{scene.pk}/detections?kind=merged").json()
    assert feed["window"] == SIZE and set(feed["w"]) == {SIZE}
    page = alice_client.get(f"/scenes/{scene.pk}/")
    assert page.status_code == 200
    assert json_script(page.content.decode(), "viewer-config")["window"] == SIZE


@pytest.mark.django_db(transaction=True)
def test_a_reviewed_window_is_cut_at_the_object_size_and_resized(
    redis_conn, loop_settings, project, alice
):
    scene = build_small_project(project)  # canvases of 32 px windows, a 256 px scene
    project.object_size = SIZE
    project.save()
    row, _ = record_annotation(project, scene, alice, kind="review", label="boat", x=40, y=72,
                               w=SIZE, h=SIZE, client_id="large-1", source="queue")  # fmt: skip
    version = ModelVersion.objects.create(project=project, number=2, status="training")
    feed_corrections(Ctx(), project.pk, version.pk)

    reader = NpyScene(get_storage(), scene.pixels_key)
    pixels = reader.read_rows(0, reader.height)
    expected = resize_windows(pixels[None, 72 : 72 + SIZE, 40 : 40 + SIZE], 32)[0]
    version.refresh_from_db()
    name, cy, cx = version.data_counts["correction_samples"][f"ann-{row.pk}"]
    canvas = {c.name: c for c in CanvasDir(project).load().canvases}[name]
    np.testing.assert_array_equal(canvas.array[cy : cy + 32, cx : cx + 32], expected)
    # Not the 32 px window at the box's centre that a project of 32 px objects trains on.
    assert not np.array_equal(expected, pixels[88 : 88 + 32, 56 : 56 + 32])

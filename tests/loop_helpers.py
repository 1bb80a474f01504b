"""What the loop tests share: a small project (synthetic 32-px tiles, a 256x256 scene with its
ground truth, canvases), answers on it, RQ workers run in burst mode, and a cycle's version
finished by hand with a colour-detector model (for the promotion tests)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import django_rq
import numpy as np
from review_helpers import colour_onnx_model, scene_pixels
from rq import SimpleWorker

from labeling.jobs.enqueue import enqueue
from labeling.models import Annotation, Dataset, ModelVersion, Scene, ScoringRun
from labeling.projects.storage_keys import get_storage, model_prefix, project_prefix
from labeling.review.annotations import record_annotation
from labeling.scoring.results import load_grid, store_scoring_result
from mlcore.data.canvases import CanvasSet
from workers import loop_jobs

SPARK_MASTER = "local[2]"
TILE = 32
CLASSES = ["car", "boat", "negative"]


def synthetic_tiles(label: int, n: int, rng) -> np.ndarray:
    """Tiles a tiny network can tell apart: a strong colour per class plus noise."""
    base = np.array([[200, 40, 40], [40, 60, 200], [90, 160, 90]][label], dtype=np.int16)
    noise = rng.integers(-40, 40, size=(n, TILE, TILE, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def add_dataset(project, per_class: int = 12, seed: int = 0) -> Dataset:
    from mlcore.data.datasets import LabelledImages

    rng = np.random.default_rng(seed)
    images = np.concatenate([synthetic_tiles(k, per_class, rng) for k in range(3)])
    labels = np.repeat(np.arange(3), per_class)
    ids = [f"syn/{k}" for k in range(len(images))]
    dataset = Dataset.objects.create(project=project, name="synthetic", source="test")
    key = f"{project_prefix(project)}/datasets/{dataset.pk}/images.npz"
    path = get_storage().local_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    LabelledImages(images, labels, CLASSES, ids).save_npz(path)
    Dataset.objects.filter(pk=dataset.pk).update(status="ready", storage_key=key)
    return dataset


def add_scene(project, size: int = 256, seed: int = 1) -> tuple[Scene, list[dict]]:
    """A size x size scene of 32-px tiles on a grid, with its ground truth."""
    from mlcore.ingest.scenes import array_to_npy

    rng = np.random.default_rng(seed)
    image = np.zeros((size, size, 3), dtype=np.uint8)
    gt = []
    order = 0
    for y in range(0, size, TILE):
        for x in range(0, size, TILE):
            label = int(rng.integers(0, 3))
            image[y : y + TILE, x : x + TILE] = synthetic_tiles(label, 1, rng)[0]
            gt.append({"id": f"gt{order}", "label": CLASSES[label], "x": x, "y": y, "w": TILE,
                       "h": TILE, "order": order, "visible": 1.0})  # fmt: skip
            order += 1
    scene = Scene.objects.create(project=project, name="grid scene", image_key="-")
    storage = get_storage()
    pixels_key = f"{project_prefix(project)}/scenes/{scene.pk}/pixels.npy"
    gt_key = f"{project_prefix(project)}/scenes/{scene.pk}/ground_truth.json"
    path = storage.local_path(pixels_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    array_to_npy(image, path)
    storage.write(gt_key, json.dumps(gt).encode())
    Scene.objects.filter(pk=scene.pk).update(
        pixels_key=pixels_key, ground_truth_key=gt_key, width=size, height=size
    )
    scene.refresh_from_db()
    return scene, gt


def run_workers(*queues: str) -> None:
    """A real RQ worker in burst mode (in this process) over the given queues, in order."""
    names = queues or ("default", "train", "score")
    qs = [django_rq.get_queue(n) for n in names]
    SimpleWorker(qs, connection=qs[0].connection).work(burst=True)


def build_small_project(project) -> Scene:
    add_dataset(project)
    scene, _ = add_scene(project)
    enqueue(
        "build_canvases",
        "workers.loop_jobs.build_canvases",
        project=project,
        project_id=project.pk,
        canvas_size=128,
        canvases_per_class=1,
    )
    run_workers("default")
    return scene


def annotate(project, scene, user, n: int = 4) -> list[Annotation]:
    """Reviewer answers on the scene's top-left windows (a missed car, a false positive...)."""
    rows = []
    kinds = [("false_negative", "car"), ("false_positive", "boat"), ("wrong_class", "boat"),
             ("review", "negative")]  # fmt: skip
    for i in range(n):
        kind, label = kinds[i % len(kinds)]
        rows.append(
            Annotation.objects.create(
                project=project,
                scene=scene,
                user=user,
                kind=kind,
                label=label,
                x=TILE * i,
                y=0,
                w=TILE,
                h=TILE,
                source="test",
            )  # fmt: skip
        )
    return rows


class Ctx:
    def __init__(self):
        self.lines = []

    def log(self, line):
        self.lines.append(line)

    def progress(self, done, total, message=""):
        pass


def save_calibration_scene(project):
    """The project's canvas set with a held-out calibration scene of red cars and green boats."""
    pixels, truth = scene_pixels(160, 192, seed=11, size=project.window_size)
    for box in truth:
        box["label"] = project.class_names[box["label"]]
    cset = CanvasSet(project.class_names, calibration=(pixels, truth))
    loop_jobs.CanvasDir(project).save(cset)


def finished_cycle(project, scene, like, parent, classes, alice) -> ModelVersion:
    """A retrain cycle's version (fine-tuned from ``parent``, as start_cycle records it) at the
    end of its chain: trained on one answer, exported and calibrated by the export job's
    calibrate step (the model file: the colour detector with ``classes`` in that order), every
    scene scored."""
    answer, _ = record_annotation(project, scene, alice, kind="false_negative", label="car",
                                  x=0, y=0, w=32, h=32)  # fmt: skip
    number = project.model_versions.count() + 1
    version = ModelVersion.objects.create(
        project=project, number=number, status="training", parent=parent, classes=classes,
        data_counts={"seen_annotation_ids": [answer.pk]},
        train_config={"finetune_from": parent.number if parent else None},
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = colour_onnx_model(Path(tmp) / "model.onnx", classes, project.window_size)
        loop_jobs.calibrate(Ctx(), version, path)
        version.model_key = f"{model_prefix(version)}/model.onnx"
        get_storage().write(version.model_key, path.read_bytes())
    version.status = "scoring"
    version.save()
    run = ScoringRun.objects.create(scene=scene, model_version=version, status="running")
    store_scoring_result(run, load_grid(like))
    return version

"""Scored scenes for the review tests (API, queue, browser) without training a model.

``make_scored_scene(project)`` goes through the real code paths: scene pixels as ``.npy`` in the
configured storage, an ONNX model in the project's format scored by ONNX Runtime
(``mlcore.inference.scoring.score_scene``), and ``labeling.scoring.results.store_scoring_result``
writing the grid, the detections and the metrics against the scene's ground truth.

The model is a colour detector built with onnx.helper: the mean colour of a window decides its
class (red -> the first positive class, green -> the second, grey -> negative), so objects are
found with high scores, windows half on an object are uncertain, and the review queue has
something to rank. Use it with the ``storage_dir`` fixture (STORAGE_URL in a tmp dir)."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import numpy as np
from spark_helpers import save_window_model

RED = (220, 40, 40)
GREEN = (40, 200, 40)


def colour_onnx_model(path: Path, classes, window: int = 32, sharpness: float = 0.05) -> Path:
    """uint8 NHWC ``images`` -> ``probs``: softmax of linear logits of the window's mean colour.
    Positive class 0 follows red - blue, positive class 1 green - blue, the negative class a
    constant; any further class gets a small constant."""
    from onnx import TensorProto, helper

    n = len(classes)
    weights = np.zeros((3, n), dtype=np.float32)
    bias = np.full(n, -4.0, dtype=np.float32)
    weights[0, 0], weights[2, 0], bias[0] = sharpness, -sharpness, 0.0
    if n >= 3:
        weights[1, 1], weights[2, 1], bias[1] = sharpness, -sharpness, 0.0
    bias[n - 1] = 2.0  # the negative class (last, as Project.class_names orders them)
    nodes = [
        helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["f"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("GlobalAveragePool", ["nchw"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    return save_window_model(
        Path(path), nodes, {"w": weights, "b": bias}, classes, window,
        "colour_window_classifier", "onnx.helper colour test model",
    )  # fmt: skip


def scene_pixels(height: int, width: int, seed: int = 0, objects: int | None = None, size=32):
    """Grey noisy background with red and green squares; returns (pixels, ground truth boxes)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(110, 146, (height, width, 3), dtype=np.uint8)
    if objects is None:
        objects = max(2, (height * width) // (96 * 96))
    truth = []
    cells_y, cells_x = height // (2 * size), width // (2 * size)
    cells = rng.permutation(cells_y * cells_x)[:objects]
    for order, cell in enumerate(cells):
        cy, cx = divmod(int(cell), cells_x)
        y = cy * 2 * size + int(rng.integers(0, size))
        x = cx * 2 * size + int(rng.integers(0, size))
        colour, label = (RED, 0) if order % 2 == 0 else (GREEN, 1)
        pixels[y : y + size, x : x + size] = colour
        truth.append({"id": f"obj{order}", "label": label, "x": x, "y": y, "w": size, "h": size,
                      "order": order, "visible": 1.0})  # fmt: skip
    return pixels, truth


def make_scored_scene(
    project, height: int = 512, width: int = 512, seed: int = 0, name=None, model=None
):
    """A Scene with pixels and ground truth in storage, scored by a ModelVersion of the project
    through ONNX Runtime, its result stored by labeling.scoring.results.store_scoring_result.
    ``model(path, classes, window) -> path`` writes the model file (default: the colour model).
    Returns (scene, run)."""
    from django.db.models import Max

    from labeling.models import ModelVersion, Scene, ScoringRun
    from labeling.projects.storage_keys import get_storage, model_prefix, scene_prefix
    from labeling.scoring.results import store_scoring_result
    from mlcore.inference.scoring import load_scorer, score_scene
    from mlcore.ingest.scenes import NpyScene

    storage = get_storage()
    classes = project.class_names
    # Objects of the project's size on the scene (Project.object_size, else the window).
    pixels, truth = scene_pixels(height, width, seed, size=project.scene_window)
    for box in truth:
        box["label"] = classes[box["label"] % max(1, len(classes) - 1)]
    scene = Scene.objects.create(
        project=project,
        name=name or f"scene {seed} ({width}x{height})",
        image_key="",
        width=width,
        height=height,
    )
    buffer = io.BytesIO()
    np.save(buffer, pixels)
    scene.pixels_key = f"{scene_prefix(scene)}/pixels.npy"
    storage.write(scene.pixels_key, buffer.getvalue())
    scene.image_key = scene.pixels_key
    scene.ground_truth_key = f"{scene_prefix(scene)}/ground_truth.json"
    storage.write(scene.ground_truth_key, json.dumps(truth).encode())
    scene.save()

    version = project.model_versions.filter(status="ready").order_by("number").first()
    if version is None:
        number = (project.model_versions.aggregate(n=Max("number"))["n"] or 0) + 1
        version = ModelVersion.objects.create(
            project=project, number=number, status="ready", is_current=True, classes=classes
        )
    with tempfile.TemporaryDirectory() as tmp:
        write_model = model or colour_onnx_model
        model_path = write_model(Path(tmp) / "model.onnx", classes, project.window_size)
        if not version.model_key:
            version.model_key = f"{model_prefix(version)}/model.onnx"
            storage.write(version.model_key, model_path.read_bytes())
            version.save(update_fields=["model_key"])
        scorer = load_scorer(model_path)
        grid = score_scene(scorer, NpyScene(storage, scene.pixels_key),
                           project.scene_score_step, scene_window=project.scene_window)  # fmt: skip
    run = ScoringRun.objects.create(scene=scene, model_version=version, status="running")
    store_scoring_result(run, grid, {"test_helper": True})
    run.refresh_from_db()
    scene.refresh_from_db()
    return scene, run


def json_script(html: str, element_id: str):
    """The JSON a page embeds with Django's json_script under ``element_id``."""
    import re

    match = re.search(
        rf'<script id="{element_id}" type="application/json">(.*?)</script>', html, re.S
    )
    assert match, f"no {element_id} in the page"
    return json.loads(match.group(1))


def config_of(response, element_id):
    """:func:`json_script` of a test-client response."""
    return json_script(response.content.decode(), element_id)


def run_reviewers(users, turns: int, turn) -> list:
    """Concurrent reviewers: one thread per user, started together (a barrier), each calling
    ``turn(user, index_of_user)`` ``turns`` times against the real Redis and PostgreSQL; returns
    what the turns returned, in completion order, and fails with whatever any thread raised."""
    import threading

    from django.db import connection

    got: list = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(users))

    def work(user, index):
        try:
            barrier.wait()
            for _ in range(turns):
                got.append(turn(user, index))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(u, i)) for i, u in enumerate(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return got

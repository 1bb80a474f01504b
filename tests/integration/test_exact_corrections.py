"""A reviewed window is trained on exactly as it was reviewed: after the corrections step of a
cycle (workers.loop_jobs.feed_corrections), the next fine-tune's window sampler, built on the
project's canvas set, draws each reviewed window with its pixels cut from the scene and its
effective label, at the trainer's jitter, never mixed with its neighbours, never held out; and
the model version records which annotation became which sample."""

from __future__ import annotations

import numpy as np
import pytest
from loop_helpers import TILE, build_small_project

from labeling.loop.cycle import training_label
from labeling.models import ModelVersion
from labeling.projects.storage_keys import get_storage
from labeling.review.annotations import record_annotation
from mlcore.data.canvases import CORRECTION_WEIGHT
from mlcore.data.windows import WindowSampler
from mlcore.ingest.scenes import NpyScene
from mlcore.train.training import TrainConfig
from workers.loop_jobs import CanvasDir, annotation_image_id, feed_corrections


class Ctx:
    def progress(self, *args):
        pass

    def log(self, line):
        pass


@pytest.fixture
def loop_settings(settings, storage_dir):
    settings.SPARK_MASTER = "local[2]"
    return settings


@pytest.mark.django_db(transaction=True)
def test_a_reviewed_window_is_sampled_exactly_as_reviewed(
    redis_conn, loop_settings, project, alice
):
    scene = build_small_project(project)  # 32-px tiles on a grid, canvases of 128 px
    window = project.window_size
    assert window == TILE

    def review(kind, label, x, y, n=[0]):  # noqa: B006 - a counter
        n[0] += 1
        row, _ = record_annotation(project, scene, alice, kind=kind, label=label, x=x, y=y,
                                   w=window, h=window, client_id=f"exact-{n[0]}",
                                   source="queue")  # fmt: skip
        return row

    # Windows off the tile grid (step 16): each one straddles several scene tiles.
    boat = review("review", "boat", 48, 64)
    review("review", "car", 96, 16)
    changed = review("review", "negative", 96, 16)  # the same place again: negative wins
    wrong = review("false_positive", "car", 16, 144)  # teaches the negative class
    expected = {boat.pk: (48, 64), changed.pk: (96, 16), wrong.pk: (16, 144)}

    version = ModelVersion.objects.create(project=project, number=2, status="training")
    result = feed_corrections(Ctx(), project.pk, version.pk)
    assert result["added"] == {"boat": 1, "negative": 2}

    reader = NpyScene(get_storage(), scene.pixels_key)
    pixels = reader.read_rows(0, reader.height)
    cset = CanvasDir(project).load()
    classes = project.class_names
    wanted = {}  # pixels -> (annotation id, label index)
    for pk, (x, y) in expected.items():
        row = next(a for a in (boat, changed, wrong) if a.pk == pk)
        tile = np.ascontiguousarray(pixels[y : y + window, x : x + window])
        wanted[tile.tobytes()] = (pk, classes.index(training_label(row, project)))

    # The version records which annotation became which sample (canvas, y, x): that sample is
    # the window's pixels.
    version.refresh_from_db()
    samples = version.data_counts["correction_samples"]
    assert set(samples) == {annotation_image_id(a) for a in (boat, changed, wrong)}
    by_name = {c.name: c for c in cset.canvases}
    for pk, (x, y) in expected.items():
        name, cy, cx = samples[f"ann-{pk}"]
        canvas = by_name[name]
        assert canvas.kind == "correction" and canvas.layout == "exact"
        assert canvas.weight == CORRECTION_WEIGHT
        np.testing.assert_array_equal(
            canvas.array[cy : cy + window, cx : cx + window], pixels[y : y + window, x : x + window]
        )

    # The next fine-tune's sampler (the trainer's window, step and jitter).
    config = TrainConfig()
    sampler = WindowSampler(cset, classes, window, project.train_step, config.val_fraction, seed=0)
    rng = np.random.default_rng(0)
    seen: dict[int, set] = {pk: set() for pk in expected}
    for _ in range(60):
        images, labels = sampler.sample(256, rng, "train", jitter=config.jitter)
        for image, label in zip(images, labels.tolist(), strict=True):
            hit = wanted.get(np.ascontiguousarray(image).tobytes())
            if hit is not None:
                seen[hit[0]].add(label)
    for pk, label in wanted.values():
        assert seen[pk] == {label}, (pk, seen[pk], classes[label])
    # ... and never drawn for validation (every reviewed window teaches).
    for _ in range(10):
        images, _ = sampler.sample(256, rng, "val")
        assert not any(np.ascontiguousarray(im).tobytes() in wanted for im in images)


@pytest.mark.django_db(transaction=True)
def test_the_trainers_torch_gather_draws_the_same_exact_windows(
    redis_conn, loop_settings, project, alice
):
    """What the trainer really gathers (mlcore.train.training.TorchWindowGather, with jitter) holds
    the reviewed window with its label too."""
    import torch

    from mlcore.train.training import TorchWindowGather

    scene = build_small_project(project)
    row, _ = record_annotation(project, scene, alice, kind="review", label="car", x=80, y=48,
                               w=TILE, h=TILE, client_id="torch-1")  # fmt: skip
    feed_corrections(Ctx(), project.pk)
    reader = NpyScene(get_storage(), scene.pixels_key)
    tile = np.ascontiguousarray(reader.read_rows(48, 48 + TILE)[:, 80 : 80 + TILE])
    classes = project.class_names
    config = TrainConfig()
    sampler = WindowSampler(CanvasDir(project).load(), classes, TILE, project.train_step,
                            config.val_fraction, seed=0)  # fmt: skip
    gather = TorchWindowGather(sampler, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    labels_seen = set()
    for _ in range(40):
        images, labels, _ = gather.sample(256, generator, "train", config.jitter)
        match = (images.numpy() == tile).reshape(len(images), -1).all(1)
        labels_seen |= set(labels.numpy()[match].tolist())
    assert labels_seen == {classes.index("car")}

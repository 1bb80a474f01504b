"""A background region becomes training samples (issue 34.2), through the cycle's own step
(workers.loop_jobs.feed_corrections) on a scene-only project: the object-size windows on the
scoring grid inside the region, none touching a marked object (objects win, also one marked
after the region was learnt), at most 32 a region, each cut from the scene as scoring sees it; a
retried feed adds none twice, and the first model's count of background marks is exactly what was
fed. Real PostgreSQL, storage."""

from __future__ import annotations

import numpy as np
import pytest
from loop_helpers import add_scene

from labeling.loop.cycle import pending_annotations
from labeling.loop.first_model import scene_marks
from labeling.projects.storage_keys import get_storage
from labeling.review.annotations import record_annotation
from mlcore.data.regions import REGION_SAMPLE_CAP
from mlcore.data.windows import WindowSampler
from mlcore.ingest.scenes import NpyScene
from workers.loop_jobs import CanvasDir, feed_corrections, refresh_canvases

OWN = [{"name": "red", "color": "#e6194b", "sources": []},
       {"name": "blue", "color": "#4363d8", "sources": []}]  # fmt: skip


class Ctx:
    def progress(self, *args):
        pass

    def log(self, line):
        pass


def overlaps(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


@pytest.mark.django_db(transaction=True)
def test_a_region_teaches_its_free_windows_capped(redis_conn, storage_dir, project, alice):
    project.classes = OWN
    project.save()
    scene, _ = add_scene(project, size=256)
    red, blue = (40, 20, 10, 10), (200, 200, 32, 32)
    for label, (x, y, w, h) in (("red", red), ("blue", blue)):
        record_annotation(project, scene, alice, kind="false_negative", label=label, x=x, y=y,
                          w=w, h=h)  # fmt: skip
    small, _ = record_annotation(project, scene, alice, kind="region", label="negative", x=0,
                                 y=0, w=96, h=64)  # fmt: skip
    large, _ = record_annotation(project, scene, alice, kind="region", label="negative", x=0,
                                 y=96, w=256, h=160)  # fmt: skip
    refresh_canvases(Ctx(), project)  # no dataset: the empty set only marks join
    feed_corrections(Ctx(), project.pk)

    cset = CanvasDir(project).load()
    negatives = {p[0]: (c, p) for c in cset.of_class("negative") for p in c.placements}
    of = lambda region: sorted(  # noqa: E731
        tuple(int(v) for v in i.split("@")[1].split(","))
        for i in negatives
        if i.startswith(f"ann-{region.pk}@")
    )
    # The small region: 5 x 3 windows of 32 at step 16, less the 6 the red box touches.
    touching = {(x, y) for x in (16, 32, 48) for y in (0, 16)}
    every = [(x, y) for x in (0, 16, 32, 48, 64) for y in (0, 16, 32)]
    assert of(small) == sorted(w for w in every if w not in touching)
    # The large one: capped, and none touches the blue object inside it.
    assert len(of(large)) == REGION_SAMPLE_CAP
    assert not any(overlaps((x, y, 32, 32), blue) for x, y in of(large))
    assert all(0 <= x <= 256 - 32 and 96 <= y <= 256 - 32 for x, y in of(large))

    # Each sample is the window's pixels, as the scorer cuts it.
    pixels = NpyScene(get_storage(), scene.pixels_key)
    for image_id, (canvas, p) in negatives.items():
        x, y = (int(v) for v in image_id.split("@")[1].split(","))
        tile = canvas.array[p[1] : p[1] + 32, p[2] : p[2] + 32]
        assert np.array_equal(tile, pixels.read_rows(y, y + 32)[:, x : x + 32]), image_id

    # What the first model's count said is what was fed.
    assert scene_marks(project, pending_annotations(project)) == (2, len(negatives))
    assert len(negatives) == 9 + REGION_SAMPLE_CAP

    # A retried feed adds nothing twice.
    feed_corrections(Ctx(), project.pk)
    again = CanvasDir(project).load()
    assert sum(len(c.placements) for c in again.canvases) == 2 + 9 + REGION_SAMPLE_CAP

    # An object marked later inside a learnt region wins too: the windows it touches leave
    # training (x 0..20, y 40..60 touches the small region's windows at (0, 16), (0, 32), (16, 32)).
    record_annotation(project, scene, alice, kind="false_negative", label="blue", x=0, y=40, w=20,
                      h=20)  # fmt: skip
    feed_corrections(Ctx(), project.pk)
    later = CanvasDir(project).load()
    left = {p[0] for c in later.of_class("negative") for p in c.placements}
    gone = {f"ann-{small.pk}@{x},{y}" for x, y in ((0, 16), (0, 32), (16, 32))}
    assert left == set(negatives) - gone
    assert sum(len(c.placements) for c in later.canvases) == 3 + 9 + REGION_SAMPLE_CAP - 3
    # The trainer's sampler draws from what is left.
    images, labels = WindowSampler(later, project.class_names, window=32, step=8).sample(
        16, np.random.default_rng(0)
    )
    assert images.shape == (16, 32, 32, 3) and set(labels.tolist()) <= {0, 1, 2}

"""Objects of any size (issue 34.3), in Chromium: in a project of 48 px objects the viewer draws
48 px boxes, and a click on an empty spot places a 48 px box centred on the click (viewer.js
windowBoxAt), which is what the annotation stores."""

from __future__ import annotations

import numpy as np
from browser_helpers import add_dzi, login
from review_helpers import make_scored_scene

from labeling.models import Annotation, Detection
from labeling.scoring.results import load_grid

SIZE = 48


def quiet_spot(grid, project, boxes, margin=8):
    """Centre of a window the model calls negative, away from every stored box, in the scene's
    top-left part (visible at the home zoom)."""
    neg = list(grid.classes).index(project.negative_class)
    for flat in np.argsort(-grid.probs[..., neg], axis=None, kind="stable"):
        r, c = np.unravel_index(flat, grid.probs.shape[:2])
        x, y = int(grid.xs[c]) + SIZE // 2, int(grid.ys[r]) + SIZE // 2
        if not (60 <= x <= 900 and 60 <= y <= 650):
            continue
        half = SIZE // 2 + margin
        x0, y0, x1, y1 = x - half, y - half, x + half, y + half
        if all(b.x >= x1 or b.x + b.w <= x0 or b.y >= y1 or b.y + b.h <= y0 for b in boxes):
            return x, y
    raise AssertionError("no quiet spot found")


def test_a_click_places_a_box_of_the_object_size(page, alice, project, storage_dir, redis_conn):
    from playwright.sync_api import expect

    project.object_size = SIZE
    project.save()
    scene, run = make_scored_scene(project, 768, 1024, seed=5, name="large objects")
    add_dzi(scene)
    boxes = list(Detection.objects.filter(run=run, kind="merged"))
    assert boxes and {(b.w, b.h) for b in boxes} == {(SIZE, SIZE)}
    x, y = quiet_spot(load_grid(run), project, boxes)

    login(page, "alice", "pw-alice")
    page.goto(f"/scenes/{scene.pk}/")
    page.wait_for_function("window.sceneViewer && sceneViewer.ready()")
    pos = page.evaluate("([x, y]) => sceneViewer.pageXY(x, y)", [x, y])
    page.mouse.click(pos["x"], pos["y"])
    expect(page.locator("#box-popup")).to_contain_text("Missed object here")
    page.click("#box-popup [data-action=missed-boat]")
    page.wait_for_function("sceneViewer.pending() === 0")
    mark = Annotation.objects.get(kind="false_negative")
    assert mark.label == "boat" and (mark.w, mark.h) == (SIZE, SIZE)
    assert abs(mark.x + SIZE / 2 - x) <= 1.5 and abs(mark.y + SIZE / 2 - y) <= 1.5

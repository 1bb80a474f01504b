"""The review queue in headless Chromium: the cross over the window centre (the point the
answer is about) sits at the centre of the window's crop, `c` hides and shows it, and the class
mix of this cycle's answers follows the reviewer's answers and undos."""

from __future__ import annotations

import re

import pytest
from browser_helpers import login, screenshot
from review_helpers import make_scored_scene

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_queue_marks_the_centre_and_counts_the_class_mix(
    page, alice, project, storage_dir, redis_conn
):
    from playwright.sync_api import expect

    scene, _ = make_scored_scene(project, 128, 128, seed=4, name="small")
    login(page, "alice", "pw-alice")
    page.goto(f"/projects/{project.pk}/review/?scene={scene.pk}")
    page.wait_for_function("window.reviewQueue && reviewQueue.current()")
    image = page.locator("#queue-image").bounding_box()
    cross = page.locator("#queue-centre")
    expect(cross).to_be_visible()
    box = cross.bounding_box()
    # The crop is the window with one window of context on each side: its centre is the
    # window's centre.
    assert abs(box["x"] + box["width"] / 2 - (image["x"] + image["width"] / 2)) <= 1
    assert abs(box["y"] + box["height"] / 2 - (image["y"] + image["height"] / 2)) <= 1
    assert box["width"] < image["width"] / 8  # a small mark, not a second frame
    screenshot(page, "queue_centre.png")
    page.keyboard.press("c")
    expect(cross).to_be_hidden()
    page.keyboard.press("c")
    expect(cross).to_be_visible()
    # The class mix: nothing answered yet; answer "car" (key 1) and "negative" (key 0).
    expect(page.locator("#class-mix-total")).to_have_text("0")
    page.keyboard.press("1")
    page.wait_for_function("reviewQueue.count() === 1")
    page.wait_for_function("() => reviewQueue.current()")
    page.keyboard.press("0")
    page.wait_for_function("reviewQueue.count() === 2")
    expect(page.locator('#class-mix li[data-class="car"] strong')).to_have_text("1")
    expect(page.locator('#class-mix li[data-class="negative"] strong')).to_have_text("1")
    expect(page.locator("#class-mix-total")).to_have_text("2")
    page.wait_for_function("() => reviewQueue.current()")  # keys wait for the next window
    page.keyboard.press("Backspace")  # undoes the negative answer
    expect(page.locator('#class-mix li[data-class="negative"] strong')).to_have_text("0")
    expect(page.locator("#class-mix-total")).to_have_text("1")
    page.wait_for_function("reviewQueue.pending() === 0")
    # A fresh page counts from the server: the car answer is pending, the undone one is not.
    page.reload()
    page.wait_for_function("window.reviewQueue && reviewQueue.current()")
    expect(page.locator('#class-mix li[data-class="car"] strong')).to_have_text("1")
    expect(page.locator("#class-mix-total")).to_have_text("1")
    assert not page.js_errors, page.js_errors


def test_metrics_page_draws_the_learning_curve_beside_the_random_baseline(
    page, alice, project, storage_dir
):
    from playwright.sync_api import expect

    from labeling.models import SimulationRun

    make_scored_scene(project, 128, 128, seed=4, name="small")
    for strategy, f1s in (("random", [0.30, 0.33, 0.36]), ("random", [0.30, 0.31, 0.38]),
                          ("diverse_uncertainty", [0.30, 0.37, 0.42])):  # fmt: skip
        SimulationRun.objects.create(
            project=project, strategy=strategy, per_cycle=200, finished=True,
            cycles=[{"cycle": c, "labels_used": 200 * c, "object_f1": f, "window_f1": None}
                    for c, f in enumerate(f1s)],
        )  # fmt: skip
    login(page, "alice", "pw-alice")
    page.goto(f"/projects/{project.pk}/metrics/")
    curve = page.locator("#learning-curve svg")
    expect(curve).to_be_visible()
    # One line per series: the project's cycles, random (dashed, with its band), diverse.
    expect(curve.locator("path[stroke-dasharray]")).to_have_count(1)
    expect(curve.locator("circle")).to_have_count(1 + 3 + 3)
    # Both axes are labelled with what they measure and its unit.
    expect(curve.locator("text.axis-x")).to_have_text(re.compile(r"^labels learnt .*count\)$"))
    expect(curve.locator("text.axis-y")).to_have_text(re.compile(r"^object F1 \(0 to 1"))
    legend = page.locator("#learning-curve-legend")
    expect(legend).to_contain_text("this project's cycles")
    expect(legend).to_contain_text("random (simulated, 200/cycle, 2 runs) — baseline")
    expect(legend).to_contain_text("diverse_uncertainty")
    page.locator("#learning-curve-card").screenshot(
        path=str(screenshot_dir() / "learning_curve.png")
    )
    assert not page.js_errors, page.js_errors


def screenshot_dir():
    from browser_helpers import ARTIFACTS

    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS

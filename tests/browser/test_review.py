"""A reviewer's session in headless Chromium (Debian's /usr/bin/chromium) against the live
server: log in, open a scored scene in the deep-zoom viewer, move the threshold (the legend's
counts follow), flag a false positive, add missed objects (click and shift-drag), undo, review
ten windows from the queue with the keyboard, reload and find every annotation again, in the
page and in the database. Screenshots go to test-artifacts/."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from browser_helpers import ARTIFACTS, REPO, accept_key, add_dzi, login, screenshot
from review_helpers import make_scored_scene

from labeling.loop.cycle import effective_annotations
from labeling.models import Annotation, Detection
from labeling.scoring.results import load_grid

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def feed_count(run, kind, threshold, label=None):
    rows = Detection.objects.filter(run=run, kind=kind)
    if label:
        rows = rows.filter(label=label)
    return sum(1 for s in rows.values_list("score", flat=True) if round(s, 3) >= threshold - 1e-9)


def legend_counts(page):
    return page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('[data-count]')]
              .map(n => [n.dataset.count, Number(n.textContent)]))"""
    )


def click_scene_point(page, x, y, **kwargs):
    pos = page.evaluate("([x, y]) => sceneViewer.pageXY(x, y)", [x, y])
    page.mouse.click(pos["x"], pos["y"], **kwargs)


def empty_window(grid, project, avoid, size=48, margin=6):
    """Origin of a window the model calls negative with confidence, whose ``size`` square (plus a
    margin) overlaps none of the boxes ``avoid`` [(x, y, w, h)], inside the scene's top-left
    part (visible at the home zoom)."""
    neg = list(grid.classes).index(project.negative_class)
    order = np.argsort(-grid.probs[..., neg], axis=None, kind="stable")
    for flat in order:
        r, c = np.unravel_index(flat, grid.probs.shape[:2])
        x, y = int(grid.xs[c]), int(grid.ys[r])
        if x < 40 or y < 40 or x > 900 or y > 650:
            continue
        x0, y0, x1, y1 = x - margin, y - margin, x + size + margin, y + size + margin
        if all(bx >= x1 or bx + bw <= x0 or by >= y1 or by + bh <= y0 for bx, by, bw, bh in avoid):
            return x, y
    raise AssertionError("no empty window found")


def test_review_session_in_the_browser(page, alice, project, storage_dir, redis_conn):
    from playwright.sync_api import expect

    scene, run = make_scored_scene(project, 768, 1024, seed=11, name="harbour collage")
    add_dzi(scene)
    grid = load_grid(run)

    login(page, "alice", "pw-alice")
    page.goto(f"/projects/{project.pk}/")
    expect(page.locator("#scene-list")).to_contain_text("harbour collage")
    page.click("#scene-list a.scene-name")
    page.wait_for_url(f"**/scenes/{scene.pk}/")
    page.wait_for_function("window.sceneViewer && sceneViewer.ready()")
    page.wait_for_function("Number(document.body.dataset.firstBoxesMs) > 0")

    # Merged boxes at the project threshold: the legend counts what the run stored.
    merged_at = {c: feed_count(run, "merged", 0.9, c) for c in ("car", "boat")}
    assert sum(merged_at.values()) > 0
    expect(page.locator("#legend-total")).to_have_text(str(sum(merged_at.values())))
    assert legend_counts(page) == merged_at

    # Raw windows, then the threshold slider moved with the keyboard: counts follow at once.
    page.check("#kind-window")
    expected = {c: feed_count(run, "window", 0.9, c) for c in ("car", "boat")}
    page.wait_for_function(
        "n => Number(document.getElementById('legend-total').textContent) === n",
        arg=sum(expected.values()),
    )
    page.focus("#threshold")
    for _ in range(8):
        page.keyboard.press("ArrowRight")
    expect(page.locator("#threshold-value")).to_have_text("0.980")
    after = {c: feed_count(run, "window", 0.98, c) for c in ("car", "boat")}
    assert after != expected
    assert legend_counts(page) == after
    for _ in range(30):
        page.keyboard.press("ArrowLeft")
    expect(page.locator("#threshold-value")).to_have_text("0.680")
    low = {c: feed_count(run, "window", 0.68, c) for c in ("car", "boat")}
    assert sum(low.values()) > sum(expected.values())
    assert legend_counts(page) == low
    # Per-class toggle: boats hidden from the total.
    page.uncheck("[data-toggle=boat]")
    expect(page.locator("#legend-total")).to_have_text(str(low["car"]))
    page.check("[data-toggle=boat]")

    # Back to merged boxes at 0.90 for the corrections.
    page.focus("#threshold")
    for _ in range(22):
        page.keyboard.press("ArrowRight")
    expect(page.locator("#threshold-value")).to_have_text("0.900")
    page.check("#kind-merged")
    expect(page.locator("#legend-total")).to_have_text(str(sum(merged_at.values())))

    # Flag a false positive: click a merged box, press x.
    boxes = list(Detection.objects.filter(run=run, kind="merged", score__gte=0.9).order_by("id"))
    fp_box = boxes[0]
    page.locator("#osd").focus()
    click_scene_point(page, fp_box.x + fp_box.w / 2, fp_box.y + fp_box.h / 2)
    expect(page.locator("#box-popup")).to_be_visible()
    expect(page.locator("#box-popup")).to_contain_text(fp_box.label)
    page.keyboard.press("x")
    expect(page.locator("#box-popup")).to_be_hidden()
    expect(page.locator("#toast")).to_contain_text("Marked: not an object at")
    page.wait_for_function("sceneViewer.pending() === 0")
    expect(page.locator("#save-status")).to_have_text("All changes saved")
    fp = Annotation.objects.get(kind="false_positive")
    assert (fp.detection_id, fp.label, fp.x, fp.y, fp.w, fp.h) == (
        fp_box.pk,
        "negative",
        fp_box.x,
        fp_box.y,
        fp_box.w,
        fp_box.h,
    )

    # Confirm another box with c, then undo it with ctrl+z: an undo row, history kept.
    ok_box = boxes[1]
    click_scene_point(page, ok_box.x + ok_box.w / 2, ok_box.y + ok_box.h / 2)
    page.keyboard.press("c")
    page.wait_for_function("sceneViewer.pending() === 0")
    confirm = Annotation.objects.get(kind="confirm")
    assert confirm.detection_id == ok_box.pk and confirm.label == ok_box.label
    page.keyboard.press("Control+z")
    page.wait_for_function("sceneViewer.pending() === 0")
    assert Annotation.objects.get(kind="undo").undoes_id == confirm.pk

    # A missed object: click empty image, pick class 2 (boat) in the popup.
    avoid = [(b.x, b.y, b.w, b.h) for b in boxes]
    fx, fy = empty_window(grid, project, avoid)
    click_scene_point(page, fx + 16, fy + 16)
    expect(page.locator("#box-popup")).to_contain_text("Missed object here")
    page.click("#box-popup [data-action=missed-boat]")
    page.wait_for_function("sceneViewer.pending() === 0")
    fn = Annotation.objects.get(kind="false_negative")
    assert fn.label == "boat" and (fn.w, fn.h) == (32, 32)
    assert abs(fn.x - fx) <= 1 and abs(fn.y - fy) <= 1

    # Another, drawn with shift + drag, class 1 (car) from the keyboard.
    gx, gy = empty_window(grid, project, avoid + [(fx, fy, 32, 32)])
    start = page.evaluate("([x, y]) => sceneViewer.pageXY(x, y)", [gx, gy])
    end = page.evaluate("([x, y]) => sceneViewer.pageXY(x, y)", [gx + 40, gy + 30])
    page.keyboard.down("Shift")
    page.mouse.move(start["x"], start["y"])
    page.mouse.down()
    page.mouse.move((start["x"] + end["x"]) / 2, (start["y"] + end["y"]) / 2, steps=4)
    page.mouse.move(end["x"], end["y"], steps=4)
    page.mouse.up()
    page.keyboard.up("Shift")
    expect(page.locator("#box-popup")).to_contain_text("Missed object here")
    page.keyboard.press("1")
    page.wait_for_function("sceneViewer.pending() === 0")
    drawn = Annotation.objects.filter(kind="false_negative", label="car").get()
    assert abs(drawn.x - gx) <= 2 and abs(drawn.y - gy) <= 2
    assert abs(drawn.w - 40) <= 3 and abs(drawn.h - 30) <= 3

    # Hover shows the model's probabilities of the window under the mouse.
    car_box = next(b for b in boxes if b.label == "car")
    hover = page.evaluate(
        "([x, y]) => sceneViewer.pageXY(x, y)", [car_box.x + car_box.w / 2, car_box.y + 4]
    )
    page.mouse.move(hover["x"], hover["y"])
    expect(page.locator("#hover-info")).to_contain_text("car 0.")
    expect(page.locator("#hover-info")).to_contain_text("negative 0.")

    # The picture: zoomed around the corrections, the mouse on a box (probabilities shown).
    cx, cy = (fp_box.x + fx) / 2, (fp_box.y + fy) / 2
    page.evaluate("([x, y]) => sceneViewer.zoomTo(x, y, 560, 400)", [cx - 280, cy - 200])
    page.wait_for_timeout(300)
    near = min(boxes[2:], key=lambda b: abs(b.x - cx) + abs(b.y - cy))
    tip = page.evaluate("([x, y]) => sceneViewer.pageXY(x, y)", [near.x + 16, near.y + 16])
    page.mouse.move(tip["x"], tip["y"])
    expect(page.locator("#hover-tip")).to_be_visible()
    page.wait_for_timeout(300)  # let the tiles of the new zoom arrive
    shot = screenshot(page, "viewer.png")
    assert not page.js_errors, page.js_errors

    # The review queue: ten windows answered from the keyboard.
    page.click("#review-link")
    page.wait_for_url(f"**/projects/{project.pk}/review/**")
    page.wait_for_function("window.reviewQueue && reviewQueue.current()")
    keys = ["Enter", "1", "2", "0", "n", "Enter", " ", "1", "2", "Enter"]
    answered = []
    for i, key in enumerate(keys):
        # the window on screen (null while the next one loads: wait for it)
        item = page.wait_for_function("() => reviewQueue.current()").json_value()
        expected_label = {
            "Enter": item["guess"], " ": item["guess"], "1": "car", "2": "boat",
            "0": "negative", "n": "negative",
        }[key]  # fmt: skip
        # Enter and space accept the guess, unless the queue asks for a choice there.
        page.keyboard.press(accept_key(item) if key in ("Enter", " ") else key)
        page.wait_for_function(
            "([x, y, n]) => { const c = reviewQueue.current();"
            " return reviewQueue.count() === n && c && (c.x !== x || c.y !== y); }",
            arg=[item["x"], item["y"], i + 1],
        )
        answered.append((item["scene"], item["x"], item["y"], expected_label))
        if i == 4:
            # Backspace goes back to the window just answered (undoing its answer); answer again.
            page.keyboard.press("Backspace")
            page.wait_for_function(
                "([x, y]) => { const c = reviewQueue.current();"
                " return c && c.x === x && c.y === y; }",
                arg=[item["x"], item["y"]],
            )
            expect(page.locator("#review-count")).to_have_text("4")
            page.keyboard.press("2")
            answered[-1] = (item["scene"], item["x"], item["y"], "boat")
            page.wait_for_function("() => reviewQueue.count() === 5")
    page.wait_for_function("reviewQueue.pending() === 0")
    expect(page.locator("#review-count")).to_have_text("10")
    assert float(page.locator("#review-rate").inner_text()) > 0
    assert len({(s, x, y) for s, x, y, _ in answered}) == 10  # ten different windows
    page.keyboard.press("?")
    expect(page.locator("#help-overlay")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#help-overlay")).to_be_hidden()
    queue_shot = screenshot(page, "queue.png")
    assert not page.js_errors, page.js_errors

    reviews = Annotation.objects.filter(kind="review").order_by("id")
    assert reviews.count() == 11  # ten answers plus the one taken back
    undone = Annotation.objects.get(kind="undo", undoes__kind="review")
    assert undone.undoes.label == "negative"
    effective = effective_annotations(Annotation.objects.filter(scene=scene))
    by_place = {(a.x, a.y): a for a in effective if a.kind == "review"}
    for scene_id, x, y, label in answered:
        assert scene_id == scene.pk
        assert by_place[(x, y)].label == label, (x, y)
        assert by_place[(x, y)].w == 32 and by_place[(x, y)].source == "ui"

    # Reload the viewer: every effective annotation is drawn again, none pending.
    page.goto(f"/scenes/{scene.pk}/")
    page.wait_for_function("window.sceneViewer && sceneViewer.ready()")
    page.wait_for_function(
        "n => sceneViewer.effective().length === n", arg=len(effective), timeout=20_000
    )
    shown = page.evaluate("() => sceneViewer.effective()")
    assert {(a["id"], a["kind"], a["label"]) for a in shown} == {
        (a.pk, a.kind, a.label) for a in effective
    }
    assert all(a["state"] == "saved" for a in shown)
    assert {"false_positive", "false_negative", "review"} <= {a["kind"] for a in shown}
    assert not any(a["id"] == confirm.pk for a in shown)  # undone
    expect(page.locator("#annotation-count")).to_have_text(str(len(effective)))
    assert Annotation.objects.count() == len(shown) + 4  # + the undone confirm, review, 2 undos
    assert not page.js_errors, page.js_errors

    # The pictures of the README.
    docs = REPO / "docs" / "screenshots"
    docs.mkdir(parents=True, exist_ok=True)
    if os.environ.get("UPDATE_SCREENSHOTS"):
        shutil.copyfile(shot, docs / "viewer.png")
        shutil.copyfile(queue_shot, docs / "queue.png")
    assert (ARTIFACTS / "viewer.png").stat().st_size > 10_000


def test_a_failed_save_shows_an_error_and_retry_saves_it(page, alice, project, storage_dir):
    from playwright.sync_api import expect

    scene, run = make_scored_scene(project, 256, 320, seed=5, name="small")
    add_dzi(scene)
    login(page, "alice", "pw-alice")
    page.goto(f"/scenes/{scene.pk}/")
    page.wait_for_function("window.sceneViewer && sceneViewer.ready()")
    box = Detection.objects.filter(run=run, kind="merged", score__gte=0.9).first()

    # The server refuses the next POSTs (as a dropped connection would): the correction stays
    # on the image, marked unsaved, with the reason and a Retry button.
    def refuse(route):
        if route.request.method == "POST":
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/api/scenes/*/annotations", refuse)
    click_scene_point(page, box.x + box.w / 2, box.y + box.h / 2)
    page.keyboard.press("x")
    expect(page.locator("#save-error")).to_be_visible()
    expect(page.locator("#save-error-text")).to_contain_text("network error")
    expect(page.locator("#save-status")).to_have_text("1 correction(s) not saved")
    assert page.evaluate("() => sceneViewer.effective()")[0]["state"] == "failed"
    assert not Annotation.objects.exists()

    page.unroute("**/api/scenes/*/annotations")
    page.click("#retry-button")
    expect(page.locator("#save-status")).to_have_text("All changes saved")
    expect(page.locator("#save-error")).to_be_hidden()
    row = Annotation.objects.get()
    assert (row.kind, row.detection_id) == ("false_positive", box.pk)
    # Retried with the same client_id: pressing Retry again adds nothing.
    assert page.evaluate("() => sceneViewer.effective()")[0]["id"] == row.pk
    assert not page.js_errors, page.js_errors


def test_dashboard_follows_jobs_live_and_starts_a_retrain(page, alice, project, storage_dir,
                                                          redis_conn):  # fmt: skip
    from playwright.sync_api import expect

    from labeling.models import JobRecord, ModelVersion
    from labeling.review.annotations import record_annotation

    scene, run = make_scored_scene(project, 256, 320, seed=7, name="dock")
    add_dzi(scene)
    login(page, "alice", "pw-alice")
    page.goto("/")
    page.click(f"#project-table a[href='/projects/{project.pk}/']")
    expect(page.locator("h1")).to_have_text(project.name)
    expect(page.locator("#scene-list img")).to_have_js_property("complete", True)
    assert page.evaluate("() => document.querySelector('#scene-list img').naturalWidth") > 0
    expect(page.locator("#pending-count")).to_have_text("0")
    expect(page.locator("#retrain-button")).to_be_disabled()
    expect(page.locator("#version-table tr[data-version='1']")).to_contain_text("current")

    # A job that progresses: its bar follows without a reload (the page polls the jobs API).
    job = JobRecord.objects.create(
        project=project, kind="score", status="running", progress_done=1, progress_total=4,
        message="strip 1/4",
    )  # fmt: skip
    row = page.locator(f"#job-table tr[data-job='{job.pk}']")
    expect(row.locator(".progress")).to_have_attribute("aria-valuenow", "25")
    JobRecord.objects.filter(pk=job.pk).update(progress_done=3, message="strip 3/4")
    expect(row.locator(".progress")).to_have_attribute("aria-valuenow", "75")
    expect(row).to_contain_text("strip 3/4")
    JobRecord.objects.filter(pk=job.pk).update(progress_done=4, status="done")
    expect(row.locator(".job-status")).to_have_text("done")

    # Annotations waiting: the count and the button follow once a job finishes (or on reload).
    record_annotation(project, scene, alice, kind="false_negative", label="car",
                      x=0, y=0, w=32, h=32, client_id="dash-1")  # fmt: skip
    page.reload()
    expect(page.locator("#pending-count")).to_have_text("1")
    expect(page.locator("#retrain-button")).to_be_enabled()

    # Retrain: 202, the cycle's job and the new version appear; a second request gets the 409
    # message from the server.
    page.click("#retrain-button")
    expect(page.locator("#retrain-message")).to_contain_text("Retrain cycle started: model v2")
    cycle = JobRecord.objects.get(kind="retrain_cycle")
    expect(page.locator(f"#job-table tr[data-job='{cycle.pk}']")).to_contain_text("queued")
    expect(page.locator("#version-table tr[data-version='2']")).to_contain_text("pending")
    expect(page.locator("#retrain-button")).to_be_disabled()
    assert ModelVersion.objects.get(project=project, number=2).status == "pending"
    page.evaluate("() => document.getElementById('retrain-form').requestSubmit()")
    expect(page.locator("#retrain-message")).to_contain_text("already running")
    assert ModelVersion.objects.filter(project=project).count() == 2
    screenshot(page, "dashboard.png")

    # The metrics page: the chart (one point per series and version) and the confusion matrix.
    page.click("#metrics-link")
    expect(page.locator("#metrics-chart svg")).to_be_visible()
    # object F1, COCO AP@0.5 and window F1 of v1
    assert page.locator("#metrics-chart circle").count() == 3
    expect(page.locator("#confusion-table")).to_contain_text("truth \\ predicted")
    expect(page.locator("#metrics-table tr[data-version='1']")).to_contain_text("current")
    screenshot(page, "metrics.png")
    assert not page.js_errors, page.js_errors


def test_viewer_waits_for_the_tiles_with_a_progress_bar(page, alice, project, storage_dir):
    from playwright.sync_api import expect

    from labeling.models import JobRecord

    scene, run = make_scored_scene(project, 256, 320, seed=9, name="fresh")
    job = JobRecord.objects.create(
        project=project, kind="dzi", status="running", progress_done=2, progress_total=8,
        message="level 9, tile row 1/2", params={"scene_id": scene.pk},
    )  # fmt: skip
    login(page, "alice", "pw-alice")
    page.goto(f"/scenes/{scene.pk}/")
    expect(page.locator("#dzi-wait")).to_be_visible()
    expect(page.locator("#dzi-status")).to_have_text("running")
    expect(page.locator("#dzi-progress")).to_have_attribute("aria-valuenow", "25")
    JobRecord.objects.filter(pk=job.pk).update(progress_done=6, message="level 5")
    expect(page.locator("#dzi-progress")).to_have_attribute("aria-valuenow", "75")
    expect(page.locator("#dzi-message")).to_have_text("level 5")
    # The tiles are written: the page opens the viewer by itself, boxes and all.
    add_dzi(scene)
    JobRecord.objects.filter(pk=job.pk).update(progress_done=8, status="done")
    page.wait_for_function("window.sceneViewer && sceneViewer.ready()")
    expect(page.locator("#dzi-wait")).to_have_count(0)
    merged = Detection.objects.filter(run=run, kind="merged", score__gte=0.9).count()
    expect(page.locator("#legend-total")).to_have_text(str(merged))
    assert not page.js_errors, page.js_errors


def test_queue_runs_dry_and_changes_strategy(page, alice, project, storage_dir, redis_conn):
    from playwright.sync_api import expect

    scene, run = make_scored_scene(project, 64, 64, seed=2, name="tiny")  # 3 x 3 windows
    login(page, "alice", "pw-alice")
    page.goto(f"/projects/{project.pk}/review/?scene={scene.pk}")
    page.wait_for_function("window.reviewQueue && reviewQueue.current()")
    expect(page.locator("#queue-remaining")).to_have_text("9")
    # Highest score first: the window shown is the grid's most confident positive.
    page.select_option("#strategy", "top_score")
    assert "strategy=top_score" in page.url
    grid = load_grid(run)
    positive = grid.probs[..., :-1].max(-1)
    r, c = np.unravel_index(positive.argmax(), positive.shape)
    page.wait_for_function(
        "([x, y]) => { const c = reviewQueue.current(); return c && c.x === x && c.y === y; }",
        arg=[int(grid.xs[c]), int(grid.ys[r])],
    )
    # The two windows fetched under the uncertainty order (the one shown and the one fetched
    # ahead) were given back when the strategy changed, so all 9 are shown now; answer them all
    # with the keyboard.
    answered = 0
    for _ in range(20):
        page.wait_for_function(
            "() => reviewQueue.current() || !document.getElementById('queue-empty').hidden"
        )
        if page.locator("#queue-empty").is_visible():
            break
        page.keyboard.press(accept_key(page.evaluate("reviewQueue.current()")))
        answered += 1
        page.wait_for_function("n => reviewQueue.count() === n", arg=answered)
    expect(page.locator("#queue-empty")).to_be_visible()
    expect(page.locator("#queue-remaining")).to_have_text("0")
    page.wait_for_function("reviewQueue.pending() === 0")
    assert answered == 9
    assert Annotation.objects.filter(kind="review", scene=scene).count() == 9
    assert not page.js_errors, page.js_errors

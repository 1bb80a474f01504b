"""What a reviewer sees is never ambiguous (issue 26), in headless Chromium against the live
server: corrections have their own style beside the model's box (and the legend says so); the
queue says why its guess is what it is, refuses keys while the next window loads and answers
only the window on screen; skip is recorded as a skip (never a label) and the window returns
after other windows; after a cycle the dashboard shows what it changed and how long each job
took, live, and labels used / total agree with the learning curve."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from browser_helpers import ARTIFACTS, REPO, accept_key, add_dzi, login, screenshot
from review_helpers import colour_onnx_model, json_script, make_scored_scene

from labeling.loop import cycle
from labeling.loop.metrics_view import version_rows
from labeling.models import Annotation, Detection, JobRecord, ModelVersion, QueueSkip, ScoringRun
from labeling.review.annotations import record_annotation, undo
from labeling.scoring.thresholds import run_thresholds
from labeling.web.formatting import fixed3, signed3

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def click_scene_point(page, x, y):
    pos = page.evaluate("([x, y]) => sceneViewer.pageXY(x, y)", [x, y])
    page.mouse.click(pos["x"], pos["y"])


def hex_rgb(colour: str) -> list[int]:
    return [int(colour[i : i + 2], 16) for i in (1, 3, 5)]


def test_corrections_have_their_own_style_and_the_model_box_stays_visible(
    page, alice, project, storage_dir
):
    from playwright.sync_api import expect

    scene, run = make_scored_scene(project, 384, 512, seed=11, name="harbour")
    add_dzi(scene)
    login(page, "alice", "pw-alice")
    page.goto(f"/scenes/{scene.pk}/")
    page.wait_for_function("window.sceneViewer && sceneViewer.ready()")

    # The legend: model boxes solid in the class colour, corrections a white dotted frame with
    # their own words; nothing of the corrections in a class colour any more.
    legend = page.locator("#viewer-side")
    for text in ("missed: car", "not an object", "was boat → car", "correct: car"):
        expect(legend).to_contain_text(text)
    styles = page.evaluate(
        """() => [...document.querySelectorAll('.ann-sample, .model-sample')].map(n => {
             const s = getComputedStyle(n);
             return [n.className, s.borderTopStyle, s.borderTopColor]; })"""
    )
    assert ["ann-sample", "dotted", "rgb(255, 255, 255)"] in styles
    assert any(c == "model-sample" and style == "solid" for c, style, _ in styles)

    boxes = list(Detection.objects.filter(run=run, kind="merged", score__gte=0.9).order_by("id"))
    fp_box = next(b for b in boxes if b.label == "car")
    other = next(b for b in boxes if b.pk != fp_box.pk and b.label == "car")
    page.evaluate("([x, y]) => sceneViewer.zoomTo(x, y, 200, 140)", [fp_box.x - 80, fp_box.y - 50])
    page.wait_for_timeout(400)
    page.locator("#osd").focus()
    click_scene_point(page, fp_box.x + fp_box.w / 2, fp_box.y + fp_box.h / 2)
    expect(page.locator("#box-popup")).to_contain_text(f"car {fixed3(fp_box.score)}")
    page.keyboard.press("x")
    page.wait_for_function("sceneViewer.pending() === 0")
    page.wait_for_timeout(100)

    draw = page.evaluate("() => sceneViewer.lastDraw()")
    assert {"kind": "false_positive", "text": "not an object"}.items() <= next(
        c for c in draw["corrections"] if c["kind"] == "false_positive"
    ).items()
    # The model's box is still drawn, labelled with what the model says now.
    assert fp_box.pk in {b["id"] for b in page.evaluate("() => sceneViewer.shownBoxes()")}
    assert {"id": fp_box.pk, "text": f"car {fixed3(fp_box.score)}"} in draw["labels"]
    # Pixels: the model's edge keeps the class colour, the correction frame lies outside it
    # in black and white.
    edge = page.evaluate(
        "([x, y]) => sceneViewer.pageXY(x, y)", [fp_box.x + fp_box.w * 0.3, fp_box.y + fp_box.h]
    )
    car = hex_rgb(project.colours["car"])
    pixel = page.evaluate("([x, y]) => sceneViewer.overlayPixel(x, y)", [edge["x"], edge["y"]])
    assert max(abs(a - b) for a, b in zip(pixel[:3], car, strict=True)) <= 3, (pixel, car)
    outside = page.evaluate(
        "([x, y]) => sceneViewer.overlayPixel(x, y)", [edge["x"], edge["y"] + 4]
    )
    assert outside[3] > 200 and outside[0] == outside[1] == outside[2], outside  # black or white

    # Another class: "was car → boat"; it stays so after a reload (the server keeps what the
    # model said at the time).
    page.evaluate("([x, y]) => sceneViewer.zoomTo(x, y, 200, 140)", [other.x - 80, other.y - 50])
    page.wait_for_timeout(300)
    click_scene_point(page, other.x + other.w / 2, other.y + other.h / 2)
    page.keyboard.press("2")
    page.wait_for_function("sceneViewer.pending() === 0")
    expect(page.locator("#toast")).to_contain_text("was car → boat")
    # A missed object marked just above a model box: its tag (under its frame) would sit on
    # that box's score label (above the box).
    near = next(
        b
        for b in boxes
        if b.pk not in (fp_box.pk, other.pk)
        and b.y >= 48
        and min(abs(b.x - o.x) + abs(b.y - o.y) for o in (fp_box, other)) > 120
    )
    page.evaluate("([x, y]) => sceneViewer.zoomTo(x, y, 200, 140)", [near.x - 80, near.y - 60])
    page.wait_for_timeout(300)
    xs = page.evaluate("([x, y]) => [sceneViewer.pageXY(x, y).x, sceneViewer.pageXY(x + 100, y).x]",
                       [near.x, near.y])  # fmt: skip
    scale = (xs[1] - xs[0]) / 100
    bottom = near.y - max(1, round(12 / scale))  # the tag then covers the label's place
    record_annotation(project, scene, alice, kind="false_negative", label="car", x=near.x,
                      y=bottom - 32, w=32, h=32)  # fmt: skip
    page.reload()
    page.wait_for_function("window.sceneViewer && sceneViewer.ready()")
    page.wait_for_function("sceneViewer.effective().length === 3")
    page.evaluate("([x, y]) => sceneViewer.zoomTo(x, y, 200, 140)", [other.x - 80, other.y - 50])
    page.wait_for_function(
        "() => (sceneViewer.lastDraw().corrections || []).some(c => c.text === 'was car → boat')"
    )
    assert Annotation.objects.get(kind="wrong_class").detection_id == other.pk
    screenshot(page, "viewer-corrections.png")

    # Tags and score labels never overlap (a label gives way: inside its box, or left out), and
    # the hover tooltip keeps clear of the tags.
    page.evaluate("([x, y]) => sceneViewer.zoomTo(x, y, 200, 140)", [near.x - 80, near.y - 60])
    page.wait_for_function(
        "() => (sceneViewer.lastDraw().corrections || []).some(c => c.text === 'missed: car')"
    )
    page.wait_for_timeout(300)
    draw = page.evaluate("() => sceneViewer.lastDraw()")

    def overlap(a, b):
        return (
            a["x"] < b["x"] + b["w"]
            and b["x"] < a["x"] + a["w"]
            and a["y"] < b["y"] + b["h"]
            and b["y"] < a["y"] + a["h"]
        )

    taken = draw["taken"]
    tags = [c["tag"] for c in draw["corrections"]]
    assert len(taken) >= len(tags) >= 1
    assert not [(a, b) for i, a in enumerate(taken) for b in taken[i + 1 :] if overlap(a, b)]
    tag = next(c["tag"] for c in draw["corrections"] if c["text"] == "missed: car")
    origin = page.evaluate("() => { const r = document.getElementById('overlay')"
                           ".getBoundingClientRect(); return [r.left, r.top]; }")  # fmt: skip
    page.mouse.move(origin[0] + tag["x"] + 6, origin[1] + tag["y"] - 6)
    tip = page.locator("#hover-tip")
    expect(tip).to_be_visible()
    expect(tip).to_contain_text("your correction: missed: car")
    box = tip.bounding_box()
    tip_rect = {"x": box["x"] - origin[0], "y": box["y"] - origin[1],
                "w": box["width"], "h": box["height"]}  # fmt: skip
    assert not [t for t in tags if overlap(tip_rect, t)], (tip_rect, tags)
    screenshot(page, "viewer-tags-and-tooltip.png")
    assert not page.js_errors, page.js_errors


# Queue GETs wait while window.__hold is set, until the test lets them go: the next window
# "loads" for as long as the test needs.
HOLD_QUEUE = """
window.__hold = true; window.__held = [];
const realFetch = window.fetch;
window.fetch = function (url, init) {
  if (window.__hold && String(url).includes('/queue?'))
    return new Promise(go => window.__held.push(go)).then(() => realFetch(url, init));
  return realFetch(url, init);
};
window.__letGo = () => { window.__held.splice(0).forEach(go => go()); };
"""


def expected_reason(item, thresholds, negative="negative"):
    probs = {c: p for c, p in item["probs"].items() if c != negative}
    top = max(probs, key=probs.get)
    if item["guess"] == negative:
        others = ", and so is every other class" if len(probs) > 1 else ""
        return (
            f"{negative}: {top} {fixed3(probs[top])} is below {top}'s threshold "
            f"{fixed3(thresholds[top])}{others}"
        )
    return f"{top}: {top} {fixed3(probs[top])} reaches {top}'s threshold {fixed3(thresholds[top])}"


def test_queue_says_why_holds_keys_while_loading_and_skips(
    page, alice, project, storage_dir, redis_conn, settings
):
    from playwright.sync_api import expect

    settings.REVIEW_SKIP_RETURNS_AFTER = 3
    scene, run = make_scored_scene(project, 256, 320, seed=5, name="small")
    thresholds = run_thresholds(run)
    page.add_init_script(HOLD_QUEUE)
    login(page, "alice", "pw-alice")
    page.goto(f"/projects/{project.pk}/review/?scene={scene.pk}")
    page.wait_for_function("window.__held && window.__held.length === 1")
    expect(page.locator("#queue-loading")).to_be_visible()
    page.evaluate("window.__letGo()")
    page.wait_for_function("window.reviewQueue && reviewQueue.current()")

    # The guess and its reason: below every threshold the guess is negative, whatever ranks
    # first in the table, and the page says so.
    first = page.evaluate("() => reviewQueue.current()")
    reason = expected_reason(first, thresholds)
    expect(page.locator("#queue-reason")).to_have_text(f"Why: {reason}.")
    top_row = page.locator("#queue-probs tbody tr").first
    top_class = top_row.get_attribute("data-class")
    if first["guess"] == "negative" and top_class != "negative":
        expect(top_row.locator("td.cut")).to_have_text(f"< {fixed3(thresholds[top_class])}")
    if not first.get("needs_choice"):
        expect(page.locator("#accept-label")).to_have_text(first["guess"])

    # Answer; the next window is held: the answered one is greyed out, the buttons are off, and
    # a key pressed now is refused where the reviewer sees it.
    page.wait_for_function("window.__held.length === 1")  # the prefetch of the next window
    page.keyboard.press("1")
    page.wait_for_function("reviewQueue.count() === 1 && reviewQueue.loading()")
    expect(page.locator(".queue-window")).to_have_class("card queue-window loading")
    expect(page.locator("#queue-loading")).to_be_visible()
    expect(page.locator("#skip-button")).to_be_disabled()
    page.keyboard.press("2")
    expect(page.locator("#queue-status")).to_contain_text("Not applied (2)")
    assert page.evaluate("reviewQueue.refused()") == 1
    assert page.evaluate("reviewQueue.count()") == 1
    page.evaluate("window.__letGo()")
    page.wait_for_function("reviewQueue.current() && !reviewQueue.loading()")
    second = page.evaluate("() => reviewQueue.current()")
    shown = page.evaluate("() => document.getElementById('queue-image').dataset")
    assert (int(shown["x"]), int(shown["y"])) == (second["x"], second["y"])
    expect(page.locator("#queue-status")).not_to_contain_text("Not applied")
    page.evaluate("window.__hold = false; window.__letGo()")
    page.keyboard.press("0")
    page.wait_for_function("reviewQueue.count() === 2 && reviewQueue.pending() === 0")
    answers = {(a.x, a.y): a.label for a in Annotation.objects.filter(kind="review")}
    assert answers == {(first["x"], first["y"]): "car", (second["x"], second["y"]): "negative"}

    # Skip: recorded as a skip, no annotation, not among what the next cycle learns from.
    page.wait_for_function("reviewQueue.current() && !reviewQueue.loading()")
    skipped = page.evaluate("() => reviewQueue.current()")
    page.keyboard.press("s")
    page.wait_for_function("reviewQueue.skips() === 1 && reviewQueue.pending() === 0")
    row = QueueSkip.objects.get()
    assert (row.scene_id, row.x, row.y, row.w) == (scene.pk, skipped["x"], skipped["y"], 32)
    assert not Annotation.objects.filter(x=skipped["x"], y=skipped["y"]).exists()
    places = {(a.x, a.y) for a in cycle.pending_annotations(project)}
    assert places == set(answers) and (skipped["x"], skipped["y"]) not in places
    expect(page.locator("#queue-history")).to_contain_text("skipped (comes back later)")

    # It comes back after other windows (3 answers here), not at once.
    order = []
    for n in range(3, 12):
        item = page.wait_for_function(
            "() => !reviewQueue.loading() && reviewQueue.current()"
        ).json_value()  # read as it is waited for: it is null again while the next one loads
        order.append((item["x"], item["y"]))
        if order[-1] == (skipped["x"], skipped["y"]):
            break
        page.keyboard.press(accept_key(item))
        page.wait_for_function("n => reviewQueue.count() === n", arg=n)
    assert order[-1] == (skipped["x"], skipped["y"]), order
    # Exactly three other windows answered first, as the help says (the page asks for the next
    # window while one is on screen: that answer counts; it once came back one window late).
    assert len(order) == 4, order
    expect(page.locator("#help-overlay")).to_contain_text("comes back after 3 other windows")
    assert len(set(order)) == len(order)
    page.keyboard.press("2")
    page.wait_for_function("reviewQueue.pending() === 0")
    assert Annotation.objects.get(x=skipped["x"], y=skipped["y"]).label == "boat"
    assert not page.js_errors, page.js_errors


def test_enter_asks_for_a_choice_when_the_guess_goes_against_the_ranking(
    page, alice, project, storage_dir, redis_conn
):
    """No class reaches its threshold, yet one ranks above the negative class ("negative
    p = 0.121" beside car 0.440): Enter and the accept button are off, the page says why and
    what to press, and the shortcut help says so too; a number answers."""
    from playwright.sync_api import expect

    scene, run = make_scored_scene(project, 256, 256, seed=3, name="unsure")
    run.metrics = {**(run.metrics or {}), "thresholds": {"car": 0.9999, "boat": 0.9999}}
    run.save(update_fields=["metrics"])
    login(page, "alice", "pw-alice")
    page.goto(f"/projects/{project.pk}/review/?scene={scene.pk}&strategy=top_score")
    page.wait_for_function("window.reviewQueue && reviewQueue.current()")
    item = page.evaluate("() => reviewQueue.current()")
    assert item["needs_choice"] and item["guess"] == "negative"
    expect(page.locator("#accept-label")).to_contain_text("off: choose a class or negative")
    expect(page.locator("#accept-guess")).to_be_disabled()
    expect(page.locator("#queue-reason")).to_have_class(re.compile("needs-choice"))
    page.keyboard.press("Enter")
    expect(page.locator("#queue-status")).to_contain_text(
        "Not applied (Enter): no class reaches its threshold"
    )
    assert page.evaluate("reviewQueue.count()") == 0
    page.keyboard.press("?")
    expect(page.locator("#help-overlay")).to_contain_text(
        "off when no class reaches its threshold yet one ranks above negative"
    )
    page.keyboard.press("Escape")
    page.keyboard.press("1")
    page.wait_for_function("reviewQueue.count() === 1 && reviewQueue.pending() === 0")
    assert Annotation.objects.get(kind="review").label == "car"
    assert not page.js_errors, page.js_errors


def score_with(version, scene, sharpness):
    """Score ``scene`` with a colour model of the given sharpness as ``version`` (real ONNX
    Runtime scoring, the result stored as a cycle's scoring run stores it)."""
    from labeling.projects.storage_keys import get_storage, model_prefix
    from labeling.scoring.results import store_scoring_result
    from mlcore.inference.scoring import load_scorer, score_scene
    from mlcore.ingest.scenes import NpyScene

    storage = get_storage()
    project = scene.project
    with tempfile.TemporaryDirectory() as tmp:
        path = colour_onnx_model(Path(tmp) / "model.onnx", project.class_names,
                                 project.window_size, sharpness=sharpness)  # fmt: skip
        version.model_key = f"{model_prefix(version)}/model.onnx"
        storage.write(version.model_key, path.read_bytes())
        version.save(update_fields=["model_key"])
        grid = score_scene(load_scorer(path), NpyScene(storage, scene.pixels_key),
                           project.score_step)  # fmt: skip
    run = ScoringRun.objects.create(scene=scene, model_version=version, status="running")
    store_scoring_result(run, grid, {"test_helper": True})
    return run


def test_dashboard_shows_the_cycle_live_and_labels_agree_with_the_curve(
    page, alice, project, storage_dir, redis_conn
):
    from django.utils import timezone
    from playwright.sync_api import expect

    scene, _ = make_scored_scene(project, 384, 512, seed=7, name="dock")
    add_dzi(scene)
    v1 = ModelVersion.objects.get(project=project, number=1)
    score_with(v1, scene, sharpness=0.025)  # a weak first model: the cycle has room to improve

    def answer(x, y, label, cid):
        return record_annotation(project, scene, alice, kind="review", label=label,
                                 x=x, y=y, w=32, h=32, client_id=cid)[0]  # fmt: skip

    # Three effective labels among six rows: one answer undone, one superseded.
    answer(0, 0, "car", "a")
    answer(32, 0, "boat", "b")
    answer(64, 0, "negative", "c-old")
    answer(64, 0, "car", "c-new")
    undo(answer(96, 0, "boat", "d"), alice, client_id="d-undo")
    effective = cycle.pending_annotations(project)
    assert len(effective) == 3 and Annotation.objects.count() == 6

    login(page, "alice", "pw-alice")
    page.goto(f"/projects/{project.pk}/")
    page.evaluate("window.__samePage = true")
    expect(page.locator("#pending-count")).to_have_text("3")
    expect(page.locator("#pending-breakdown")).to_contain_text("3 review")

    # The cycle, as the worker writes it: queued, training (corrections fed), scoring, ready.
    v2 = ModelVersion.objects.create(project=project, number=2, status="pending", parent=v1,
                                     classes=v1.classes)  # fmt: skip
    job = JobRecord.objects.create(project=project, kind=cycle.CYCLE_KIND, status="queued",
                                   params={"version_id": v2.pk}, message="queued")  # fmt: skip
    row = page.locator("#version-table tr[data-version='2']")
    expect(row).to_contain_text("pending")
    expect(row).to_contain_text("counted when its corrections are fed")
    started = timezone.now() - timedelta(seconds=5)
    JobRecord.objects.filter(pk=job.pk).update(status="running", started_at=started,
                                               progress_total=100, progress_done=5,
                                               message="training: epoch 1/3")  # fmt: skip
    ModelVersion.objects.filter(pk=v2.pk).update(status="training", data_counts={
        "annotations_used": len(effective),
        "seen_annotation_ids": list(cycle.unconsumed(project).values_list("pk", flat=True)),
    })  # fmt: skip
    expect(row).to_contain_text("training")
    expect(row.locator("td.trained-on")).to_have_text(
        "3 reviewed labels; dataset images counted once it is trained"
    )
    job_time = page.locator(f"#job-table tr[data-job='{job.pk}'] td.job-time")
    expect(job_time).to_have_text(re.compile(r"^\d+ s$"))
    first_time = int(job_time.inner_text().split()[0])
    assert first_time >= 5
    # It ticks while the job runs.
    expect(job_time).not_to_have_text(f"{first_time} s", timeout=10_000)
    assert int(job_time.inner_text().split()[0]) > first_time

    ModelVersion.objects.filter(pk=v2.pk).update(status="scoring")
    v2.refresh_from_db()
    score_with(v2, scene, sharpness=0.05)
    assert cycle.promote(v2)
    JobRecord.objects.filter(pk=job.pk).update(status="done", progress_done=100,
                                               finished_at=started + timedelta(seconds=42),
                                               message="1 scene(s) queued for scoring")  # fmt: skip

    rows = {r["number"]: r for r in version_rows(project, with_annotations=False)}
    before, after = rows[1], rows[2]
    f1 = (before["object"]["f1"], after["object"]["f1"])
    ap50 = (before["coco"]["ap50"], after["coco"]["ap50"])
    effect = page.locator("#cycle-effect")
    expect(effect).to_contain_text("Last cycle: v1 → v2")
    expect(effect.locator("[data-metric=f1]")).to_have_text(
        f"object F1 {fixed3(f1[0])} → {fixed3(f1[1])} ({signed3(f1[1] - f1[0])})"
    )
    expect(effect.locator("[data-metric=ap50]")).to_have_text(
        f"COCO AP@0.5 {fixed3(ap50[0])} → {fixed3(ap50[1])} ({signed3(ap50[1] - ap50[0])})"
    )
    expect(job_time).to_have_text("42 s")
    expect(row).to_contain_text("current")
    expect(page.locator("#pending-count")).to_have_text("0")
    expect(page.locator("#pending-breakdown")).to_have_count(0)
    assert page.evaluate("window.__samePage") is True  # all of it without a reload
    expect(page.locator("#export-coco")).to_have_attribute(
        "href", f"/api/projects/{project.pk}/annotations/export?format=coco"
    )
    assert f1[1] > f1[0]  # the sharper model finds more: a change to show
    dashboard_shot = screenshot(page, "dashboard.png")

    # Labels used / total agree with the learning curve: effective labels, not rows.
    page.click("#metrics-link")
    metrics_row = page.locator("#metrics-table tr[data-version='2'] td")
    expect(metrics_row.nth(1)).to_have_text("3")
    expect(metrics_row.nth(2)).to_have_text("3")
    curve = json_script(page.content(), "learning-curve-data")
    assert {p["version"]: p["labels"] for p in curve["project"]} == {1: 0, 2: 3}
    # The simulate_review hint pastes into a shell as it is.
    expect(page.locator("#simulate-command")).to_have_text(
        "manage.py simulate_review 'cars and boats' --strategy random"
    )
    assert not page.js_errors, page.js_errors

    if os.environ.get("UPDATE_SCREENSHOTS"):
        shutil.copyfile(dashboard_shot, REPO / "docs" / "screenshots" / "dashboard.png")
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000

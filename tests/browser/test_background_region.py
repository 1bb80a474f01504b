"""Background by region (issue 34.2), in Chromium: b puts the viewer in region mode (the page says
so), a drag draws a rectangle, "nothing here (region)" stores it as a region annotation of the
negative class; inside a region a click still marks objects (the region is picked only at its
edge); picked at its edge it is undone like any mark; a region smaller than one object is
refused at once in words; b again: the drag pans again."""

from __future__ import annotations

import pytest
from browser_helpers import add_dzi, login
from review_helpers import make_scored_scene

from labeling.loop.cycle import effective_annotations
from labeling.models import Annotation

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def drag(page, a, b):
    start = page.evaluate("([x, y]) => sceneViewer.pageXY(x, y)", list(a))
    end = page.evaluate("([x, y]) => sceneViewer.pageXY(x, y)", list(b))
    page.mouse.move(start["x"], start["y"])
    page.mouse.down()
    page.mouse.move((start["x"] + end["x"]) / 2, (start["y"] + end["y"]) / 2, steps=4)
    page.mouse.move(end["x"], end["y"], steps=4)
    page.mouse.up()


def click(page, x, y):
    pos = page.evaluate("([x, y]) => sceneViewer.pageXY(x, y)", [x, y])
    page.mouse.click(pos["x"], pos["y"])


def test_a_region_drawn_in_region_mode(page, alice, project, storage_dir, redis_conn):
    from playwright.sync_api import expect

    scene, _ = make_scored_scene(project, 768, 1024, seed=5, name="regions")
    add_dzi(scene)
    login(page, "alice", "pw-alice")
    page.goto(f"/scenes/{scene.pk}/")
    page.wait_for_function("window.sceneViewer && sceneViewer.ready()")
    expect(page.locator("#region-hint")).to_be_hidden()

    page.keyboard.press("b")
    expect(page.locator("#region-hint")).to_be_visible()
    expect(page.locator("#region-hint")).to_contain_text("drag a rectangle")
    expect(page.locator("#region-mode")).to_have_attribute("aria-pressed", "true")
    drag(page, (100, 100), (300, 240))
    expect(page.locator("#box-popup")).to_contain_text("No object of any class")
    page.keyboard.press("0")
    page.wait_for_function("sceneViewer.pending() === 0")
    region = Annotation.objects.get(kind="region")
    assert region.label == project.negative_class
    assert abs(region.x - 100) <= 3 and abs(region.y - 100) <= 3
    assert abs(region.w - 200) <= 4 and abs(region.h - 140) <= 4
    drawn = page.evaluate("sceneViewer.lastDraw().corrections.map(c => c.text)")
    assert "nothing here (region)" in drawn

    # Inside the region a click is no region pick: objects can still be marked there.
    click(page, 200, 170)
    expect(page.locator("#box-popup")).to_be_visible()
    expect(page.locator("#box-popup")).not_to_contain_text("Undo this region")
    page.keyboard.press("Escape")

    # Picked at its edge, it is undone like any mark.
    click(page, region.x + region.w, region.y + region.h // 2)
    expect(page.locator("#box-popup")).to_contain_text("nothing here (region)")
    page.click("#box-popup [data-action=undo-region]")
    page.wait_for_function("sceneViewer.pending() === 0")
    undo = Annotation.objects.get(kind="undo")
    assert undo.undoes_id == region.pk
    assert not effective_annotations(Annotation.objects.filter(scene=scene))

    # Smaller than one object (32 px): refused in words at once, nothing stored.
    drag(page, (400, 400), (420, 415))
    expect(page.locator("#box-popup")).to_contain_text("Too small for a region")
    page.keyboard.press("0")
    expect(page.locator("#box-popup [data-action=background-region]")).to_have_count(0)
    page.keyboard.press("Escape")
    assert Annotation.objects.count() == 2

    # b again: back to panning (a drag draws nothing).
    page.keyboard.press("b")
    expect(page.locator("#region-hint")).to_be_hidden()
    drag(page, (500, 300), (600, 400))
    expect(page.locator("#box-popup")).to_be_hidden()
    assert Annotation.objects.count() == 2

"""The object size measured from the reviewers' boxes (issue 34.3) in one click, in Chromium: the
edit page offers "Use N px (median of K boxes)"; the click fills the field and saves the project."""

from __future__ import annotations

import pytest
from browser_helpers import login

from labeling.models import Project, Scene
from labeling.review.annotations import record_annotation

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_one_click_uses_the_measured_size(page, alice, project, redis_conn):
    from playwright.sync_api import expect

    scene = Scene.objects.create(project=project, name="s", image_key="x.png", width=800,
                                 height=600)  # fmt: skip
    for i, (w, h) in enumerate([(40, 30), (44, 44), (52, 20), (38, 50), (60, 58)]):
        record_annotation(project, scene, alice, kind="false_negative", label="car", x=70 * i,
                          y=10, w=w, h=h)  # fmt: skip
    login(page, "alice", "pw-alice")
    page.goto(f"/projects/{project.pk}/edit/")
    offer = page.locator("#use-measured-size")
    expect(offer).to_have_text("Use 50 px (median of 5 boxes)")  # longer sides 40 44 52 50 60
    offer.click()
    page.wait_for_url(f"**/projects/{project.pk}/")
    assert Project.objects.get(pk=project.pk).object_size == 50

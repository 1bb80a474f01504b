"""In headless Chromium against the live server: a cycle whose version is worse on held-out data
ends while the dashboard is open; without a reload the page says it was not made current, with
both figures, and its "Make current anyway" button makes it current (issue 35.2)."""

from __future__ import annotations

import pytest
from browser_helpers import login
from loop_helpers import finished_cycle, save_calibration_scene
from review_helpers import make_scored_scene

from labeling.loop import cycle
from labeling.models import JobRecord, ModelVersion

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_held_back_version_shows_live_and_the_button_makes_it_current(
    page, alice, project, storage_dir, redis_conn
):
    from playwright.sync_api import expect

    scene, run1 = make_scored_scene(project, 128, 160, seed=5)
    save_calibration_scene(project)
    v1 = run1.model_version
    job = JobRecord.objects.create(project=project, kind=cycle.CYCLE_KIND, status="running",
                                   progress_total=100, progress_done=50,
                                   message="scoring")  # fmt: skip
    login(page, "alice", "pw-alice")
    page.goto(f"/projects/{project.pk}/")
    expect(page.locator("#held-back")).to_have_count(0)
    # The status line follows the running cycle (it once said "started" long after the end).
    status_line = page.locator("#retrain-message")
    expect(status_line).to_contain_text(f"Retrain cycle (job {job.pk}) running: scoring")

    # The cycle's last steps, as the workers write them: a version that calls cars boats.
    v2 = finished_cycle(project, scene, run1, v1, ["boat", "car", "negative"], alice)
    JobRecord.objects.filter(pk=job.pk).update(params={"version_id": v2.pk})
    assert cycle.after_scoring(v2) == "ready"
    JobRecord.objects.filter(pk=job.pk).update(status="done", progress_done=100, message="done")
    held = ModelVersion.objects.get(pk=v2.pk).metrics["promotion"]

    notice = page.locator("#held-back")
    expect(notice).to_contain_text("Model v2 was not made current")
    expect(status_line).to_contain_text(f"Retrain cycle (job {job.pk}) ended")
    expect(status_line).not_to_contain_text("running")
    expect(notice).to_contain_text(f"{held['new']:.3f}")
    expect(notice).to_contain_text(f"the current v1 {held['current']:.3f}")
    expect(page.locator("#version-table tr[data-version='2']")).to_contain_text("kept back")

    page.click("#held-back-make-current")
    page.wait_for_url(f"**/projects/{project.pk}/")
    expect(page.locator("#version-table tr[data-version='2'] .current-badge")).to_be_visible()
    expect(page.locator("#held-back")).to_have_count(0)
    assert ModelVersion.objects.get(pk=v2.pk).is_current
    assert not page.js_errors

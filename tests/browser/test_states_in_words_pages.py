"""States in words where the page's script draws them (headless Chromium): the dashboard's job
table, as its poll redraws it, names job kinds in words ("Scene import", never
``import_scene``), and the metrics chart's axis ticks read with three decimals like every
figure of the app (labeling.web.formatting; they once read 0.0 .. 1.0)."""

from __future__ import annotations

import re

import pytest
from browser_helpers import login
from review_helpers import make_scored_scene

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_job_table_and_the_chart_s_ticks_read_as_words_and_three_decimals(
    page, alice, project, storage_dir, redis_conn
):
    from playwright.sync_api import expect

    from labeling.models import JobRecord

    make_scored_scene(project, 128, 128, seed=4, name="small")
    job = JobRecord.objects.create(project=project, kind="import_scene", status="done",
                                   progress_total=3, progress_done=3,
                                   message="scene ready")  # fmt: skip
    login(page, "alice", "pw-alice")
    page.goto(f"/projects/{project.pk}/")
    row = page.locator(f"#job-table tr[data-job='{job.pk}']")
    expect(row.locator("td.job-message")).to_have_text("scene ready")
    # A new message: the poll redraws the table (dashboard.js), and the kind stays in words.
    JobRecord.objects.filter(pk=job.pk).update(message="scene ready again")
    expect(row.locator("td.job-message")).to_have_text("scene ready again")
    expect(row.locator("td.job-kind")).to_have_text("Scene import")
    expect(row.locator("td.job-kind")).to_have_attribute("title", "import_scene")

    page.goto(f"/projects/{project.pk}/metrics/")
    expect(page.locator("#metrics-chart svg")).to_be_visible()
    ticks = page.locator("#metrics-chart text.tick-y").all_text_contents()
    assert ticks == ["0.000", "0.200", "0.400", "0.600", "0.800", "1.000"], ticks
    for tick in page.locator("svg text.tick-y").all_text_contents():  # the learning curve too
        assert re.fullmatch(r"\d\.\d{3}", tick), tick
    assert not page.js_errors, page.js_errors

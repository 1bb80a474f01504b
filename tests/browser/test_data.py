"""A new user's first hour, in headless Chromium against the live server, with a real RQ worker
process: create "ships and planes", import a zip of image folders (progress bar, count table),
add a scene (ready, in the viewer or on the project's pages), and see an oversized upload and a
corrupt image refused with nothing left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser_helpers import PAGE_WORKER_APP, stop_page_worker
from django.urls import NoReverseMatch, Resolver404, resolve, reverse
from helpers_data import image_folder_zip, scene_png, storage_files, truncated

from labeling.models import Dataset, JobRecord, Project, Scene

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[2]
TIMEOUT_MS = 90_000


@pytest.fixture
def rq_worker(storage_dir, redis_conn, settings):
    """`manage.py rqworker default` in its own process, on the test database, the test's storage
    and this Redis db; stopped (by its pid) when the test ends."""
    from django.db import connection

    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "STORAGE_URL": str(storage_dir),
        "PYTHONUNBUFFERED": "1",
        "PGAPPNAME": PAGE_WORKER_APP,
    }
    if db.get("PASSWORD"):
        env["DATABASE_URL"] = env["DATABASE_URL"].replace(
            f"//{db['USER']}@", f"//{db['USER']}:{db['PASSWORD']}@"
        )
    log = storage_dir.parent / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "rqworker", "default", "--worker-class",
             "rq.worker.SimpleWorker"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    yield proc
    stop_page_worker(proc, log, timeout=20)


@pytest.fixture
def page(live_server, monkeypatch):
    # The ORM beside Playwright's event loop; monkeypatch unsets it afterwards (left set, it
    # leaks into test_foundation's `manage.py check --deploy`, which refuses it).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `scripts/check_system.sh --browser`.")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        context = browser.new_context(base_url=live_server.url)
        context.set_default_timeout(TIMEOUT_MS)
        pg = context.new_page()
        yield pg
        context.close()
        browser.close()


def test_a_new_user_brings_their_own_data(
    page, rq_worker, make_user, storage_dir, settings, tmp_path
):
    from playwright.sync_api import expect

    settings.UPLOAD_MAX_BYTES = 300_000
    make_user("dora")
    zip_path = image_folder_zip(
        tmp_path / "planes-and-ships.zip", {"airplane": 4, "ship": 3, "bird": 2},
        extra={"ship/broken.jpg": b"not a jpeg"},
    )  # fmt: skip
    scene_path = tmp_path / "harbour.png"
    scene_path.write_bytes(scene_png(300, 200))

    # Log in as a user with no projects yet.
    page.goto("/login/")
    page.fill("#id_username", "dora")
    page.fill("#id_password", "pw-dora")
    page.click("button[type=submit]")
    expect(page.locator("main")).to_contain_text("not a member of any project")

    # The new project form: two classes with their source classes.
    page.click("#new-project")
    page.fill("#id_name", "ships and planes")
    rows = page.locator("#class-rows tbody tr")
    expect(rows).to_have_count(1)  # the form starts empty: no demo class to rename
    expect(rows.nth(0).locator("input[name=class_name]")).to_have_value("")
    page.click("#add-class")
    rows.nth(0).locator("input[name=class_name]").fill("plane")
    rows.nth(0).locator("input[name=class_sources]").fill("airplane")
    rows.nth(1).locator("input[name=class_name]").fill("ship")
    rows.nth(1).locator("input[name=class_sources]").fill("ship")
    page.fill("#id_score_step", "12")  # not a divisor of 32: refused with the reason
    page.click("#project-form button[type=submit]")
    expect(page.locator("#project-form")).to_contain_text("should divide the window size (32)")
    assert not Project.objects.exists()
    page.fill("#id_score_step", "16")
    page.click("#project-form button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Add a dataset to ships and planes")
    project = Project.objects.get(name="ships and planes")
    assert [(c["name"], c["sources"]) for c in project.classes] == [
        ("plane", ["airplane"]), ("ship", ["ship"])
    ]  # fmt: skip

    # An oversized dataset upload is refused and leaves nothing.
    big_zip = image_folder_zip(tmp_path / "big.zip", {"airplane": 10}, size=400)
    assert big_zip.stat().st_size > settings.UPLOAD_MAX_BYTES
    page.set_input_files("#id_upload", str(big_zip))
    page.click("#dataset-form button[type=submit]")
    expect(page.locator("#dataset-form")).to_contain_text("above the upload limit of 293.0 KiB")
    assert not Dataset.objects.exists() and storage_files(storage_dir) == []

    # The small zip: progress bar, then the count table and the skipped file.
    page.set_input_files("#id_upload", str(zip_path))
    page.click("#dataset-form button[type=submit]")
    expect(page.locator("#import-progress")).to_be_visible()
    expect(page.locator("#status-text")).to_have_text("ready")
    expect(page.locator("#import-progress")).to_have_attribute("aria-valuenow", "100")
    table = page.locator("#count-table")
    expect(table.locator("tbody tr")).to_have_count(3)
    expect(table.locator("tbody tr").nth(0)).to_have_text("airplane4plane")
    expect(table.locator("tbody tr").nth(1)).to_have_text("ship3ship")
    expect(table.locator("tbody tr").nth(2)).to_have_text("bird2negative")
    # The per-project-class totals are a block of their own, with a heading.
    expect(page.locator("#project-counts-heading")).to_contain_text("Per project class")
    totals = page.locator("#project-count-table")
    expect(totals.locator("thead")).to_contain_text("Project class")
    expect(totals.locator("tbody tr")).to_have_count(3)
    expect(totals).to_contain_text("negative")
    expect(page.locator("#skipped-count")).to_have_text("1")
    expect(page.locator("#skipped-table")).to_contain_text("ship/broken.jpg")
    expect(page.locator("#skipped-table")).to_contain_text("not a readable image")
    dataset = Dataset.objects.get(project=project)
    assert dataset.status == "ready"

    # A scene: uploaded, converted, deep-zoom tiles made by the worker.
    page.click("text=Add a scene")
    page.set_input_files("#id_image", str(scene_path))
    page.click("#scene-form button[type=submit]")
    expect(page.locator("#scene-ready")).to_have_text("ready")
    expect(page.locator("#scene-dzi")).to_have_text("ready")
    expect(page.locator("#scene-size")).to_have_text("300 × 200 px")
    scene = Scene.objects.get(project=project)
    assert scene.pixels_key and scene.dzi_key
    viewer = page.locator("#viewer-link")
    expect(viewer).to_be_visible()
    try:
        viewer_url = reverse("scene-viewer", args=[scene.pk])
    except NoReverseMatch:
        viewer_url = None
    if viewer_url:  # the viewer exists: it opens on this scene
        with page.expect_navigation() as nav:
            viewer.click()
        assert nav.value.status == 200 and page.url.endswith(viewer_url)
    else:  # no viewer yet: the scene is listed on the project's pages
        project_page = f"/projects/{project.pk}/"
        try:
            resolve(project_page)
        except Resolver404:
            project_page = reverse("scene-new", args=[project.pk])
        page.goto(project_page)
        expect(page.locator("main")).to_contain_text("harbour.png")

    # An oversized scene and a corrupt one: each refused with its reason, nothing left.
    files_before = storage_files(storage_dir)
    jobs_before = JobRecord.objects.count()
    page.goto(reverse("scene-new", args=[project.pk]))
    big = tmp_path / "huge.png"
    big.write_bytes(scene_png(600, 600, seed=1))
    page.set_input_files("#id_image", str(big))
    page.click("#scene-form button[type=submit]")
    expect(page.locator("#scene-form")).to_contain_text("huge.png is")
    expect(page.locator("#scene-form")).to_contain_text("above the upload limit")
    corrupt = tmp_path / "cut.png"
    corrupt.write_bytes(truncated(scene_png(300, 200, seed=2)))
    page.set_input_files("#id_image", str(corrupt))
    page.click("#scene-form button[type=submit]")
    expect(page.locator("#form-errors")).to_contain_text("cut.png is corrupt or truncated")
    time.sleep(0.5)  # nothing is queued, so nothing can appear late; look once more anyway
    assert Scene.objects.filter(project=project).count() == 1
    assert JobRecord.objects.count() == jobs_before
    assert storage_files(storage_dir) == files_before

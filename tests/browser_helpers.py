"""Helpers of the review-area page and browser tests: a deep-zoom pyramid for a scored scene
(the same code path as the `dzi` job: mlcore.ingest.deepzoom into the configured storage), and a
Playwright browser on Debian's Chromium (never a downloaded one)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"


def add_dzi(scene, tile_size: int = 254) -> str:
    """Write the scene's DZI pyramid under its storage prefix and set Scene.dzi_key."""
    from labeling.projects.storage_keys import get_storage, scene_prefix
    from mlcore.ingest.deepzoom import generate_dzi
    from mlcore.ingest.scenes import NpyScene

    storage = get_storage()
    prefix = f"{scene_prefix(scene)}/dzi/"
    info = generate_dzi(
        NpyScene(storage, scene.pixels_key),
        lambda key, data: storage.write(prefix + key, data),
        name="scene",
        tile_size=tile_size,
    )
    scene.dzi_key = prefix + info.dzi_key
    scene.save(update_fields=["dzi_key"])
    return scene.dzi_key


@contextmanager
def chromium_page(base_url: str, timeout_ms: int = 60_000, viewport=(1400, 900)):
    """A headless Chromium page on the live server. Playwright's sync API runs an event loop in
    this thread, so the ORM beside it needs DJANGO_ALLOW_ASYNC_UNSAFE."""
    from playwright.sync_api import sync_playwright

    # Only for the browser's lifetime: left set, it would leak into other tests' subprocesses
    # (`manage.py check --deploy` refuses it).
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: run `scripts/check_system.sh --browser`.")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        context = browser.new_context(
            base_url=base_url, viewport={"width": viewport[0], "height": viewport[1]}
        )
        context.set_default_timeout(timeout_ms)
        page = context.new_page()
        errors: list[str] = []

        def on_error(exc):
            errors.append(str(exc))
            print(f"page error: {exc}")

        page.on("pageerror", on_error)
        page.js_errors = errors  # type: ignore[attr-defined]
        page.on("console", lambda msg: print(f"console {msg.type}: {msg.text}"))
        page.on("requestfailed", lambda req: print(f"request failed: {req.url} {req.failure}"))
        try:
            yield page
        except BaseException:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "failure.png"))
            raise
        finally:
            context.close()
            browser.close()
            if previous is None:
                os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
            else:
                os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def login(page, username: str, password: str) -> None:
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return path


# A worker a browser test starts names its database sessions (libpq's PGAPPNAME), so its end
# waits for those alone: the live server's own sessions stay open and were waited for in vain.
PAGE_WORKER_APP = "test-page-worker"


def stop_page_worker(proc, log: Path, timeout: float = 30.0) -> None:
    """End a worker a browser test started beside the live server (with ``PGAPPNAME`` =
    ``PAGE_WORKER_APP`` in its environment), then wait until its database sessions are gone
    (they end a moment after the process), so the test database can be dropped at the end of
    the run."""
    import subprocess
    import time

    from django.db import connection

    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.returncode not in (0, -15, 1):
        print(log.read_text()[-5000:])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND application_name = %s",
                [PAGE_WORKER_APP],
            )
            if cursor.fetchone()[0] == 0:
                break
        time.sleep(0.2)
    connection.close()  # opened beside Playwright's greenlet: pytest-django would not close it


def accept_key(item: dict) -> str:
    """The key that accepts the review queue's guess for ``item``: Enter, or 0 (the negative
    class) where the queue asks for a choice instead (``needs_choice``: no class reaches its
    threshold, yet one ranks above the negative class)."""
    return "0" if item.get("needs_choice") else "Enter"

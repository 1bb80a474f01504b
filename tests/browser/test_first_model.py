"""A user's own project reaches its first model with no command line (issue 34, tests a, b, c):
in headless Chromium against the live server, with a real RQ worker process on the default,
train and score queues (Spark local), a project of two CIFAR-10-mapped classes of its own
("frog", "horse") is created from an empty form, gets a tile dataset and a scene uploaded in the
browser, trains its first model from the dashboard's button (the chain builds its training
canvases itself), shows the scored scene and a working review queue; the viewer legend and the
queue name its classes, the demo's "car" and "boat" appear nowhere. And a project of two classes
of its own with no dataset at all learns its first model from objects and background marked on
its uploaded scene in the viewer, then retrains on a queue answer."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from browser_helpers import PAGE_WORKER_APP, accept_key, login, stop_page_worker
from helpers_data import image_folder_zip, png_bytes, scene_png

from labeling.models import Annotation, Project, Scene

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

REPO = Path(__file__).resolve().parents[2]
TRAIN_TIMEOUT_MS = 300_000
DEMO_WORDS = re.compile(r"\b(cars?|boats?)\b", re.IGNORECASE)


@pytest.fixture
def worker(storage_dir, redis_conn, settings, tmp_path):
    """One `manage.py rqworker default train score` process on the test database, storage,
    Redis db and VAR_DIR; stopped by its pid when the test ends."""

    from labeling.jobs.local_services import worker_env

    settings.SPARK_MASTER = "local[1]"
    settings.VAR_DIR = tmp_path / "var"
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "rqworker", "default", "train", "score",
             "--worker-class", "rq.worker.SimpleWorker"],
            cwd=REPO, env=worker_env() | {"PGAPPNAME": PAGE_WORKER_APP}, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    yield proc
    stop_page_worker(proc, log, timeout=30)


def no_demo_classes(locator, where: str) -> None:
    text = locator.inner_text()
    found = DEMO_WORDS.findall(text)
    assert not found, f"{where} names the demo's classes: {found}"


def test_own_classes_and_a_tile_dataset_reach_a_scored_scene_and_a_queue(
    page, worker, make_user, settings, tmp_path
):
    from playwright.sync_api import expect

    settings.DEFAULT_TRAIN_PROFILE = "tiny"  # the button's profile: a first model in seconds
    make_user("dora")
    zip_path = image_folder_zip(tmp_path / "tiles.zip", {"frog": 10, "horse": 10, "truck": 10})
    scene_path = tmp_path / "meadow.png"
    scene_path.write_bytes(scene_png(128, 96, seed=3))
    login(page, "dora", "pw-dora")

    # The new-project form starts empty; two classes of one's own, mapped to CIFAR-10 names.
    page.goto("/projects/new/")
    rows = page.locator("#class-rows tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.nth(0).locator("input[name=class_name]")).to_have_value("")
    no_demo_classes(page.locator("#class-rows"), "the new-project form's rows")
    page.fill("#id_name", "frogs and horses")
    rows.nth(0).locator("input[name=class_name]").fill("frog")
    rows.nth(0).locator("input[name=class_sources]").fill("frog")
    page.click("#add-class")
    rows.nth(1).locator("input[name=class_name]").fill("horse")
    rows.nth(1).locator("input[name=class_sources]").fill("horse")
    page.click("#project-form button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Add a dataset to frogs and horses")
    project = Project.objects.get(name="frogs and horses")
    assert [c["name"] for c in project.classes] == ["frog", "horse"]

    # Before any dataset: the dashboard says what to add, the button is off and says why.
    page.goto(f"/projects/{project.pk}/")
    expect(page.locator("#retrain-button")).to_be_disabled()
    expect(page.locator("#next-step")).to_contain_text("add a tile dataset")
    expect(page.locator("#retrain-button")).to_have_attribute("title", re.compile("frog, horse"))

    # The tile dataset and the scene, uploaded in the browser.
    page.goto(f"/projects/{project.pk}/datasets/new/")
    page.set_input_files("#id_upload", str(zip_path))
    page.click("#dataset-form button[type=submit]")
    expect(page.locator("#status-text")).to_have_text("ready")
    page.goto(f"/projects/{project.pk}/scenes/new/")
    page.set_input_files("#id_image", str(scene_path))
    page.click("#scene-form button[type=submit]")
    expect(page.locator("#scene-ready")).to_have_text("ready")
    expect(page.locator("#scene-dzi")).to_have_text("ready")
    scene = Scene.objects.get(project=project)

    # The first model from the dashboard: canvases, training, scoring in one chain.
    page.goto(f"/projects/{project.pk}/")
    button = page.locator("#retrain-button")
    expect(button).to_be_enabled()
    expect(button).to_have_text("Train the first model")
    expect(page.locator("#next-step")).to_contain_text("train the first model")
    button.click()
    expect(page.locator("#retrain-message")).to_contain_text("model v1")
    expect(button).to_be_disabled()
    version_row = page.locator("#version-table tr[data-version='1']")
    expect(version_row).to_contain_text("current", timeout=TRAIN_TIMEOUT_MS)
    card = page.locator(f".scene-card[data-scene='{scene.pk}']")
    expect(card).to_contain_text("scored by v1", timeout=TRAIN_TIMEOUT_MS)
    expect(page.locator("#next-step")).to_contain_text("review windows in the queue")
    assert project.model_versions.count() == 1
    no_demo_classes(page.locator("body"), "the dashboard")

    # The viewer: the legend and its correction samples name the project's classes.
    page.goto(f"/scenes/{scene.pk}/")
    legend = page.locator("#legend")
    expect(legend.locator("li[data-class='frog']")).to_be_visible()
    expect(legend.locator("li[data-class='horse']")).to_be_visible()
    expect(page.locator("#annotation-legend")).to_contain_text("missed: frog")
    expect(page.locator("#annotation-legend")).to_contain_text("was horse → frog")
    no_demo_classes(page.locator("body"), "the viewer")

    # The queue works on the new model's run and names the project's classes.
    page.goto(f"/projects/{project.pk}/review/?scene={scene.pk}")
    page.wait_for_function("window.reviewQueue && reviewQueue.current()")
    probs = page.locator("#queue-probs")
    expect(probs).to_contain_text("frog")
    expect(probs).to_contain_text("horse")
    no_demo_classes(page.locator("body"), "the review queue")
    page.keyboard.press(accept_key(page.evaluate("reviewQueue.current()")))
    page.wait_for_function("reviewQueue.count() === 1")
    page.wait_for_function("reviewQueue.pending() === 0")
    answer = Annotation.objects.get(project=project)
    assert answer.scene_id == scene.pk and answer.label in ("frog", "horse", "negative")
    assert not page.js_errors, page.js_errors


def grid_scene(tiles_per_side: int = 4, seed: int = 5):
    """A scene of 32-px tiles of three kinds a tiny network tells apart (test_loop's colours:
    red, blue, the rest) and which tile is where: [(x, y, kind)]."""
    import numpy as np
    from loop_helpers import synthetic_tiles

    rng = np.random.default_rng(seed)
    size = 32 * tiles_per_side
    image = np.zeros((size, size, 3), dtype=np.uint8)
    where = []
    for i in range(tiles_per_side * tiles_per_side):
        y, x, kind = 32 * (i // tiles_per_side), 32 * (i % tiles_per_side), i % 3
        image[y : y + 32, x : x + 32] = synthetic_tiles(kind, 1, rng)[0]
        where.append((x, y, kind))
    return png_bytes(image), where


def test_two_classes_of_ones_own_learn_from_the_scene_alone_then_retrain(
    page, worker, make_user, settings, tmp_path
):
    from playwright.sync_api import expect

    settings.DEFAULT_TRAIN_PROFILE = "tiny"
    make_user("dora")
    image, where = grid_scene()
    scene_path = tmp_path / "field.png"
    scene_path.write_bytes(image)
    login(page, "dora", "pw-dora")

    # Two classes of one's own, no source classes, no dataset.
    page.goto("/projects/new/")
    page.fill("#id_name", "red and blue")
    rows = page.locator("#class-rows tbody tr")
    rows.nth(0).locator("input[name=class_name]").fill("red")
    page.click("#add-class")
    rows.nth(1).locator("input[name=class_name]").fill("blue")
    page.click("#project-form button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Add a dataset to red and blue")
    project = Project.objects.get(name="red and blue")
    page.goto(f"/projects/{project.pk}/scenes/new/")
    page.set_input_files("#id_image", str(scene_path))
    page.click("#scene-form button[type=submit]")
    expect(page.locator("#scene-ready")).to_have_text("ready")
    expect(page.locator("#scene-dzi")).to_have_text("ready")
    scene = Scene.objects.get(project=project)
    page.goto(f"/projects/{project.pk}/")
    expect(page.locator("#retrain-button")).to_be_disabled()
    expect(page.locator("#next-step")).to_contain_text("start from a scene alone")

    # Marks in the viewer: a click on a tile, then its class or "nothing here".
    page.goto(f"/scenes/{scene.pk}/")
    page.wait_for_function("window.sceneViewer && sceneViewer.ready()")
    action = {0: "missed-red", 1: "missed-blue", 2: "background"}
    for x, y, kind in where[:9]:  # three of each kind
        pos = page.evaluate("([x, y]) => sceneViewer.pageXY(x, y)", [x + 16, y + 16])
        page.mouse.click(pos["x"], pos["y"])
        expect(page.locator("#box-popup")).to_contain_text("nothing here")
        page.click(f"#box-popup [data-action={action[kind]}]")
        page.wait_for_function("sceneViewer.pending() === 0")
    marks = Annotation.objects.filter(project=project)
    assert sorted(marks.values_list("label", flat=True)) == ["blue"] * 3 + ["negative"] * 3 + [
        "red"
    ] * 3  # fmt: skip
    assert set(marks.filter(label="negative").values_list("kind", flat=True)) == {"review"}
    no_demo_classes(page.locator("body"), "the viewer of a project without a model")
    page.goto(f"/projects/{project.pk}/review/?scene={scene.pk}")  # no model: said so
    expect(page.locator("#queue-no-model")).to_be_visible()
    expect(page.locator("#queue-empty")).not_to_contain_text("Every window is annotated")

    # The first model from the marks alone, from the dashboard.
    page.goto(f"/projects/{project.pk}/")
    expect(page.locator("#next-step")).to_contain_text("6 objects and 3 background marks")
    button = page.locator("#retrain-button")
    expect(button).to_be_enabled()
    button.click()
    version_row = page.locator("#version-table tr[data-version='1']")
    expect(version_row).to_contain_text("current", timeout=TRAIN_TIMEOUT_MS)
    expect(version_row).to_contain_text("held-out scene marks")
    card = page.locator(f".scene-card[data-scene='{scene.pk}']")
    expect(card).to_contain_text("scored by v1", timeout=TRAIN_TIMEOUT_MS)
    no_demo_classes(page.locator("body"), "the dashboard")

    # The viewer shows the scored run's boxes (legend counted), the queue works.
    page.goto(f"/scenes/{scene.pk}/")
    page.wait_for_function("window.sceneViewer && sceneViewer.ready()")
    expect(page.locator("#legend-total")).to_have_text(re.compile(r"^\d+$"))
    expect(page.locator("#legend li[data-class='red']")).to_be_visible()
    no_demo_classes(page.locator("body"), "the viewer")
    page.goto(f"/projects/{project.pk}/review/?scene={scene.pk}")
    page.wait_for_function("window.reviewQueue && reviewQueue.current()")
    expect(page.locator("#queue-probs")).to_contain_text("blue")
    no_demo_classes(page.locator("body"), "the review queue")
    page.keyboard.press(accept_key(page.evaluate("reviewQueue.current()")))
    page.wait_for_function("reviewQueue.count() === 1 && reviewQueue.pending() === 0")

    # Then a retrain on that answer.
    page.goto(f"/projects/{project.pk}/")
    button = page.locator("#retrain-button")
    expect(button).to_have_text("Retrain")
    expect(button).to_be_enabled()
    button.click()
    expect(page.locator("#version-table tr[data-version='2']")).to_contain_text(
        "current", timeout=TRAIN_TIMEOUT_MS
    )
    assert project.model_versions.count() == 2
    assert not page.js_errors, page.js_errors

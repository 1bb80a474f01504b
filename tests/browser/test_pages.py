"""The review area's pages with Django's test client: login required, other users' projects and
scenes are 404, and every page renders what it should for a scored scene (real scoring through
ONNX Runtime, a real deep-zoom pyramid in storage)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from browser_helpers import add_dzi
from django.urls import reverse
from review_helpers import config_of, make_scored_scene

from labeling.loop.metrics_view import run_confusion, version_rows
from labeling.models import Annotation, JobRecord, ModelVersion, Project
from labeling.review.annotations import record_annotation
from labeling.scoring.results import load_grid

pytestmark = pytest.mark.django_db


@pytest.fixture
def scored(project, storage_dir):
    scene, run = make_scored_scene(project, 256, 320, seed=3)
    return scene, run


def page_urls(project, scene):
    return [
        reverse("project-dashboard", args=[project.pk]),
        reverse("scene-viewer", args=[scene.pk]),
        reverse("review-queue", args=[project.pk]),
        reverse("project-metrics", args=[project.pk]),
    ]


def test_pages_need_login(client, project, scored):
    scene, _ = scored
    add_dzi(scene)
    for url in page_urls(project, scene) + [reverse("scene-dzi", args=[scene.pk, "scene.dzi"])]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login")), url


def test_other_users_project_and_scene_are_404(client, bob, project, scored):
    scene, _ = scored
    add_dzi(scene)
    client.force_login(bob)
    for url in page_urls(project, scene) + [reverse("scene-dzi", args=[scene.pk, "scene.dzi"])]:
        assert client.get(url).status_code == 404, url
    # Unknown ids too.
    assert client.get(reverse("project-dashboard", args=[999999])).status_code == 404
    assert client.get(reverse("scene-viewer", args=[999999])).status_code == 404


def test_project_list_links_to_the_dashboard(alice_client, project):
    html = alice_client.get(reverse("project-list")).content.decode()
    assert f'href="{reverse("project-dashboard", args=[project.pk])}"' in html


def test_dashboard_shows_scenes_versions_runs_jobs_and_pending(
    alice_client, alice, project, scored
):
    scene, run = scored
    add_dzi(scene)
    url = reverse("project-dashboard", args=[project.pk])
    response = alice_client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert scene.name in html
    assert reverse("scene-viewer", args=[scene.pk]) in html
    # Thumbnail: one tile of a small pyramid level, served by the tiles view.
    thumb = re.search(r'<img src="([^"]+)" alt="' + re.escape(scene.name), html).group(1)
    tile = alice_client.get(thumb)
    assert tile.status_code == 200 and tile["Content-Type"] == "image/jpeg"
    # The current version, its engine and its metrics from the run against ground truth.
    assert 'class="badge current-badge">current' in html
    assert "PyTorch" in html
    window_f1 = sum(
        v["tp"] for c, v in run.metrics["window"]["per_class"].items() if c != "negative"
    )
    assert window_f1 > 0
    assert f"<td>{run.n_windows}</td>" in html
    # Nothing to learn from yet: Retrain disabled, 0 pending.
    assert re.search(r'id="pending-count">0<', html)
    assert re.search(r'id="retrain-button"[^>]*disabled', html)
    config = config_of(response, "dashboard-config")
    assert config["jobs_url"] == reverse("api-jobs", args=[project.pk])
    assert config["retrain_url"] == reverse("api-retrain", args=[project.pk])
    assert config["pending"] == 0

    record_annotation(project, scene, alice, kind="false_negative", label="car",
                      x=10, y=10, w=32, h=32, client_id="p-1")  # fmt: skip
    record_annotation(project, scene, alice, kind="false_positive", label="negative",
                      x=64, y=64, w=32, h=32, client_id="p-2")  # fmt: skip
    JobRecord.objects.create(project=project, kind="dzi", status="running",
                             progress_done=3, progress_total=12, message="level 4")  # fmt: skip
    html = alice_client.get(url).content.decode()
    assert re.search(r'id="pending-count">2<', html)
    assert "1 missed object" in html and "1 false positive" in html  # words, not snake_case
    assert not re.search(r'id="retrain-button"[^>]*disabled', html)
    assert "level 4" in html and 'aria-valuenow="25"' in html


def test_dashboard_without_scenes_links_to_adding_data(alice_client, project):
    html = alice_client.get(reverse("project-dashboard", args=[project.pk])).content.decode()
    assert reverse("scene-new", args=[project.pk]) in html
    assert reverse("dataset-new", args=[project.pk]) in html
    assert reverse("project-new") in html
    assert "No model yet" in html


def test_dashboard_offers_rollback_to_an_older_ready_version(alice_client, project, scored):
    v1 = ModelVersion.objects.get(project=project, number=1)
    v2 = ModelVersion.objects.create(project=project, number=2, status="ready", classes=v1.classes,
                                     model_key=v1.model_key, parent=v1)  # fmt: skip
    ModelVersion.objects.filter(pk=v1.pk).update(is_current=False)
    ModelVersion.objects.filter(pk=v2.pk).update(is_current=True)
    html = alice_client.get(reverse("project-dashboard", args=[project.pk])).content.decode()
    action = reverse("api-model-current", args=[project.pk, 1])
    assert f'action="{action}"' in html and "(roll back)" in html
    # The button posts to the loop API, which makes v1 current again and comes back here.
    response = alice_client.post(action, {"next": reverse("project-dashboard", args=[project.pk])})
    assert response.status_code == 302
    assert ModelVersion.objects.get(pk=v1.pk).is_current


def test_scene_viewer_config(alice_client, project, scored):
    scene, run = scored
    response = alice_client.get(reverse("scene-viewer", args=[scene.pk]))
    assert response.status_code == 200
    # No pyramid yet: the page waits for the dzi job instead of opening the viewer.
    assert 'id="dzi-wait"' in response.content.decode()
    assert config_of(response, "viewer-config")["dzi_url"] is None

    add_dzi(scene)
    response = alice_client.get(reverse("scene-viewer", args=[scene.pk]))
    html = response.content.decode()
    assert 'id="dzi-wait"' not in html
    assert "openseadragon.min.js" in html
    config = config_of(response, "viewer-config")
    assert config["dzi_url"] == reverse("scene-dzi", args=[scene.pk, "scene.dzi"])
    assert config["run"] == {"id": run.pk, "model_version": 1}
    assert config["threshold"] == project.threshold
    assert [c["name"] for c in config["classes"]] == ["car", "boat"]
    assert config["urls"]["detections"] == reverse("api-detections", args=[scene.pk])
    assert config["urls"]["annotations"] == reverse("api-annotations", args=[scene.pk])
    assert config["urls"]["undo"] == "/api/annotations/{id}/undo"
    # The URLs the page's JS builds answer.
    assert alice_client.get(config["urls"]["detections"] + "?kind=window").status_code == 200
    assert alice_client.get(config["dzi_url"]).status_code == 200


def test_openseadragon_is_served_from_node_modules(alice_client, settings):
    from django.contrib.staticfiles import finders

    from labeling.views.pages import VIEWER_IMAGES, VIEWER_JS

    assert finders.find(VIEWER_JS), "run `make setup` (npm install) to get OpenSeadragon"
    assert finders.find(VIEWER_IMAGES + "home_rest.png")


def test_dzi_tiles_are_served_and_paths_checked(alice_client, project, scored):
    scene, _ = scored
    add_dzi(scene, tile_size=126)
    base = f"/scenes/{scene.pk}/dzi/"
    descriptor = alice_client.get(base + "scene.dzi")
    assert descriptor.status_code == 200
    assert descriptor["Content-Type"] == "application/xml"
    assert b'Width="320" Height="256"' in b"".join(descriptor.streaming_content)
    top = 9  # ceil(log2(320))
    tile = alice_client.get(base + f"scene_files/{top}/1_1.jpg")
    assert tile.status_code == 200 and tile["Content-Type"] == "image/jpeg"
    body = b"".join(tile.streaming_content)
    assert body[:3] == b"\xff\xd8\xff"
    assert "max-age" in tile["Cache-Control"]
    for bad in [
        "scene_files/../../pixels.npy",  # out of the pyramid
        "scene_files/%2e%2e/%2e%2e/pixels.npy",
        "../pixels.npy",
        "pixels.npy",
        "scene_files//9/0_0.jpg",
        "scene_files/9/99_99.jpg",  # no such tile
        "scene_files/9",  # a folder
        "other.dzi",
    ]:
        assert alice_client.get(base + bad).status_code == 404, bad


def test_review_queue_page(alice_client, project, scored):
    scene, _ = scored
    url = reverse("review-queue", args=[project.pk])
    response = alice_client.get(url + f"?scene={scene.pk}&strategy=margin")
    assert response.status_code == 200
    html = response.content.decode()
    for value in ("uncertainty", "margin", "entropy", "random", "top_score"):
        assert f'value="{value}"' in html
    assert re.search(r'<option value="margin" selected', html)
    config = config_of(response, "queue-config")
    assert config["scene"] == scene.pk and config["strategy"] == "margin"
    assert config["urls"]["queue"] == reverse("api-queue", args=[project.pk])
    assert config["urls"]["window_image"] == "/api/scenes/{scene}/window.png"
    # Keyboard help lists every class key and the negative keys.
    assert "it is a car" in html and "it is a boat" in html and "0 or n or 3" in html
    # A scene of another project (or none) is a 404, an unknown strategy falls back.
    assert alice_client.get(url + "?scene=999999").status_code == 404
    response = alice_client.get(url + "?strategy=nonsense")
    from labeling.review.queue import DEFAULT_STRATEGY

    assert config_of(response, "queue-config")["strategy"] == DEFAULT_STRATEGY


def test_metrics_page_numbers_match_the_runs(alice_client, alice, project, scored):
    scene, run = scored
    response = alice_client.get(reverse("project-metrics", args=[project.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    rows = version_rows(project)
    assert len(rows) == 1
    row = rows[0]
    per = run.metrics["window"]["per_class"]
    tp = sum(per[c]["tp"] for c in ("car", "boat"))
    fp = sum(per[c]["fp"] for c in ("car", "boat"))
    fn = sum(per[c]["fn"] for c in ("car", "boat"))
    assert (row["window"]["tp"], row["window"]["fp"], row["window"]["fn"]) == (tp, fp, fn)
    assert row["window"]["precision"] == round(tp / (tp + fp), 4)
    overall = run.metrics["object"]["overall"]
    assert row["object"]["tp"] == overall["tp"] and row["object"]["fn"] == overall["fn"]
    assert f'<td class="f1">{row["window"]["f1"]:.3f}</td>' in html
    assert 'id="metrics-chart"' in html and "metrics.js" in html
    chart = config_of(response, "metrics-data")
    assert chart["rows"][0]["number"] == 1

    # The confusion matrix: every window of the run, the same matrix as the stored metrics.
    assert 'id="confusion-table"' in html
    confusion = run_confusion(run)
    assert confusion["against"] == "ground_truth"
    assert np.asarray(confusion["matrix"]).sum() == run.n_windows
    assert confusion["matrix"] == run.metrics["window"]["confusion"]
    for n in np.asarray(confusion["matrix"]).ravel():
        assert f">{n}</td>" in html


def test_metrics_against_annotations_without_ground_truth(alice_client, alice, project, scored):
    scene, run = scored
    scene.ground_truth_key = ""
    scene.save(update_fields=["ground_truth_key"])
    run.metrics = {"detections": run.metrics["detections"]}
    run.save(update_fields=["metrics"])
    grid = load_grid(run)
    probs = grid.probs
    classes = list(grid.classes)
    # Two reviewed windows: the model's best window for car said 'car' (correct), and the
    # window it is most sure is negative said 'car' too (a miss).
    r, c = np.unravel_index(probs[..., classes.index("car")].argmax(), probs.shape[:2])
    nr, nc = np.unravel_index(probs[..., classes.index("negative")].argmax(), probs.shape[:2])
    for i, (rr, cc) in enumerate([(r, c), (nr, nc)]):
        record_annotation(project, scene, alice, kind="review", label="car",
                          x=int(grid.xs[cc]), y=int(grid.ys[rr]), w=32, h=32,
                          client_id=f"m-{i}")  # fmt: skip
    confusion = run_confusion(run)
    assert confusion["against"] == "annotations"
    assert confusion["windows"] == 2
    matrix = np.asarray(confusion["matrix"])
    car, neg = classes.index("car"), classes.index("negative")
    assert matrix[car, car] == 1 and matrix[car, neg] == 1
    row = version_rows(project)[0]
    assert row["window"] is None and row["object"] is None
    assert row["window_annotations"]["tp"] == 1 and row["window_annotations"]["fn"] == 1
    html = alice_client.get(reverse("project-metrics", args=[project.pk])).content.decode()
    assert "against the annotations" in html
    # An undo takes an answer back out of the matrix.
    from labeling.review.annotations import undo

    undo(Annotation.objects.get(client_id="m-1"), alice, client_id="m-undo")
    assert run_confusion(run)["windows"] == 1


def test_metrics_page_of_an_empty_project(alice_client, project):
    response = alice_client.get(reverse("project-metrics", args=[project.pk]))
    assert response.status_code == 200
    assert "No model versions yet" in response.content.decode()
    assert (
        alice_client.get(reverse("project-metrics", args=[project.pk]) + "?run=12345").status_code
        == 404
    )


def test_metrics_labels_used_per_cycle(alice_client, alice, project, scored):
    scene, _ = scored
    v1 = ModelVersion.objects.get(project=project, number=1)
    a, _ = record_annotation(project, scene, alice, kind="false_negative", label="boat",
                             x=0, y=0, w=32, h=32, client_id="l-1")  # fmt: skip
    v2 = ModelVersion.objects.create(project=project, number=2, status="ready", classes=v1.classes,
                                     parent=v1, data_counts={"annotations_used": 1})  # fmt: skip
    Annotation.objects.filter(pk=a.pk).update(consumed_by=v2)
    rows = {r["number"]: r for r in version_rows(project)}
    assert rows[1]["labels_used"] == 0 and rows[1]["labels_cumulative"] == 0
    assert rows[2]["labels_used"] == 1 and rows[2]["labels_cumulative"] == 1
    assert rows[2]["window"] is None  # v2 scored nothing yet
    assert Project.objects.get(pk=project.pk).current_model().number == 1

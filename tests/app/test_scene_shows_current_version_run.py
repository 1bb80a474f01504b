"""What people see of a scene is the scoring run of the project's current model version (or of the
version they chose), never a run of a cycle in flight, of a failed version or of a version rolled
back from: the scene API, the detections feed, the GeoJSON export, the review queue, the viewer,
the dashboard and the metrics page all follow `labeling.models.shown_runs`, and a rollback
(`set_current`) changes what they show. Real scoring through ONNX Runtime, PostgreSQL, Redis."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse
from review_helpers import config_of, make_scored_scene

from labeling.loop import cycle
from labeling.models import ModelVersion, ScoringRun
from labeling.scoring.results import load_grid, store_scoring_result


def scored_by(version, scene, like: ScoringRun) -> ScoringRun:
    """A done run of ``scene`` by ``version`` (the grid of ``like``, stored for real)."""
    run = ScoringRun.objects.create(scene=scene, model_version=version, status="running")
    store_scoring_result(run, load_grid(like))
    run.refresh_from_db()
    assert run.status == "done" and run.detections.exists()
    return run


def new_version(project, number, status, parent) -> ModelVersion:
    return ModelVersion.objects.create(
        project=project, number=number, status=status, parent=parent,
        classes=parent.classes, model_key=parent.model_key,
    )  # fmt: skip


def seen_runs(client, project, scene) -> dict:
    """The run id each surface shows for ``scene`` by default."""
    detail = client.get(f"/api/scenes/{scene.pk}").json()["latest_run"]
    feed = client.get(f"/api/scenes/{scene.pk}/detections?kind=merged").json()
    geo = json.loads(client.get(f"/api/scenes/{scene.pk}/geojson?crs=pixels").content)
    geo_runs = {f["properties"].get("run") for f in geo["features"]
                if f["properties"].get("source") == "detection"}  # fmt: skip
    queue = client.get(f"/api/projects/{project.pk}/queue?scene={scene.pk}").json()
    viewer = client.get(reverse("scene-viewer", args=[scene.pk]))
    dashboard = client.get(reverse("project-dashboard", args=[project.pk]))
    metrics = client.get(reverse("project-metrics", args=[project.pk]))
    shown_on_dashboard = [s["run"] for s in dashboard.context["scenes"] if s["scene"] == scene]
    return {
        "detail": detail and detail["id"],
        "feed": feed["run"],
        "geojson": geo_runs.pop() if len(geo_runs) == 1 else geo_runs,
        "queue": queue.get("run"),
        "viewer": (config_of(viewer, "viewer-config")["run"] or {}).get("id"),
        "dashboard": shown_on_dashboard[0] and shown_on_dashboard[0].pk,
        "metrics": metrics.context["run"] and metrics.context["run"].pk,
    }


def everywhere(run) -> dict:
    pk = run.pk if run is not None else None
    names = ("detail", "feed", "geojson", "queue", "viewer", "dashboard", "metrics")
    return dict.fromkeys(names, pk)


@pytest.mark.django_db(transaction=True)
def test_only_the_current_versions_run_is_shown_and_rollback_changes_it(
    alice_client, project, storage_dir, redis_conn
):
    scene, run1 = make_scored_scene(project, 128, 160, seed=5)
    v1 = run1.model_version
    assert v1.is_current
    assert seen_runs(alice_client, project, scene) == everywhere(run1)

    # A cycle in flight scored the scene (its other scenes are still to come): not shown.
    v2 = new_version(project, 2, "scoring", v1)
    run2 = scored_by(v2, scene, run1)
    assert seen_runs(alice_client, project, scene) == everywhere(run1)
    # The cycle fails (a killed worker): its finished run is still never shown.
    cycle.fail_version(v2, "score job failed: killed")
    assert ModelVersion.objects.get(pk=v2.pk).status == "failed"
    assert seen_runs(alice_client, project, scene) == everywhere(run1)

    # A cycle that finishes is promoted: its run is what everyone sees.
    v3 = new_version(project, 3, "scoring", v1)
    run3 = scored_by(v3, scene, run1)
    assert cycle.promote(v3)
    assert seen_runs(alice_client, project, scene) == everywhere(run3)

    # Rollback to v1: the viewer, the queue, the exports and the metrics follow.
    cycle.set_current(project, ModelVersion.objects.get(pk=v1.pk))
    assert seen_runs(alice_client, project, scene) == everywhere(run1)

    # A person may choose to look at another version, the failed one included.
    url = f"/api/scenes/{scene.pk}"
    assert alice_client.get(url + "?version=3").json()["latest_run"]["id"] == run3.pk
    assert alice_client.get(url + "?version=2").json()["latest_run"]["id"] == run2.pk
    feed = alice_client.get(f"/api/scenes/{scene.pk}/detections?run={run2.pk}").json()
    assert feed["run"] == run2.pk
    assert alice_client.get(url + "?version=99").status_code == 404
    for bad in ("abc", "0", "99999999999999"):
        response = alice_client.get(url + f"?version={bad}")
        assert response.status_code == 400 and "version" in response.json()["error"]


@pytest.mark.django_db(transaction=True)
def test_a_project_whose_only_version_failed_shows_no_run(
    alice_client, project, storage_dir, redis_conn
):
    scene, run1 = make_scored_scene(project, 128, 128, seed=6)
    v1 = run1.model_version
    # v1 was never promoted: its cycle failed after scoring the scene.
    ModelVersion.objects.filter(pk=v1.pk).update(status="failed", is_current=False)
    detail = alice_client.get(f"/api/scenes/{scene.pk}").json()
    assert detail["latest_run"] is None
    assert alice_client.get(f"/api/scenes/{scene.pk}/detections").status_code == 404
    queue = alice_client.get(f"/api/projects/{project.pk}/queue").json()
    assert queue["done"] is True


@pytest.mark.django_db(transaction=True)
def test_a_rollback_scores_the_scenes_the_version_never_scored(
    alice_client, project, storage_dir, redis_conn
):
    from rq import Queue

    old, run1 = make_scored_scene(project, 128, 128, seed=7)
    v1 = run1.model_version
    # v2 became current; then a scene was imported and scored by v2 alone.
    v2 = new_version(project, 2, "scoring", v1)
    scored_by(v2, old, run1)
    assert cycle.promote(v2)
    new, first = make_scored_scene(project, 128, 128, seed=8, name="imported later")
    scored_by(v2, new, first)
    first.delete()  # (make_scored_scene scores with v1: this scene never had a v1 run)
    queue = Queue("score", connection=redis_conn)
    before = len(queue.job_ids)

    response = alice_client.post(reverse("api-model-current", args=[project.pk, 1]),
                                 content_type="application/json")  # fmt: skip
    assert response.status_code == 200 and response.json()["is_current"] is True
    queued = ScoringRun.objects.filter(model_version=v1, scene=new)
    assert queued.count() == 1 and queued.get().status == "queued"
    assert response.json()["scoring_runs"] == [queued.get().pk]
    assert ScoringRun.objects.filter(model_version=v1, scene=old).count() == 1  # not again
    assert len(queue.job_ids) == before + 1
    # The page says so too (a form post, not JSON); nothing is queued twice.
    page = alice_client.post(reverse("api-model-current", args=[project.pk, 1]), follow=True)
    assert "is now current" in page.content.decode()
    assert ScoringRun.objects.filter(model_version=v1, scene=new).count() == 1

"""The loop area's JSON API: retrain (202, then 409 while the cycle runs), switching the
current model (rollback/promote), the jobs list and one job with its log; other users' projects
and jobs are 404. Real PostgreSQL and Redis (the cycle's job is really enqueued)."""

from __future__ import annotations

import django_rq
import pytest
from django.urls import reverse

from labeling.models import Dataset, JobRecord, ModelVersion, Project


def ready_version(project, number, current=False):
    return ModelVersion.objects.create(
        project=project, number=number, status="ready", is_current=current,
        model_key=f"models/{number}/model.onnx", checkpoint_key=f"models/{number}/ckpt.pt",
    )  # fmt: skip


def trainable(project):
    """A ready dataset: a first model is refused (409, in words) for a project with nothing to
    learn from (labeling.loop.first_model); these tests only enqueue the cycle."""
    Dataset.objects.create(project=project, name="tiles", source="test", status="ready")


@pytest.fixture
def other_project(bob):
    p = Project.objects.create(name="bob's boats")
    p.members.add(bob)
    return p


@pytest.mark.django_db(transaction=True)
def test_retrain_is_202_then_409_with_the_message(redis_conn, alice_client, project):
    trainable(project)
    url = reverse("api-retrain", args=[project.pk])
    first = alice_client.post(url, content_type="application/json")
    assert first.status_code == 202, first.content
    body = first.json()
    assert body["version"] == 1
    record = JobRecord.objects.get(pk=body["job"])
    assert record.kind == "retrain_cycle" and record.queue == "train" and record.status == "queued"
    # The job really is on the train queue of Redis.
    assert record.rq_job_id in django_rq.get_queue("train").job_ids

    second = alice_client.post(url, content_type="application/json")
    assert second.status_code == 409
    error = second.json()["error"]
    assert error.startswith("A retrain cycle is already running")
    assert "Wait for it to finish" in error
    assert second.json()["version"] == 1
    assert ModelVersion.objects.filter(project=project).count() == 1


@pytest.mark.django_db(transaction=True)
def test_retrain_from_the_dashboard_form_redirects_with_a_message(
    redis_conn, alice_client, project
):
    trainable(project)
    url = reverse("api-retrain", args=[project.pk])
    response = alice_client.post(url, {"profile": "tiny"})
    assert response.status_code == 302 and response["Location"] == f"/projects/{project.pk}/"
    assert ModelVersion.objects.get(project=project).train_config["profile"] == "tiny"
    again = alice_client.post(url, {"profile": "tiny"}, follow=False)
    assert again.status_code == 302
    stored = [str(m) for m in again.wsgi_request._messages]
    assert any("already running" in m for m in stored)


@pytest.mark.django_db
def test_retrain_rejects_an_unknown_profile(alice_client, project):
    response = alice_client.post(
        reverse("api-retrain", args=[project.pk]) + "?profile=huge",
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "Unknown training profile 'huge'" in response.json()["error"]
    assert not ModelVersion.objects.filter(project=project).exists()


@pytest.mark.django_db
def test_other_users_project_is_404_everywhere(alice_client, other_project):
    ready_version(other_project, 1, current=True)
    ready_version(other_project, 2)
    record = JobRecord.objects.create(project=other_project, kind="train", log="secret")
    for response in (
        alice_client.post(reverse("api-retrain", args=[other_project.pk]),
                          content_type="application/json"),
        alice_client.post(reverse("api-model-current", args=[other_project.pk, 2]),
                          content_type="application/json"),
        alice_client.get(reverse("api-jobs", args=[other_project.pk])),
        alice_client.get(reverse("api-job", args=[record.pk])),
    ):  # fmt: skip
        assert response.status_code == 404
        assert "error" in response.json() and "secret" not in response.content.decode()
    assert other_project.current_model().number == 1
    assert not ModelVersion.objects.filter(project=other_project, number=3).exists()


@pytest.mark.django_db
def test_rollback_and_promote_switch_the_current_model(alice_client, project):
    v1 = ready_version(project, 1)
    v2 = ready_version(project, 2, current=True)
    failed = ModelVersion.objects.create(project=project, number=3, status="failed")
    url = reverse("api-model-current", args=[project.pk, 1])
    response = alice_client.post(url, content_type="application/json")
    assert response.status_code == 200
    assert response.json()["number"] == 1 and response.json()["is_current"] is True
    assert project.current_model() == v1
    response = alice_client.post(
        reverse("api-model-current", args=[project.pk, 2]), content_type="application/json"
    )
    assert response.status_code == 200 and project.current_model() == v2
    bad = alice_client.post(
        reverse("api-model-current", args=[project.pk, failed.number]),
        content_type="application/json",
    )
    assert bad.status_code == 400 and "only a ready model" in bad.json()["error"]
    missing = alice_client.post(
        reverse("api-model-current", args=[project.pk, 9]), content_type="application/json"
    )
    assert missing.status_code == 404 and "no model v9" in missing.json()["error"]
    assert project.current_model() == v2
    assert alice_client.get(url).status_code == 405


@pytest.mark.django_db
def test_jobs_list_and_job_detail_with_log(alice_client, project):
    old = JobRecord.objects.create(
        project=project, kind="build_canvases", status="done", progress_done=3,
        progress_total=3, log="[12:00] built\n",
    )  # fmt: skip
    new = JobRecord.objects.create(
        project=project, kind="train", status="failed", error="ValueError: no canvases",
        message="training: step 2",
    )  # fmt: skip
    response = alice_client.get(reverse("api-jobs", args=[project.pk]))
    assert response.status_code == 200
    jobs = response.json()["jobs"]
    assert [j["id"] for j in jobs] == [new.pk, old.pk]
    for key in ("id", "kind", "status", "progress_done", "progress_total", "message", "error",
                "created_at"):  # fmt: skip
        assert key in jobs[0]
    assert jobs[0]["error"] == "ValueError: no canvases" and "log" not in jobs[0]
    assert jobs[1]["progress_done"] == 3 and jobs[1]["progress_total"] == 3

    limited = alice_client.get(reverse("api-jobs", args=[project.pk]) + "?limit=1")
    assert [j["id"] for j in limited.json()["jobs"]] == [new.pk]
    bad = alice_client.get(reverse("api-jobs", args=[project.pk]) + "?limit=lots")
    assert bad.status_code == 400 and "limit must be an integer" in bad.json()["error"]

    detail = alice_client.get(reverse("api-job", args=[old.pk]))
    assert detail.status_code == 200
    assert detail.json()["log"] == "[12:00] built\n" and detail.json()["kind"] == "build_canvases"
    assert alice_client.get(reverse("api-job", args=[99999])).status_code == 404


@pytest.mark.django_db
def test_logged_out_is_refused(client, project):
    response = client.get(reverse("api-jobs", args=[project.pk]))
    assert response.status_code in (401, 302)


@pytest.mark.django_db(transaction=True)
def test_retrain_takes_the_profile_from_a_json_body(redis_conn, alice_client, project):
    trainable(project)
    url = reverse("api-retrain", args=[project.pk])
    bad = alice_client.post(url, "{not json", content_type="application/json")
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]
    response = alice_client.post(url, {"profile": "tiny"}, content_type="application/json")
    assert response.status_code == 202
    assert ModelVersion.objects.get(project=project).train_config["profile"] == "tiny"

"""No answer carries an absolute path of the server (labeling.web.server_paths): the starting-model
409, the project API (a version records the folder it started from), a failed job's reason.
Each answer is scanned for the app's folder, VAR_DIR and the test's temporary folder."""

from __future__ import annotations

import pytest
from django.conf import settings
from loop_helpers import add_dataset

from labeling.models import JobRecord, ModelVersion
from labeling.web import server_paths
from labeling.web.server_paths import REPO, hide_server_paths
from mlcore.model import starting_model


def server_folders(tmp_path) -> list[str]:
    return [str(REPO), str(settings.VAR_DIR), str(tmp_path), "/tmp/"]


def assert_no_server_path(answer, tmp_path) -> str:
    text = answer.content.decode()
    for folder in server_folders(tmp_path):
        assert folder not in text, (folder, text[:2000])
    return text


@pytest.fixture
def var_settings(settings, tmp_path, storage_dir):
    settings.VAR_DIR = tmp_path / "var"
    return settings


@pytest.mark.django_db
def test_the_starting_model_409_names_no_server_folder(
    var_settings, project, alice_client, tmp_path, monkeypatch
):
    add_dataset(project)  # something to train on: the starting model is what fails
    missing = tmp_path / "var" / "starting-model"
    monkeypatch.setenv(starting_model.STARTING_MODEL_ENV, str(missing))
    url = f"/api/projects/{project.pk}/retrain"
    answer = alice_client.post(url, content_type="application/json", data={"profile": "quick"})
    assert answer.status_code == 409, answer.content
    text = assert_no_server_path(answer, tmp_path)
    assert "starting model" in text and "card.json" in text  # still says which file


@pytest.mark.django_db
def test_the_project_api_and_jobs_name_no_server_folder(var_settings, project, alice_client,
                                                         tmp_path):  # fmt: skip
    ModelVersion.objects.create(
        project=project, number=1, status="ready", is_current=True,
        train_config={"started_from": starting_model.describe()},
    )  # fmt: skip
    JobRecord.objects.create(
        project=project, kind="import_scene", status="failed",
        error=f"FileNotFoundError: {settings.VAR_DIR}/cache/x.npy and {REPO}/mlcore/y.py",
        log=f'File "{REPO}/workers/data_jobs.py", line 3\n',
    )  # fmt: skip
    answer = alice_client.get(f"/api/projects/{project.pk}")
    assert answer.status_code == 200
    assert_no_server_path(answer, tmp_path)
    started = answer.json()["model_versions"][0]["started_from"]
    assert started["folder"] == "mlcore/model/weights/cifar10-scene-resnet20"  # relative to the app
    jobs = alice_client.get(f"/api/projects/{project.pk}/jobs")
    assert jobs.status_code == 200
    assert_no_server_path(jobs, tmp_path)
    page = alice_client.get(f"/projects/{project.pk}/")
    assert page.status_code == 200
    assert_no_server_path(page, tmp_path)


def test_only_whole_folders_are_rewritten(settings, tmp_path):
    settings.VAR_DIR = tmp_path / "var"
    assert hide_server_paths(f"{REPO}/mlcore/x.py") == "mlcore/x.py"
    assert hide_server_paths(f"{tmp_path}/var/cache/a") == "[var]/cache/a"
    assert hide_server_paths("/var/tmp/a /tmpfile /api/tmp") == "/var/tmp/a /tmpfile /api/tmp"


@pytest.mark.django_db
def test_the_folders_are_worked_out_once_per_process(var_settings, project, alice_client,
                                                     tmp_path):  # fmt: skip
    """Settings do not change while a server runs: many answers, one look at the folders (a
    test's setting change has them worked out again)."""
    error = f"FileNotFoundError: {settings.VAR_DIR}/cache/x.npy"
    JobRecord.objects.create(project=project, kind="import_scene", status="failed", error=error)
    server_paths._folders.cache_clear()
    for _ in range(3):
        assert_no_server_path(alice_client.get(f"/api/projects/{project.pk}/jobs"), tmp_path)
        assert_no_server_path(alice_client.get(f"/projects/{project.pk}/"), tmp_path)
    assert server_paths._folders.cache_info().misses == 1
    var_settings.VAR_DIR = tmp_path / "var2"
    assert server_paths._folders.cache_info().currsize == 0  # forgotten: worked out again
    assert hide_server_paths(f"{tmp_path}/var2/a") == "[var]/a"

"""Objects of any size (issue 34.3): a project states its objects' size on its scenes (empty: the
window size) on the new-project form, the edit page and PATCH /api/projects/<id>, while no model
depends on it; the viewer places a click's box of that size."""

from __future__ import annotations

import json

import pytest
from review_helpers import json_script

from labeling.models import ModelVersion, Project, Scene

pytestmark = pytest.mark.django_db


def patch(client, project, body):
    return client.patch(f"/api/projects/{project.pk}", json.dumps(body),
                        content_type="application/json")  # fmt: skip


def test_a_new_project_states_its_object_size_or_keeps_the_window(alice_client):
    answer = alice_client.post("/api/projects", json.dumps({"name": "cells", "object_size": 48}),
                               content_type="application/json")  # fmt: skip
    assert answer.status_code == 201, answer.content
    assert answer.json()["object_size"] == 48
    cells = Project.objects.get(name="cells")
    assert (cells.object_size, cells.scene_window, cells.scene_score_step) == (48, 48, 24)
    plain = alice_client.post("/api/projects", json.dumps({"name": "plain"}),
                              content_type="application/json")  # fmt: skip
    assert plain.json()["object_size"] is None
    plain = Project.objects.get(name="plain")
    assert (plain.scene_window, plain.scene_score_step) == (32, 16)  # today's behaviour
    assert 'name="object_size"' in alice_client.get("/projects/new/").content.decode()


def test_object_size_is_edited_until_a_model_depends_on_it(alice_client, project):
    answer = patch(alice_client, project, {"object_size": 64})
    assert answer.status_code == 200, answer.content
    project.refresh_from_db()
    assert project.object_size == 64
    edit_page = alice_client.get(f"/projects/{project.pk}/edit/").content.decode()
    assert 'name="object_size" value="64"' in edit_page

    for bad in (0, -3, "big", 10**6):
        answer = patch(alice_client, project, {"object_size": bad})
        assert answer.status_code == 400, (bad, answer.content)
        assert "The object size must be" in answer.json()["error"]

    ModelVersion.objects.create(project=project, number=1, status="ready", is_current=True,
                                classes=project.class_names)  # fmt: skip
    answer = patch(alice_client, project, {"object_size": 16})
    assert answer.status_code == 409
    assert "object size" in answer.json()["error"]
    project.refresh_from_db()
    assert project.object_size == 64


def test_the_viewer_places_a_click_box_of_the_object_size(alice_client, project):
    project.object_size = 48
    project.save()
    scene = Scene.objects.create(project=project, name="s", image_key="-", width=200, height=150)
    html = alice_client.get(f"/scenes/{scene.pk}/").content.decode()
    assert json_script(html, "viewer-config")["window"] == 48  # viewer.js windowBoxAt


def test_the_command_states_the_object_size_too(alice):
    from django.core.management import call_command

    call_command("create_project", "aerial cars", "--user", "alice", "--object-size", "20")
    assert Project.objects.get(name="aerial cars").object_size == 20

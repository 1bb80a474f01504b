"""Classes of one's own (issue 34.4): the new-project form starts with one empty row and offers
the demo's classes only as a one-click preset; a project's classes, colours and sources are
edited on its edit page or with PATCH /api/projects/<id> while no model depends on them; after
that only colours (and the name, description, thresholds) change, and a refused edit says why."""

from __future__ import annotations

import json
import re

import pytest

from labeling.models import ModelVersion

pytestmark = pytest.mark.django_db


def post_edit(client, project, classes, **fields):
    """The edit page's form, the class editor's rows as parallel lists."""
    data = {"name": project.name, "description": "", "negative_class": project.negative_class,
            "window_size": 32, "train_step": 8, "score_step": 16, "threshold": 0.9,
            "engine": "torch", "threshold_mode": "calibrated",
            "class_name": [c["name"] for c in classes],
            "class_color": [c["color"] for c in classes],
            "class_sources": [", ".join(c["sources"]) for c in classes]} | fields  # fmt: skip
    return client.post(f"/projects/{project.pk}/edit/", data)


def test_the_new_project_form_starts_empty_with_a_preset(alice_client):
    html = alice_client.get("/projects/new/").content.decode()
    names = re.findall(r'name="class_name" value="([^"]*)"', html)
    assert names == [""]
    assert 'id="preset-cifar"' in html
    preset = re.search(r'<script id="class-preset" type="application/json">(.*?)</script>', html)
    assert [c["name"] for c in json.loads(preset.group(1))] == ["car", "boat"]


def test_classes_are_edited_until_a_model_depends_on_them(alice_client, project):
    page = alice_client.get(f"/projects/{project.pk}/edit/").content.decode()
    assert re.findall(r'name="class_name" value="([^"]*)"', page) == ["car", "boat", ""]
    assert 'id="class-lock"' not in page
    spoons = [{"name": "spoon", "color": "#111111", "sources": ["spoon"]},
              {"name": "cup", "color": "#222222", "sources": ["mug", "cup"]}]  # fmt: skip
    answer = post_edit(alice_client, project, spoons)
    assert answer.status_code == 302 and answer["Location"] == f"/projects/{project.pk}/"
    project.refresh_from_db()
    assert project.classes == spoons

    ModelVersion.objects.create(project=project, number=1, status="ready", is_current=True,
                                classes=project.class_names)  # fmt: skip
    page = alice_client.get(f"/projects/{project.pk}/edit/").content.decode()
    assert "Model v1 was trained on these classes" in page
    renamed = [dict(spoons[0], name="fork"), spoons[1]]
    answer = post_edit(alice_client, project, renamed)
    assert answer.status_code == 400
    assert "Model v1 was trained on these classes" in answer.content.decode()
    answer = post_edit(alice_client, project, spoons, window_size=64, train_step=16,
                       score_step=32)  # fmt: skip
    assert answer.status_code == 400
    project.refresh_from_db()
    assert project.classes == spoons and project.window_size == 32
    recoloured = [dict(spoons[0], color="#abcdef"), spoons[1]]
    assert post_edit(alice_client, project, recoloured, description="mine").status_code == 302
    project.refresh_from_db()
    assert project.classes[0]["color"] == "#abcdef" and project.description == "mine"

    # A failed version does not lock them.
    ModelVersion.objects.filter(project=project).update(status="failed", is_current=False)
    assert post_edit(alice_client, project, renamed).status_code == 302


def test_patch_refuses_bad_classes_with_the_reason(alice_client, project):
    url = f"/api/projects/{project.pk}"
    answer = alice_client.patch(url, {"classes": []}, content_type="application/json")
    assert answer.status_code == 400 and "Add at least one positive class" in answer.json()["error"]
    answer = alice_client.patch(url, {"classes": [{"name": "a", "color": "red", "sources": []}]},
                                content_type="application/json")  # fmt: skip
    assert answer.status_code == 400 and "is not a #rrggbb value" in answer.json()["error"]
    answer = alice_client.patch(url, "[1, 2]", content_type="application/json")
    assert answer.status_code == 400
    answer = alice_client.patch(url, {"description": "ok"}, content_type="application/json")
    assert answer.status_code == 200 and answer.json()["description"] == "ok"
    assert answer.json()["classes"] == project.classes

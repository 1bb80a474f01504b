"""A member undoes only their own annotations; a project's reviewers (its reviewer role, given in
the admin) may undo any member's. Refusals are a 403 with the reason, and store nothing."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from review_helpers import make_scored_scene

from labeling.models import Annotation
from labeling.review import annotations


@pytest.fixture
def scene(project, storage_dir, redis_conn, bob):
    project.members.add(bob)
    return make_scored_scene(project, 128, 128, seed=2)[0]


def client_of(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def undo_url(annotation) -> str:
    return reverse("api-annotation-undo", args=[annotation.pk])


@pytest.mark.django_db
def test_a_member_undoes_only_their_own(project, scene, alice, bob):
    alices, _ = annotations.record_annotation(project, scene, alice, kind="review", label="car",
                                              x=0, y=0, w=32, h=32)  # fmt: skip
    bob_client = client_of(bob)
    refused = bob_client.post(undo_url(alices), {}, content_type="application/json")
    assert refused.status_code == 403
    assert "only your own" in refused.json()["error"] and "alice" in refused.json()["error"]
    assert not Annotation.objects.filter(kind="undo").exists()
    with pytest.raises(annotations.UndoRefused):  # the service refuses too, whoever calls it
        annotations.undo(alices, bob)
    # Her own: fine.
    own = client_of(alice).post(undo_url(alices), {}, content_type="application/json")
    assert own.status_code == 201 and own.json()["undoes"] == alices.pk


@pytest.mark.django_db
def test_a_projects_reviewer_may_undo_anyones(project, scene, alice, bob):
    alices, _ = annotations.record_annotation(project, scene, alice, kind="review", label="car",
                                              x=0, y=0, w=32, h=32)  # fmt: skip
    project.reviewers.add(bob)
    answer = client_of(bob).post(undo_url(alices), {}, content_type="application/json")
    assert answer.status_code == 201, answer.content
    row = Annotation.objects.get(pk=answer.json()["id"])
    assert row.kind == "undo" and row.undoes_id == alices.pk and row.user == bob

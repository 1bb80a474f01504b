"""The foundation: settings from the environment, access control, admin, health page."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.urls import URLPattern, URLResolver, get_resolver

from collage_app import env
from labeling.models import Annotation, Project, Scene

REPO = Path(__file__).resolve().parents[2]


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, words",
    [
        ("mysql://root@localhost/db", ["unsupported scheme", "postgres://"]),
        ("not a url at all", ["unsupported scheme"]),
        ("postgres://postgres@127.0.0.1:5432", ["names no database"]),
    ],
)
def test_bad_database_url_is_a_clear_error(url, words, tmp_path):
    with pytest.raises(ImproperlyConfigured) as err:
        env.database_config(url, tmp_path / "db.sqlite3")
    for word in words:
        assert word in str(err.value)


def test_database_url_password_is_redacted_in_errors(tmp_path):
    with pytest.raises(ImproperlyConfigured) as err:
        env.database_config("mysql://u:hunter2@h/db", tmp_path / "x")
    assert "hunter2" not in str(err.value)


def test_default_database_is_sqlite_in_wal_mode(tmp_path):
    config = env.database_config(None, tmp_path / "var" / "db.sqlite3")
    assert config["ENGINE"] == "django.db.backends.sqlite3"
    conn = sqlite3.connect(config["NAME"])
    conn.executescript(config["OPTIONS"]["init_command"])
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_postgres_url_parses():
    config = env.database_config("postgres://postgres@127.0.0.1:5432/test", None)
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert config["NAME"] == "test"


def test_secret_key_required_without_debug(tmp_path):
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY is required"):
        env.secret_key(debug=False, environ={})
    assert env.secret_key(debug=False, environ={"SECRET_KEY": "s3cret"}) == "s3cret"


def test_development_secret_key_is_generated_once_and_kept(tmp_path):
    key_file = tmp_path / "secret_key"
    first = env.secret_key(debug=True, environ={}, key_file=key_file)
    assert len(first) > 40
    assert env.secret_key(debug=True, environ={}, key_file=key_file) == first
    assert oct(key_file.stat().st_mode)[-3:] == "600"


def test_booleans_and_redis_url_are_validated():
    assert env.env_bool("X", False, {"X": "yes"}) is True
    with pytest.raises(ImproperlyConfigured, match="not a boolean"):
        env.env_bool("X", False, {"X": "maybe"})
    with pytest.raises(ImproperlyConfigured, match="REDIS_URL"):
        env.redis_url({"REDIS_URL": "http://localhost"})


def _manage(*args, **environ):
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SECRET_KEY")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env={**base, **environ},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_passes_with_production_settings(tmp_path):
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="0",
        SECRET_KEY="x" * 30 + "production-secret-key-for-the-test-1234567890",
        ALLOWED_HOSTS="labeling.example.com",
        VAR_DIR=str(tmp_path),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_manage_py_reports_bad_database_url(tmp_path):
    result = _manage("check", DATABASE_URL="mysql://x@y/z", VAR_DIR=str(tmp_path))
    assert result.returncode != 0
    assert "DATABASE_URL" in result.stderr and "unsupported scheme" in result.stderr


# --- access control ---------------------------------------------------------------------------


def _all_routes():
    """Every URL pattern of the app with dummy arguments (1 for ints, 'x' for strings)."""

    def walk(resolver, prefix=""):
        for entry in resolver.url_patterns:
            if isinstance(entry, URLResolver):
                yield from walk(entry, prefix + str(entry.pattern))
            elif isinstance(entry, URLPattern):
                yield prefix + str(entry.pattern)

    import re

    for route in walk(get_resolver()):
        route = re.sub(r"<int:[^>]+>", "1", route)
        route = re.sub(r"<(str:|slug:)?[^>]+>", "x", route)
        route = route.replace("^", "").replace("$", "").replace("\\Z", "")
        yield "/" + route


@pytest.mark.django_db
def test_every_page_and_api_refuses_anonymous_requests(client):
    open_routes = {"/login/", "/logout/", "/admin/login/", "/admin/logout/"}
    checked = 0
    for route in _all_routes():
        if route in open_routes or "(?P" in route or route.startswith("/static/"):
            continue
        response = client.get(route)
        checked += 1
        if response.status_code in (301, 302):
            assert "/login" in response["Location"], route
        else:
            assert response.status_code in (401, 403, 404, 405), (route, response.status_code)
            assert response.status_code != 200
    assert checked >= 5


@pytest.mark.django_db
def test_api_answers_json_401_when_logged_out(client):
    response = client.get("/api/health")
    assert response.status_code == 401
    assert "authentication required" in response.json()["error"]


@pytest.mark.django_db
def test_users_see_only_their_projects(client, alice, bob, project):
    other = Project.objects.create(name="bob's satellites")
    other.members.add(bob)
    client.force_login(alice)
    page = client.get("/").content.decode()
    assert "cars and boats" in page and "bob&#x27;s satellites" not in page
    client.force_login(bob)
    page = client.get("/").content.decode()
    assert "cars and boats" not in page and "bob&#x27;s satellites" in page


@pytest.mark.django_db
def test_project_lookup_hides_other_users_projects(alice, bob, project):
    from django.http import Http404

    from labeling.projects.access import project_for

    assert project_for(alice, project.pk) == project
    with pytest.raises(Http404):
        project_for(bob, project.pk)


# --- data model and admin -----------------------------------------------------------------------


@pytest.mark.django_db
def test_project_defaults_follow_the_published_pipeline(project):
    assert project.class_names == ["car", "boat", "negative"]
    assert project.colours == {"car": "#e6194b", "boat": "#3cb44b"}
    assert (project.window_size, project.train_step, project.score_step) == (32, 8, 16)
    assert project.threshold == 0.9
    project.full_clean()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "changes, message",
    [
        ({"classes": []}, "at least one positive class"),
        ({"classes": [{"name": "a", "color": "#fff", "sources": []}]}, "#rrggbb"),
        (
            {
                "classes": [
                    {"name": "ship", "color": "#ff0000", "sources": []},
                    {"name": "Ship", "color": "#00ff00", "sources": []},
                ]
            },
            "unique",
        ),
        ({"score_step": 40}, "between 1 and the window size"),
        ({"threshold": 1.5}, "threshold"),
    ],
)
def test_project_validation_messages(project, changes, message):
    from django.core.exceptions import ValidationError

    for key, value in changes.items():
        setattr(project, key, value)
    with pytest.raises(ValidationError, match=message):
        project.full_clean()


@pytest.mark.django_db
def test_annotations_are_append_only(project, alice):
    from django.core.exceptions import ValidationError

    scene = Scene.objects.create(project=project, name="s", image_key="scenes/s.png")
    a = Annotation.objects.create(
        project=project,
        scene=scene,
        user=alice,
        kind="false_positive",
        label="negative",
        x=0,
        y=0,
        w=32,
        h=32,
    )
    a.label = "car"
    with pytest.raises(ValidationError, match="append-only"):
        a.save()
    with pytest.raises(ValidationError, match="never deleted"):
        a.delete()
    assert Annotation.objects.get(pk=a.pk).label == "negative"


@pytest.mark.django_db
def test_admin_lists_and_searches_every_model(admin_client, project):
    from django.apps import apps

    for model in apps.get_app_config("labeling").get_models():
        url = f"/admin/labeling/{model._meta.model_name}/"
        response = admin_client.get(url, {"q": "car"})
        assert response.status_code == 200, url
        assert b"searchbar" in response.content, f"{url} has no search box"


# --- health -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_health_with_redis_up(alice, alice_client, redis_conn):
    from rq import Queue

    alice.is_staff = True  # the details (Spark master, GPU line) are for staff
    alice.save()

    Queue("train", connection=redis_conn).enqueue("os.getcwd")
    response = alice_client.get("/health/?format=json")
    assert response.status_code == 200
    report = response.json()
    assert report["database"]["ok"] and report["redis"]["ok"]
    depths = {q["name"]: q["depth"] for q in report["queues"]}
    assert depths == {"default": 0, "train": 1, "score": 0}
    assert report["spark"]["master"]
    assert "GPU" in report["gpu"]["detail"] or "nvidia" in report["gpu"]["detail"]
    html = alice_client.get("/health/").content.decode()
    assert "Queue train" in html and "1 waiting" in html


@pytest.mark.django_db
def test_health_with_redis_unreachable(alice, alice_client, settings):
    alice.is_staff = True  # the hint naming REDIS_URL is for staff
    alice.save()
    settings.RQ_QUEUES = {
        name: {"URL": "redis://127.0.0.1:1/0", "DEFAULT_TIMEOUT": 60}
        for name in ("default", "train", "score")
    }
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = alice_client.get("/health/")
    assert response.status_code == 503
    html = response.content.decode()
    assert "unreachable" in html and "REDIS_URL" in html
    report = alice_client.get("/api/health").json()
    assert report["redis"]["ok"] is False and report["database"]["ok"] is True

"""Shared fixtures. Tests use the real services: PostgreSQL (DATABASE_URL, set by `make test`),
Redis, Spark in local mode and Chromium. A missing service is a failure, never a skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MLCORE_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_report_header(config):
    from django.conf import settings

    db = settings.DATABASES["default"]
    return [f"database: {db['ENGINE']} {db.get('NAME')}", f"redis: {settings.REDIS_URL}"]


TIERS = ("core", "app", "integration", "browser")


def pytest_collection_modifyitems(config, items):
    """Every test carries its folder's tier as a marker (``-m core``, ``-m "not browser"``)."""
    tests = Path(__file__).resolve().parent
    for item in items:
        parts = Path(item.path).resolve().relative_to(tests).parts
        if parts and parts[0] in TIERS:
            item.add_marker(parts[0])


def pytest_sessionstart(session):
    if os.environ.get("CI"):
        url = os.environ.get("DATABASE_URL", "")
        if not url.startswith(("postgres://", "postgresql://")):
            raise pytest.UsageError(
                f"CI must test on PostgreSQL, but DATABASE_URL={url!r}: run `make test`."
            )


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "cifar10-jpg.zip").exists():
        pytest.fail(f"Test data missing: expected {SHARED_DATA}/cifar10-jpg.zip (../shared/data).")
    return SHARED_DATA


@pytest.fixture
def redis_conn():
    """The real Redis of REDIS_URL, emptied for the test (make test points it at db 15)."""
    import django_rq

    conn = django_rq.get_connection("default")
    try:
        conn.ping()
    except Exception as exc:
        pytest.fail(f"Redis is required for this test and is unreachable: {exc}")
    conn.flushdb()
    yield conn
    conn.flushdb()


@pytest.fixture(scope="module")
def adls_server():
    """The ADLS Gen2 stand-in (tests/adls_standin.py, the one stand-in allowed): a local server
    speaking the DFS protocol to the real Azure SDK; one per test module."""
    from adls_standin import AdlsStandIn

    with AdlsStandIn() as server:
        yield server


@pytest.fixture
def storage_dir(tmp_path, settings):
    """A private local storage root for the test."""
    root = tmp_path / "storage"
    root.mkdir()
    settings.STORAGE_URL = str(root)
    return root


@pytest.fixture
def make_user(django_user_model):
    def make(username: str, **extra):
        return django_user_model.objects.create_user(username, password="pw-" + username, **extra)

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def project(alice):
    from labeling.models import Project

    p = Project.objects.create(name="cars and boats")
    p.members.add(alice)
    return p


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def page(live_server):
    """A Chromium page on the live server (browser tests; see tests/browser_helpers.py)."""
    from browser_helpers import chromium_page
    from django.db import connections

    with chromium_page(live_server.url) as pg:
        yield pg
        # Connections opened beside Playwright's greenlet: pytest-django would not close them
        # and the test database could not be dropped.
        connections.close_all()
    connections.close_all()

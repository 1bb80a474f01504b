"""/api/health and the health page: any logged-in user sees whether each service works, only
staff see where the services are (the Redis URL, the Spark master, the storage root) and the
raw errors (which name hosts and paths)."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.test import Client

SECRET_HOST = "redis-secret-host.internal"


def secrets(storage_dir) -> list[str]:
    return [str(settings.REDIS_URL), str(settings.SPARK_MASTER), str(storage_dir), SECRET_HOST]


@pytest.fixture
def setup(settings, storage_dir, redis_conn):
    settings.SPARK_MASTER = "spark://spark-master.internal:7077"
    return storage_dir


@pytest.mark.django_db
def test_a_member_sees_states_not_where_the_services_are(setup, alice_client, settings):
    for answer in (alice_client.get("/api/health"), alice_client.get("/health/")):
        text = answer.content.decode()
        for secret in secrets(setup):
            assert secret not in text, (secret, text)
    report = alice_client.get("/api/health").json()
    assert report["database"]["ok"] is True and report["redis"]["ok"] is True
    assert {q["name"] for q in report["queues"]} == {"default", "train", "score"}
    assert report["details"] == "shown to staff only"
    # Redis down: the member is told it is down, not where it was looked for.
    settings.REDIS_URL = f"redis://{SECRET_HOST}:1/0"
    settings.RQ_QUEUES = {name: {"URL": settings.REDIS_URL, "DEFAULT_TIMEOUT": 60}
                          for name in ("default", "train", "score")}  # fmt: skip
    down = alice_client.get("/api/health")
    assert down.status_code == 503 and down.json()["redis"]["ok"] is False
    assert SECRET_HOST not in down.content.decode()


@pytest.mark.django_db
def test_staff_see_the_details(setup, make_user):
    staff = Client()
    staff.force_login(make_user("root", is_staff=True))
    report = staff.get("/api/health").json()
    text = json.dumps(report)
    assert report["spark"]["master"] == settings.SPARK_MASTER
    assert report["storage"]["url"] == str(setup) and str(settings.REDIS_URL) in text
    assert "details" not in report

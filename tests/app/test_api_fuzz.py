"""Property-style fuzzing of every JSON API route the OpenAPI schema lists (labeling.web.openapi):
each route gets its valid ids and then fuzzed path ids, query strings and JSON bodies (wrong
types, huge numbers, Unicode digits, NaN, deep nesting, long strings, control characters,
non-JSON bodies), and no answer may be a 5xx. A failure lists every request that got one.

Seeded and bounded (a few thousand requests), against real PostgreSQL and Redis."""

from __future__ import annotations

import json
import random
import re

import pytest
from django.test import Client
from review_helpers import make_scored_scene

from labeling.models import Annotation, Dataset, JobRecord
from labeling.review import annotations, cache
from labeling.web.openapi import build_schema

DEEP = 50  # nesting that is valid JSON for Python yet silly for every field

VALUES = [
    None, True, False, 0, -1, 1, 1.5, -0.0, 10**30, -(10**30), 2**63, 1e308,
    "", " ", "0", "-1", "1.5", "abc", "²", "٣", "１２", "1e400", "NaN", "Infinity", "9" * 5000,
    "x" * 100_000, "\x00", "'; DROP TABLE labeling_scene; --", "../../etc/passwd", "/abs",
    "a/" * 300, "<script>alert(1)</script>", "\ud800".encode("utf-8", "surrogatepass").decode(
        "utf-8", "replace"), [], [1, 2], {}, {"$ne": 1}, {"tiles": "²", "cols": "٣"},
    json.loads("[" * DEEP + "]" * DEEP),
]  # fmt: skip
QUERY_VALUES = [
    "", "abc", "²", "٣", "１２", "-1", "0", "1.5", "1e400", "NaN", "-inf", "9" * 5000, "9" * 25,
    "x" * 20_000, "\x00", "%00", "a,b,c,d", "nan,nan,nan,nan", "1,1,0,0", "[]", "{}", "true",
]  # fmt: skip
PATH_IDS = ["0", "9" * 19, "9" * 25, "9" * 400]
RAW_BODIES = [
    b"", b"null", b"[]", b'"text"', b"5", b"{", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000,
    b'{"x": ' + b"7" * 5000 + b"}", b'{"a": NaN}', b"{}" * 10,
    ("{" + '"k": 1,' * 50_000 + '"k": 2}').encode(),
]  # fmt: skip


def operations():
    """(method, path template, path params, query params, body keys) for every route."""
    out = []
    for path, item in build_schema()["paths"].items():
        for method, op in item.items():
            if method.startswith("x-") or method == "parameters":
                continue
            params = op.get("parameters", []) + item.get("parameters", [])
            query = [p["name"] for p in params if p["in"] == "query"]
            in_path = [p["name"] for p in params if p["in"] == "path"]
            schema = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            body = list(schema.get("schema", {}).get("properties", {}))
            out.append((method.upper(), path, in_path, query, body + query))
    return out


@pytest.fixture
def world(project, alice, storage_dir, redis_conn):
    """A project with a scored scene, an annotation, a dataset and a job: every route has
    something real to find."""
    cache._cache.clear()
    scene, run = make_scored_scene(project, 128, 160, seed=3)
    annotation, _ = annotations.record_annotation(
        project, scene, alice, kind="false_negative", label=project.class_names[0],
        x=0, y=0, w=32, h=32,
    )  # fmt: skip
    dataset = Dataset.objects.create(project=project, name="d", source="test")
    job = JobRecord.objects.create(project=project, kind="count", queue="default", status="done")
    ids = {"project_id": project.pk, "scene_id": scene.pk, "run_id": run.pk,
           "annotation_id": annotation.pk, "dataset_id": dataset.pk, "job_id": job.pk,
           "number": run.model_version.number}  # fmt: skip
    return ids


def fill(path: str, values: dict) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]), path)


def send(client, method, url, query=None, body=None, raw=None):
    if method == "GET":
        return client.get(url, query or {})
    if raw is not None:
        data = raw
    else:
        data = json.dumps(body if body is not None else {})
    if query:
        from urllib.parse import urlencode

        url += "?" + urlencode(query)
    return client.post(url, data, content_type="application/json")


@pytest.mark.slow  # every route x hundreds of inputs (about a minute)
@pytest.mark.django_db(transaction=True)
def test_no_api_route_answers_5xx_to_fuzzed_input(world, alice):
    client = Client()  # a server error raises here, with its exception
    client.force_login(alice)
    rng = random.Random(14)
    failures, sent = [], 0
    ops = operations()
    assert len(ops) >= 20  # every documented route, read from the schema

    def check(method, url, **kwargs):
        nonlocal sent
        sent += 1
        shown = {k: (str(v)[:100] if v is not None else None) for k, v in kwargs.items()}
        try:
            response = send(client, method, url, **kwargs)
        except Exception as exc:  # the view (or a middleware) raised: a 500
            failures.append(f"{method} {url[:100]} {shown} -> {type(exc).__name__}: {exc}"[:400])
            return
        if response.status_code >= 500:
            failures.append(f"{method} {url[:100]} {shown} -> {response.status_code}")
        elif response.status_code >= 400 and response["Content-Type"].startswith("application"):
            assert "error" in response.json(), (method, url)

    for method, path, in_path, query, body_keys in ops:
        url = fill(path, world)
        check(method, url)
        # Fuzzed ids in the path (the int converter lets any digits through).
        for name in in_path:
            for bad in PATH_IDS:
                check(method, fill(path, world | {name: bad}))
        # Each query parameter alone, with every fuzz value.
        for name in query:
            for value in QUERY_VALUES:
                check(method, url, query={name: value})
        # Random combinations of query parameters (and an unknown one).
        for _ in range(12):
            names = rng.sample(query + ["unknown"], k=rng.randint(1, len(query) + 1))
            check(method, url, query={n: rng.choice(QUERY_VALUES) for n in names})
        if method != "POST":
            continue
        for raw in RAW_BODIES:
            check(method, url, raw=raw)
        # Each body field alone with every value, then random bodies.
        for key in body_keys:
            for value in VALUES:
                check(method, url, body={key: value})
        for _ in range(25):
            keys = rng.sample(body_keys, k=rng.randint(1, len(body_keys))) if body_keys else []
            check(method, url, body={k: rng.choice(VALUES) for k in keys})
    assert sent > 1000
    assert not failures, f"{len(failures)} of {sent} requests got a 5xx:\n" + "\n".join(
        failures[:40]
    )
    assert Annotation.objects.filter(project_id=world["project_id"]).count() >= 1

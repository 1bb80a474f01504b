"""Checks behind the health page: each returns a dict with ok + a human sentence, never raises."""

from __future__ import annotations

import shutil
import socket
import subprocess
from functools import lru_cache
from urllib.parse import urlparse

from django.conf import settings
from django.db import connection


def check_database() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True, "detail": f"{connection.vendor} reachable"}
    except Exception as exc:  # any driver error is a finding, not a crash
        return {"ok": False, "detail": f"database unreachable: {exc}"}


def check_redis_and_queues() -> tuple[dict, list[dict]]:
    import django_rq
    from rq import Worker

    try:
        conn = django_rq.get_connection("default")
        conn.ping()
    except Exception as exc:
        redis = {
            "ok": False,
            "detail": f"Redis at {_safe_url(settings.REDIS_URL)} unreachable ({exc}). "
            "Start it (redis-server) or set REDIS_URL; jobs cannot run until then.",
        }
        return redis, [
            {"name": name, "ok": False, "depth": None, "workers": None}
            for name in settings.RQ_QUEUES
        ]
    queues = []
    for name in settings.RQ_QUEUES:
        queue = django_rq.get_queue(name)
        workers = Worker.count(connection=conn, queue=queue)
        queues.append({"name": name, "ok": workers > 0, "depth": len(queue), "workers": workers})
    return {"ok": True, "detail": f"Redis at {_safe_url(settings.REDIS_URL)} answers"}, queues


def check_spark() -> dict:
    master = settings.SPARK_MASTER
    if master.startswith("spark://"):
        parsed = urlparse(master)
        try:
            with socket.create_connection((parsed.hostname, parsed.port or 7077), timeout=1):
                return {"ok": True, "master": master, "detail": "standalone master answers"}
        except OSError as exc:
            return {"ok": False, "master": master, "detail": f"master unreachable: {exc}"}
    java = shutil.which("java")
    detail = (
        "runs inside the score worker"
        if java
        else "Java 17+ is missing: apt-get install openjdk-17-jre-headless"
    )
    return {"ok": bool(java), "master": master, "detail": detail}


@lru_cache(maxsize=1)
def check_gpu() -> dict:
    smi = shutil.which("nvidia-smi")
    if not smi:
        detail = "no GPU visible (nvidia-smi absent): training runs on CPU"
        return {"visible": False, "detail": detail}
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"visible": False, "detail": f"nvidia-smi failed: {exc}"}
    gpus = [line for line in out.splitlines() if line.startswith("GPU")]
    return {"visible": bool(gpus), "detail": "; ".join(gpus) or "nvidia-smi lists no GPU"}


def health_report() -> dict:
    redis, queues = check_redis_and_queues()
    report = {
        "database": check_database(),
        "redis": redis,
        "queues": queues,
        "spark": check_spark(),
        "gpu": check_gpu(),
        "storage": {"url": _safe_url(settings.STORAGE_URL)},
    }
    report["ok"] = report["database"]["ok"] and redis["ok"]
    return report


def for_member(report: dict) -> dict:
    """What a logged-in user who is not staff sees: each service's state and the queues, never
    where the services are (the Redis URL, the Spark master, the storage root) nor the raw
    errors that name hosts and paths; staff see the whole report."""
    spark = report["spark"]
    return {
        "ok": report["ok"],
        "database": {"ok": report["database"]["ok"],
                     "detail": "reachable" if report["database"]["ok"]
                     else "unreachable: tell an administrator"},
        "redis": {"ok": report["redis"]["ok"],
                  "detail": "the job queue answers" if report["redis"]["ok"]
                  else "the job queue is unreachable: jobs cannot run; tell an administrator"},
        "queues": report["queues"],
        "spark": {"ok": spark["ok"],
                  "detail": "ready" if spark["ok"] else "unavailable: tell an administrator"},
        "gpu": {"visible": report["gpu"]["visible"]},
        "details": "shown to staff only",
    }  # fmt: skip


def _safe_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url.split("?")[0]  # drop SAS tokens or options

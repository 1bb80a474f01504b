"""Every RQ job runs through `execute`: it keeps the job's JobRecord (status, progress, log, error)
in step with the work, so a page can show progress and a failure's reason long after Redis forgot.

A job function is `def job(ctx: JobContext, **params)`: it reports with `ctx.progress(done, total,
message)` and `ctx.log(line)`; an exception marks the record failed with its message and is
re-raised so RQ keeps its own failed-job record too."""

from __future__ import annotations

import importlib
import os
import socket
import time
import traceback

from django.db import close_old_connections
from django.utils import timezone

from labeling.jobs.db_cuts import surviving_cuts

PROGRESS_SAVE_INTERVAL_S = 0.5


class JobContext:
    def __init__(self, record, rq_job=None):
        self.record = record
        self.rq_job = rq_job
        self._last_save = 0.0

    def progress(self, done: int, total: int, message: str = "") -> None:
        """Progress for the page and RQ's job.meta; saved at most twice a second."""
        record = self.record
        record.progress_done, record.progress_total = int(done), int(total)
        if message:
            record.message = message[:300]
        now = time.monotonic()
        if now - self._last_save < PROGRESS_SAVE_INTERVAL_S and done < total:
            return
        self._last_save = now
        with surviving_cuts():  # also when Spark's progress thread reports, on its connection
            self.stop_if_abandoned()
            record.save(update_fields=["progress_done", "progress_total", "message"])
        if self.rq_job is not None:
            self.rq_job.meta.update(
                {"done": record.progress_done, "total": record.progress_total, "message": message}
            )
            save_meta(self.rq_job)

    def stop_if_abandoned(self) -> None:
        """Raise JobAbandoned when the record was failed meanwhile (its worker declared dead,
        Redis lost the job, its cycle cancelled it): work nobody waits for stops at its next
        progress report instead of running on (and storing its result) to no purpose."""
        from labeling.jobs.enqueue import JobAbandoned
        from labeling.models import JobRecord

        now = JobRecord.objects.filter(pk=self.record.pk).values_list("status", "error").first()
        if now is not None and now[0] != "running":
            raise JobAbandoned(f"job {self.record.pk} is {now[0]} ({now[1] or 'no reason'}): "
                               "it stops here")  # fmt: skip

    def log(self, line: str) -> None:
        stamp = timezone.now().strftime("%H:%M:%S")
        self.record.log += f"[{stamp}] {line}\n"
        with surviving_cuts():
            self.record.save(update_fields=["log"])

    def __call__(self, done: int, total: int, message: str = "") -> None:
        """A JobContext is itself an mlcore progress callback."""
        self.progress(done, total, message)


def save_meta(rq_job) -> None:
    """RQ's copy of the progress is a convenience (the JobRecord is the truth): a Redis outage
    while a job runs must not fail the job."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    try:
        rq_job.save_meta()
    except (RedisConnectionError, RedisTimeoutError):
        pass


def execute(record_id: int, func_path: str, params: dict):
    """The RQ entry point of every job (see labeling.jobs.enqueue.enqueue)."""
    with surviving_cuts():
        return _execute(record_id, func_path, params)


def _execute(record_id: int, func_path: str, params: dict):
    from rq import get_current_job

    from labeling.models import JobRecord

    close_old_connections()
    record = JobRecord.objects.get(pk=record_id)
    rq_job = get_current_job()
    record.started_at = timezone.now()
    if rq_job is not None:
        record.rq_job_id = rq_job.id
        # Which process runs the job, so that labeling.jobs.enqueue can kill it before calling
        # the job failed (an RQ work horse outlives a killed worker unless killed itself).
        from labeling.jobs.enqueue import process_started

        pid = os.getpid()
        rq_job.meta.update(
            {"horse_pid": pid, "horse_host": socket.gethostname(),
             "horse_started": process_started(pid)}
        )  # fmt: skip
        save_meta(rq_job)
    # Only a queued (or retried running) record starts: one failed before its turn (cancelled
    # with its cycle, declared lost) never runs.
    if not JobRecord.objects.filter(pk=record.pk, status__in=("queued", "running")).update(
        status="running", started_at=record.started_at, error="", rq_job_id=record.rq_job_id
    ):
        record.refresh_from_db()
        return {"skipped": f"the job was {record.status} before it started: {record.error}"}
    record.status, record.error = "running", ""
    ctx = JobContext(record, rq_job)
    module_name, func_name = func_path.rsplit(".", 1)
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        result = func(ctx, **params)
    except BaseException as exc:
        record.status = "failed"
        # An error that already explains itself to a person (``explained``) is kept as it is.
        explained = getattr(exc, "explained", False)
        record.error = (str(exc) if explained else f"{type(exc).__name__}: {exc}")[:5000]
        record.log += traceback.format_exc()[-20000:]
        record.finished_at = timezone.now()
        # A record failed meanwhile (cancelled, declared dead) keeps the reason it was given.
        if not JobRecord.objects.filter(pk=record.pk, status="running").update(
            status="failed", error=record.error, log=record.log, finished_at=record.finished_at
        ):
            JobRecord.objects.filter(pk=record.pk).update(log=record.log)
        raise
    record.result = result if isinstance(result, dict) else {}
    record.finished_at = timezone.now()
    if record.progress_total and record.progress_done < record.progress_total:
        record.progress_done = record.progress_total
    # Only a running record becomes done: one already declared failed (its worker was seen
    # dead) stays failed with its reason rather than turning "done" with an error text.
    JobRecord.objects.filter(pk=record.pk, status="running").update(
        status="done", result=record.result, finished_at=record.finished_at,
        progress_done=record.progress_done,
    )  # fmt: skip
    record.refresh_from_db(fields=["status"])
    return result

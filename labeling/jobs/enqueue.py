"""Enqueueing jobs and reading their state back for the pages (the work itself is in workers/)."""

from __future__ import annotations

import django_rq
from django.db import transaction
from django.utils import timezone

from labeling.jobs.kinds import CYCLE_KIND, job_label
from labeling.models import JobRecord, ScoringRun

# Which RQ queue a kind of job runs on: training wants the GPU worker, scoring the Spark driver.
QUEUE_OF_KIND = {"train": "train", CYCLE_KIND: "train", "score": "score"}
ACTIVE = ("queued", "running")
# A record still without its RQ job id this long after creation was never pushed to Redis (the
# push runs right after the commit and takes milliseconds): it is failed, never left queued.
UNPUSHED_GRACE_S = 60


class JobAbandoned(RuntimeError):
    """The job's record was failed while the job ran (its worker was declared dead, Redis lost
    it, its cycle was cancelled): the job stops where it notices, and stores nothing."""


class QueueUnavailable(RuntimeError):
    """Redis refused a job; the record is already marked failed. Views answer 503."""

    def __init__(self, reason: str = ""):
        super().__init__(
            "the job queue is unavailable, try again" + (f" ({reason})" if reason else "")
        )


def _redis_errors() -> tuple[type[Exception], ...]:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return (RedisConnectionError, RedisTimeoutError)


def enqueue(kind: str, func_path: str, project=None, queue: str | None = None, **params):
    """Create the JobRecord and enqueue `workers.runner.execute` for it once the surrounding
    transaction commits (so the worker always finds the rows it is given)."""
    queue_name = queue or QUEUE_OF_KIND.get(kind, "default")
    record = JobRecord.objects.create(
        project=project, kind=kind, queue=queue_name, params=params, status="queued"
    )

    def push():
        try:
            job = django_rq.get_queue(queue_name).enqueue(
                "workers.runner.execute",
                record.pk,
                func_path,
                params,
                job_timeout=django_rq.get_queue(queue_name)._default_timeout,
                failure_ttl=7 * 24 * 3600,
            )
        except _redis_errors() as exc:
            # Never leave a record "queued" for a job Redis does not hold: it would block the
            # project (a retrain answers 409 while a cycle is queued) forever.
            record.status, record.finished_at = "failed", timezone.now()
            record.error = f"The job could not be queued: Redis is unavailable ({exc})."[:5000]
            record.save(update_fields=["status", "error", "finished_at"])
            fail_run_of(record)
            raise QueueUnavailable(str(exc)) from exc
        JobRecord.objects.filter(pk=record.pk).update(rq_job_id=job.id)
        record.rq_job_id = job.id

    transaction.on_commit(push)
    return record


def fail_run_of(record: JobRecord) -> None:
    """A scoring job that ended without finishing its run (killed, lost, cancelled) fails the
    run with the job's reason: no run stays "running" after its job died, and a job declared
    dead that still reaches its end finds its run failed and stores nothing
    (labeling.scoring.results.store_scoring_result)."""
    run_id = (record.params or {}).get("run_id")
    if record.kind != "score" or not run_id:
        return
    ScoringRun.objects.filter(pk=run_id, status__in=ACTIVE).update(
        status="failed",
        error=(record.error or "its scoring job ended before the run finished")[:5000],
        finished_at=timezone.now(),
    )


def cancel(record: JobRecord, reason: str) -> bool:
    """Stop a queued or running job whose work is no longer wanted (its cycle's version
    failed): its record (and scoring run) read failed with ``reason`` at once, RQ drops it from
    its queue or has its worker kill its horse. A job that outran the stop finds its record
    failed at its next progress report or before it stores a result (JobAbandoned). Returns
    False when the job had ended already."""
    reason = reason[:5000]
    ended = timezone.now()
    if not JobRecord.objects.filter(pk=record.pk, status__in=ACTIVE).update(
        status="failed", error=reason, finished_at=ended
    ):
        return False
    record.status, record.error, record.finished_at = "failed", reason, ended
    fail_run_of(record)
    if record.rq_job_id and record.queue != "inline":
        # After the commit (at once outside a transaction): a job stopped before its record
        # reads failed could be retried by a reader that still sees it queued.
        transaction.on_commit(lambda: _stop_rq_job(record))
    return True


def _stop_rq_job(record: JobRecord) -> None:
    from rq.command import send_stop_job_command
    from rq.exceptions import InvalidJobOperation, NoSuchJobError
    from rq.job import Job

    connection = django_rq.get_connection(record.queue)
    try:
        job = Job.fetch(record.rq_job_id, connection=connection)
        if job.get_status() == "started":
            send_stop_job_command(connection, job.id)  # its worker kills the horse
        else:
            job.cancel()  # never handed to a worker
    except (NoSuchJobError, InvalidJobOperation, *_redis_errors()):
        pass  # gone, ended meanwhile, or Redis away: the job's own checks stop it


def dead_worker_reason(rq_job) -> str | None:
    """Why the worker running ``rq_job`` is gone, or None when it is (or may be) alive."""
    import os
    import socket

    from rq.worker import Worker

    name = getattr(rq_job, "worker_name", None)
    if not name:
        return None
    worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + name, rq_job.connection)
    if worker is None:
        return f"its worker {name} is gone (killed or lost)"
    if worker.hostname == socket.gethostname() and worker.pid:
        try:
            os.kill(worker.pid, 0)
        except ProcessLookupError:
            return f"its worker {name} (pid {worker.pid}) was killed"
        except PermissionError:
            return None
    return None


def process_started(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, Linux), or None: with the pid
    it names one process for good, whatever later process reuses the pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def kill_orphan_horse(rq_job) -> None:
    """RQ's work horse runs in its own process group, so killing its worker (even the whole
    group) can leave it running. Before a job is declared failed its horse (recorded by
    workers.runner in job.meta) is killed when it runs on this host, so "failed" means stopped.
    (workers.rq_worker also makes a horse die with its worker.)"""
    import os
    import signal
    import socket

    meta = getattr(rq_job, "meta", None) or {}
    pid, host, started = meta.get("horse_pid"), meta.get("horse_host"), meta.get("horse_started")
    if not pid or host != socket.gethostname() or not started:
        return
    # The very process that ran the job (not another that got its pid since), leading its
    # own process group as RQ's horses do.
    if process_started(pid) != started:
        return
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def reconcile(record: JobRecord) -> JobRecord:
    """A worker killed mid-job (SIGKILL, OOM) never writes its own failure: ask RQ and mark the
    record failed with the reason RQ recorded, so the page never shows a ghost 'running' job."""
    if record.status not in ACTIVE or record.queue == "inline":
        return record
    if not record.rq_job_id:
        age = (timezone.now() - record.created_at).total_seconds()
        if (
            age > UNPUSHED_GRACE_S
            and not JobRecord.objects.filter(pk=record.pk).exclude(rq_job_id="").exists()
        ):
            record.status, record.finished_at = "failed", timezone.now()
            record.error = "The job never reached the job queue (Redis was unavailable)."
            record.save(update_fields=["status", "error", "finished_at"])
            fail_run_of(record)
        return record
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    try:
        job = Job.fetch(record.rq_job_id, connection=django_rq.get_connection(record.queue))
        status = job.get_status()
        # RQ calls a job whose worker was SIGKILLed "started" until its registry cleanup runs
        # (minutes later); a dead worker on this host is seen at once by its pid.
        dead = dead_worker_reason(job) if status == "started" else None
    except NoSuchJobError:
        status, job, dead = "missing", None, None
    except Exception:  # Redis down: nothing to conclude yet
        return record
    if dead:
        kill_orphan_horse(job)
        record.status = "failed"
        record.error = f"The worker stopped before the job finished: {dead}."
        record.finished_at = timezone.now()
        record.save(update_fields=["status", "error", "finished_at"])
        fail_run_of(record)
    elif status in ("failed", "stopped", "canceled", "missing"):
        reason = ""
        if job is not None:
            latest = job.latest_result()
            reason = (latest.exc_string or "") if latest else ""
        record.status = "failed"
        record.error = (
            "The worker stopped before the job finished"
            + (f": {reason.strip().splitlines()[-1]}" if reason.strip() else " (killed or lost).")
        )[:5000]
        record.finished_at = timezone.now()
        record.save(update_fields=["status", "error", "finished_at"])
        fail_run_of(record)
    return record


def active_job(project, kind: str):
    """The queued or running job of that kind for the project, after reconciling with RQ."""
    for record in JobRecord.objects.filter(project=project, kind=kind, status__in=ACTIVE):
        if reconcile(record).status in ACTIVE:
            return record
    return None


def job_state(record: JobRecord) -> dict:
    """What the pages and the API show of a job."""
    reconcile(record)
    return {
        "id": record.pk,
        "kind": record.kind,
        "label": job_label(record),  # the kind in words, for people
        "status": record.status,
        "done": record.progress_done,
        "total": record.progress_total,
        "fraction": round(record.fraction, 4),
        "message": record.message,
        "error": record.error,
        "created_at": record.created_at.isoformat(),
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
    }

"""Enqueueing jobs and reading their state back for the pages (the work itself is in workers/)."""

from __future__ import annotations

import django_rq
from django.db import transaction
from django.utils import timezone

from labeling.models import JobRecord

# Which RQ queue a kind of job runs on: training wants the GPU worker, scoring the Spark driver.
QUEUE_OF_KIND = {"train": "train", "retrain_cycle": "train", "score": "score"}
ACTIVE = ("queued", "running")


def enqueue(kind: str, func_path: str, project=None, queue: str | None = None, **params):
    """Create the JobRecord and enqueue `workers.runner.execute` for it once the surrounding
    transaction commits (so the worker always finds the rows it is given)."""
    queue_name = queue or QUEUE_OF_KIND.get(kind, "default")
    record = JobRecord.objects.create(
        project=project, kind=kind, queue=queue_name, params=params, status="queued"
    )

    def push():
        job = django_rq.get_queue(queue_name).enqueue(
            "workers.runner.execute",
            record.pk,
            func_path,
            params,
            job_timeout=django_rq.get_queue(queue_name)._default_timeout,
            failure_ttl=7 * 24 * 3600,
        )
        JobRecord.objects.filter(pk=record.pk).update(rq_job_id=job.id)
        record.rq_job_id = job.id

    transaction.on_commit(push)
    return record


def reconcile(record: JobRecord) -> JobRecord:
    """A worker killed mid-job (SIGKILL, OOM) never writes its own failure: ask RQ and mark the
    record failed with the reason RQ recorded, so the page never shows a ghost 'running' job."""
    if record.status not in ACTIVE or not record.rq_job_id:
        return record
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    try:
        job = Job.fetch(record.rq_job_id, connection=django_rq.get_connection(record.queue))
        status = job.get_status()
    except NoSuchJobError:
        status, job = "missing", None
    except Exception:  # Redis down: nothing to conclude yet
        return record
    if status in ("failed", "stopped", "canceled", "missing"):
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
        "status": record.status,
        "done": record.progress_done,
        "total": record.progress_total,
        "fraction": round(record.fraction, 4),
        "message": record.message,
        "error": record.error,
        "created_at": record.created_at.isoformat(),
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
    }

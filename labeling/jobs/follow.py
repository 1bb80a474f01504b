"""Following a job to its end for a person at a terminal or reading a log.

One way for every command: a JobRecord's progress goes to mlcore.progress.terminal_progress (a
bar on a terminal, a few plain lines in a log), a failure or a timeout ends as JobFailed with the
job's reason and where its log is. `follow_job` polls a queued job, `run_job_here` runs an inline
one in this process, `follow_cycle` follows a retrain cycle: its train job, then each scene's
scoring job. Commands turn JobFailed into CommandError (labeling.management.command_support)."""

from __future__ import annotations

import sys
import time

from labeling.loop.cycle import reconcile_job, reconcile_versions
from labeling.models import JobRecord, ModelVersion, ScoringRun
from mlcore.progress import terminal_progress

RECONCILE_EVERY_S = 5.0  # asking RQ whether the worker still lives costs a Redis round trip


class JobFailed(Exception):
    """A followed job failed, or did not finish in time; the message says why."""


def output_stream(stream=None):
    """The file behind a command's stdout/stderr wrapper (default sys.stderr): a bar redraws its
    line with a carriage return, which the wrapper would end with a newline each time."""
    if stream is None:
        return sys.stderr
    return getattr(stream, "_out", stream)


def failure(desc: str, record: JobRecord) -> JobFailed:
    return JobFailed(
        f"{desc} failed: {record.error or 'no reason recorded'} (job {record.pk}; its log: "
        f"GET /api/jobs/{record.pk})"
    )


def follow_job(record, desc: str, *, timeout: float | None = None, quiet: bool = False,
               stream=None, poll: float = 0.5, sleep=time.sleep) -> JobRecord:  # fmt: skip
    """Follow a queued JobRecord until it is done and return it; JobFailed when it failed (a dead
    worker is noticed through labeling.loop.cycle.reconcile_job) or took longer than ``timeout``
    s."""
    progress = terminal_progress(desc, output_stream(stream), quiet=quiet)
    started, checked, shown = time.monotonic(), 0.0, None
    try:
        while True:
            record.refresh_from_db()
            now = time.monotonic()
            if record.status in ("queued", "running") and now - checked > RECONCILE_EVERY_S:
                checked = now
                reconcile_job(record)
            if record.status == "done":
                total = record.progress_total or 1
                progress(total, total, record.message or "done")
                return record
            state = (record.progress_done, record.progress_total, record.message or record.status)
            if state != shown:  # the log gets news only; the bar has nothing to redraw
                progress(*state)
                shown = state
            if record.status == "failed":
                raise failure(desc, record)
            if timeout is not None and time.monotonic() - started > timeout:
                raise JobFailed(
                    f"{desc} did not finish within {timeout:.0f}s (job {record.pk} is "
                    f"{record.status}): is an RQ worker running for queue {record.queue!r}?"
                )
            sleep(poll)
    finally:
        progress.close()


def run_inline(record, progress=None):
    """Run a job created with inline=True in this process through workers.runner.execute (the
    RQ entry point), forwarding its progress to `progress(done, total, message)`."""
    from django.db.models.signals import post_save

    from labeling.models import JobRecord
    from workers.runner import execute

    def forward(sender, instance, **kwargs):
        if progress is not None and instance.pk == record.pk and instance.progress_total:
            progress(instance.progress_done, instance.progress_total, instance.message)

    post_save.connect(forward, sender=JobRecord, weak=False)
    try:
        return execute(record.pk, record.func_path, record.params)
    finally:
        post_save.disconnect(forward, sender=JobRecord)


def run_job_here(record, desc: str, stream=None) -> JobRecord:
    """Run an inline JobRecord (made with inline=True) in this process, its progress shown the
    same way; JobFailed with the job's reason when it fails."""
    progress = terminal_progress(desc, output_stream(stream))
    try:
        run_inline(record, progress)
    except Exception:
        record.refresh_from_db()
        raise failure(desc, record) from None
    finally:
        progress.close()
    record.refresh_from_db()
    return record


def score_records(version, scenes=None) -> list[tuple[ScoringRun, JobRecord]]:
    """(run, its latest JobRecord) of each of the version's scoring runs (one per scene)."""
    runs = ScoringRun.objects.filter(model_version=version)
    if scenes is not None:
        runs = runs.filter(scene__in=scenes)
    records = []
    for run in runs.order_by("pk"):
        record = (
            JobRecord.objects.filter(kind="score", params__run_id=run.pk)
            .order_by("-created_at")
            .first()
        )
        if record is not None:
            records.append((run, record))
    return records


def follow_cycle(record, *, timeout: float | None = None, quiet: bool = False, stream=None):
    """Follow a retrain cycle: its train-queue job, then each scene's scoring job; returns the
    version (ready and current), JobFailed when any step failed."""
    version = ModelVersion.objects.get(pk=record.params["version_id"])
    follow = {"timeout": timeout, "quiet": quiet, "stream": stream}
    follow_job(record, f"v{version.number}: corrections, training, export", **follow)
    for run, score in score_records(version):
        follow_job(score, f"v{version.number}: scoring {run.scene.name} on Spark", **follow)
    for _ in range(40):  # the last scoring job promotes the version as it finishes
        version.refresh_from_db()
        if version.status in ("ready", "failed"):
            break
        reconcile_versions(version.project)
        time.sleep(0.25)
    if version.status != "ready":
        raise JobFailed(f"model v{version.number} is {version.status}: {version.error}")
    return version

"""labeling.jobs.follow.follow_job on a real JobRecord: in a log (a stream that is not a terminal)
a job reporting progress 150 times writes a handful of lines, and a failure says why and where
the job's log is. The 'worker' is the follower's own wait between polls, which steps the row.
A retrain cycle's phases report their real counts (the training's steps), not a scale of 1000."""

from __future__ import annotations

import io

import pytest

from labeling.jobs.follow import JobFailed, follow_job
from labeling.models import JobRecord
from workers.loop_jobs import Phases
from workers.runner import JobContext

STEPS = 150


def stepping(record, fail_at=None):
    """A sleep that moves the job one step per poll, as a worker saving its progress would."""
    rows = JobRecord.objects.filter(pk=record.pk)

    def sleep(_seconds):
        row = rows.get()
        done = row.progress_done + 1
        if fail_at is not None and done == fail_at:
            rows.update(status="failed", error="ValueError: the scene has no pixels")
        elif done == STEPS:
            rows.update(status="done", progress_done=done, message="all done")
        else:
            phase = "training" if done >= STEPS // 3 else "corrections"
            rows.update(status="running", progress_done=done, message=f"{phase}: step {done}")

    return sleep


@pytest.mark.django_db
def test_a_log_gets_a_line_per_phase_and_tenth_not_per_update(project):
    record = JobRecord.objects.create(project=project, kind="train", queue="train",
                                      progress_total=STEPS, rq_job_id="")  # fmt: skip
    log = io.StringIO()
    done = follow_job(record, "v1: training", stream=log, poll=0, sleep=stepping(record))
    assert done.status == "done" and done.progress_done == STEPS
    lines = log.getvalue().splitlines()
    assert len(lines) <= 15, lines
    assert lines[0] == "v1: training: 0% (0/150) queued"
    assert "v1: training: 1% (1/150) corrections: step 1" in lines
    assert "v1: training: 33% (50/150) training: step 50" in lines
    assert lines[-1] == "v1: training: done, 100% (150/150) all done"
    assert "\r" not in log.getvalue()  # no bar redraws in a file


@pytest.mark.django_db
def test_a_failed_job_says_why_and_where_its_log_is(project):
    record = JobRecord.objects.create(project=project, kind="dzi", queue="default",
                                      progress_total=STEPS, rq_job_id="")  # fmt: skip
    log = io.StringIO()
    with pytest.raises(JobFailed) as failed:
        follow_job(record, "deep-zoom tiles", stream=log, poll=0, sleep=stepping(record, 120))
    assert str(failed.value) == (
        f"deep-zoom tiles failed: ValueError: the scene has no pixels (job {record.pk}; its log: "
        f"GET /api/jobs/{record.pk})"
    )
    assert len(log.getvalue().splitlines()) <= 12
    assert "done" not in log.getvalue()


@pytest.mark.django_db
def test_a_cycle_shows_the_training_s_real_steps(project, alice_client):
    record = JobRecord.objects.create(project=project, kind="retrain_cycle", queue="train",
                                      status="running", rq_job_id="")  # fmt: skip
    phases = Phases(JobContext(record))
    phases("training")(300, 1400, "loss 0.4100")
    row = JobRecord.objects.get(pk=record.pk)
    assert (row.progress_done, row.progress_total) == (300, 1400)
    assert row.message == "training: loss 0.4100"
    [job] = alice_client.get(f"/api/projects/{project.pk}/jobs").json()["jobs"]
    assert (job["progress_done"], job["progress_total"]) == (300, 1400)
    assert "300/1400" in alice_client.get(f"/projects/{project.pk}/").content.decode()

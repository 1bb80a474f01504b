"""Job plumbing through real Redis and a real RQ worker: progress, logs, failures, reconcile."""

import django_rq
import pytest
from rq import SimpleWorker

from labeling.jobs.enqueue import active_job, enqueue, job_state, reconcile
from labeling.models import JobRecord


def run_worker_burst(queue_name="default"):
    queue = django_rq.get_queue(queue_name)
    SimpleWorker([queue], connection=queue.connection).work(burst=True)


@pytest.mark.django_db(transaction=True)
def test_job_reports_progress_log_and_result(redis_conn, project):
    record = enqueue("count", "jobs_for_tests.count_to", project=project, n=5)
    record.refresh_from_db()
    assert record.status == "queued" and record.rq_job_id
    run_worker_burst()
    record.refresh_from_db()
    assert record.status == "done"
    assert (record.progress_done, record.progress_total) == (5, 5)
    assert record.result == {"counted": 5}
    assert "counted" in record.log
    assert job_state(record)["fraction"] == 1.0


@pytest.mark.django_db(transaction=True)
def test_failed_job_keeps_its_reason(redis_conn, project):
    record = enqueue("boom", "jobs_for_tests.explode", project=project, message="bad input X")
    run_worker_burst()
    record.refresh_from_db()
    assert record.status == "failed"
    assert record.error == "ValueError: bad input X"
    assert "Traceback" in record.log


@pytest.mark.django_db(transaction=True)
def test_training_jobs_go_to_the_train_queue(redis_conn, project):
    record = enqueue("train", "jobs_for_tests.count_to", project=project, n=1)
    assert record.queue == "train"
    assert len(django_rq.get_queue("train")) == 1
    assert active_job(project, "train") == record


@pytest.mark.django_db(transaction=True)
def test_reconcile_marks_a_lost_job_failed(redis_conn, project):
    record = enqueue("count", "jobs_for_tests.count_to", project=project, n=1)
    record.refresh_from_db()
    JobRecord.objects.filter(pk=record.pk).update(status="running")
    redis_conn.flushdb()  # the worker and its job are gone
    record.refresh_from_db()
    assert reconcile(record).status == "failed"
    assert "worker stopped" in record.error
    assert active_job(project, "count") is None

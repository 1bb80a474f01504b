"""workers.rq_worker.Worker with a heartbeat every 2 s instead of 30 s, so that a short Redis
outage in a test spans heartbeats of a running job (used by
tests/integration/test_redis_outage.py)."""

from workers.rq_worker import Worker


class FastHeartbeatWorker(Worker):
    def __init__(self, *args, **kwargs):
        kwargs["job_monitoring_interval"] = 2
        super().__init__(*args, **kwargs)

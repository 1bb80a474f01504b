"""The RQ worker class every `manage.py rqworker` uses (settings.RQ["WORKER_CLASS"]).

RQ's worker forks a "work horse" per job and the horse calls setpgrp(), so killing the worker,
even its whole process group (an operator's kill, a supervisor's stop, the OOM killer), leaves
the horse running: a cycle declared failed went on training and was promoted. Here the horse
asks the kernel to SIGKILL it when its worker dies (PR_SET_PDEATHSIG), so a dead worker's job
is really dead.

RQ's worker also quits on the first Redis error outside of waiting for a job ("found an
unhandled exception, quitting"): a Redis restart mid-job left no `train` worker. Here a Redis
outage is waited out: heartbeats that fail are skipped while the horse works on, and the worker
resumes once Redis answers again. A Redis that comes back empty (flushed, failed over) gets the
worker's registration again at its next heartbeat."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

import redis
from rq.worker import Worker as RQWorker

REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """In a forked child: SIGKILL this process when its parent dies (Linux). If the parent is
    already gone (it died between fork and here), exit at once."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return
    if os.getppid() != parent_pid:
        os._exit(1)


class Worker(RQWorker):
    redis_wait_max_s = 5.0

    # -- the horse dies with its worker ---------------------------------------------------------

    def fork_work_horse(self, job, queue):
        self._parent_pid = os.getpid()
        super().fork_work_horse(job, queue)

    def main_work_horse(self, job, queue):
        die_with_parent(self._parent_pid)
        super().main_work_horse(job, queue)

    def handle_work_horse_killed(self, job, retpid, ret_val, rusage):
        """The horse died by a signal (the OOM killer, an operator): fail its JobRecord and
        version now, so no page shows a dead cycle as "training"."""
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)
        from django.db import close_old_connections, connections

        from labeling.loop.cycle import fail_killed

        how = f"signal {os.WTERMSIG(ret_val)}" if ret_val and os.WIFSIGNALED(ret_val) else ret_val
        try:
            close_old_connections()
            fail_killed(job.id, f"its work horse (pid {retpid}) was killed ({how})")
        except Exception:  # the database may be down too: the pages reconcile later
            self.log.exception("Worker %s: could not record the killed job %s", self.name, job.id)
        finally:
            # The next horse is forked from this process: it must not inherit a connection.
            connections.close_all()

    # -- Redis outages are waited out -----------------------------------------------------------

    def wait_for_redis(self, reason) -> None:
        self.log.warning("Worker %s: Redis unavailable (%s); waiting for it", self.name, reason)
        pause = 0.5
        while not self._stop_requested:
            try:
                self.connection.ping()
            except REDIS_DOWN:
                time.sleep(pause)
                pause = min(pause * 2, self.redis_wait_max_s)
                continue
            self.log.info("Worker %s: Redis is back", self.name)
            return

    def maintain_heartbeats(self, job, execution):
        # The horse works on while Redis is away; the next heartbeat renews everything.
        try:
            super().maintain_heartbeats(job, execution)
        except REDIS_DOWN as exc:
            self.log.warning("Worker %s: heartbeat skipped, Redis unavailable (%s)", self.name, exc)
            return
        self.register_again_if_forgotten()

    def execute_job(self, job, queue):
        try:
            super().execute_job(job, queue)
        except REDIS_DOWN as exc:
            # The horse has ended (RQ only gets here once it has); its JobRecord holds the
            # outcome. RQ's own bookkeeping of this job is cleaned up by its registries later.
            if self.horse_pid:
                self.wait_for_horse()
                self._horse_pid = 0
            self.wait_for_redis(exc)

    def check_for_suspension(self, burst):
        try:
            return super().check_for_suspension(burst)
        except REDIS_DOWN as exc:
            self.wait_for_redis(exc)

    def run_maintenance_tasks(self):
        try:
            return super().run_maintenance_tasks()
        except REDIS_DOWN as exc:
            self.wait_for_redis(exc)

    def heartbeat(self, *args, **kwargs):
        try:
            result = super().heartbeat(*args, **kwargs)
        except REDIS_DOWN as exc:
            self.wait_for_redis(exc)
            result = super().heartbeat(*args, **kwargs)
        if kwargs.get("pipeline") is None and (len(args) < 2 or args[1] is None):
            self.register_again_if_forgotten()
        return result

    # -- a Redis that lost its data (a flush, a failover to an empty replica) -------------------

    def register_again_if_forgotten(self) -> None:
        """RQ's heartbeat only renews this worker's hash: after Redis lost its data the worker
        ran on unregistered (the health page counted 0 workers while jobs ran). Each heartbeat
        checks the registration (one SISMEMBER) and writes it again when it is gone."""
        from rq import worker_registration

        try:
            if self.connection.sismember(self.redis_workers_keys, self.key):
                return
            self.log.warning("Worker %s: its registration is gone from Redis; registering again",
                             self.name)  # fmt: skip
            with self.connection.pipeline() as pipeline:
                pipeline.hset(self.key, mapping=self.serialize())
                worker_registration.register(self, pipeline)
                pipeline.expire(self.key, self.worker_ttl + 60)
                pipeline.execute()
        except REDIS_DOWN as exc:
            self.log.warning("Worker %s: registration not checked, Redis unavailable (%s)",
                             self.name, exc)  # fmt: skip

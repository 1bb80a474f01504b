"""One retrain cycle per project at a time, guarded by the database itself.

The process running a cycle (an RQ work horse) holds a PostgreSQL session-level advisory lock
keyed by the project on a connection of its own. The server releases it when that process
dies, however it dies (SIGKILL, out of memory, a lost host), and only then. So:

* a new cycle's job waits for the lock before it feeds, trains or scores anything, and fails
  with a clear reason if an earlier cycle's process is still alive after ``wait_s``;
* starting a cycle (labeling.loop.cycle.start_cycle) asks the same lock without waiting, so a
  retrain is refused (409) while any process of an earlier cycle still runs, even one whose
  job was already declared failed.

SQLite (the single-machine default) has no such lock; there the in-flight version checks of
labeling.loop.cycle are the guard."""

from __future__ import annotations

import time
from contextlib import contextmanager

# First half of the two-int advisory lock key: "cycl" in ASCII, so other users of advisory
# locks in the same database cannot collide with ours.
LOCK_NAMESPACE = 0x6379636C


class CycleLockBusy(RuntimeError):
    """Another process holds the project's cycle lock."""


def _new_connection():
    """A private connection (not Django's shared one, which a request or job may close): the
    lock lives exactly as long as this connection."""
    from django.db import connections

    conn = connections.create_connection("default")
    if conn.vendor != "postgresql":
        conn.close()
        return None
    conn.ensure_connection()
    return conn


def _try_lock(conn, project_id: int) -> bool:
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [LOCK_NAMESPACE, project_id])
        return bool(cursor.fetchone()[0])


@contextmanager
def cycle_lock(project_id: int, wait_s: float = 0.0, poll_s: float = 0.5):
    """Hold the project's cycle lock for the block; CycleLockBusy if still taken after
    ``wait_s`` seconds."""
    conn = _new_connection()
    if conn is None:
        yield
        return
    try:
        deadline = time.monotonic() + wait_s
        while not _try_lock(conn, project_id):
            if time.monotonic() >= deadline:
                raise CycleLockBusy(
                    "a process of an earlier retrain cycle of this project is still running"
                )
            time.sleep(poll_s)
        yield
    finally:
        conn.close()  # ends the session: the server drops the lock with it


def cycle_process_running(project_id: int) -> bool:
    """Whether some process holds the project's cycle lock right now."""
    try:
        with cycle_lock(project_id):
            return False
    except CycleLockBusy:
        return True

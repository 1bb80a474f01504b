"""Long jobs (training, scoring, imports) survive database connections the server cut: a
failover, a restart, pg_terminate_backend. Requests have labeling.web.middleware for that; a job
holds its connection for minutes, mostly idle while it computes, and the first progress write
after a cut used to fail the whole job ("OperationalError: the connection is closed").

``surviving_cuts()`` installs an execute wrapper on the thread's connection: a statement run in
autocommit (outside any transaction) that fails because the connection is gone is run again on
a new connection, after a short pause, a few times. Such a statement is its own transaction, so
a cut either rolled it back or came after it; repeating a SELECT, an UPDATE that sets values or
a DELETE is harmless. An INSERT is not (a cut after its commit would double the row): before
one the connection is checked (SELECT 1) and renewed when dead, and the INSERT itself is never
repeated. Inside a transaction nothing is repeated statement by statement: ``retry_on_cut(fn)``
runs a whole transactional step again when a cut rolled it back.

Not covered: the cycle lock's own connection (labeling.loop.cycle_lock) is not taken again after
a cut; the in-flight version checks still refuse a second cycle meanwhile."""

from __future__ import annotations

import time
from contextlib import contextmanager

from django.db import InterfaceError, OperationalError, connection

# Pauses before each new attempt: about 12 s in all, enough for a server restart or failover.
PAUSES_S = (0.05, 0.2, 0.5, 1.0, 2.0, 4.0, 4.0)


def _lost(conn) -> bool:
    """After a failed statement: whether the connection itself is gone (not a lock timeout or
    another error of the statement on a live connection). In a transaction only the driver's
    own flag is asked (a probe there fails on any aborted transaction)."""
    raw = conn.connection
    if raw is None or getattr(raw, "closed", False):  # psycopg: closed once the server cut it
        return True
    return not conn.in_atomic_block and not conn.is_usable()


def _reconnect(conn) -> None:
    conn.close()
    conn.ensure_connection()


class RetryCutStatements:
    """An execute wrapper (``connection.execute_wrapper``), see the module's doc."""

    def __call__(self, execute, sql, params, many, context):
        conn, cursor = context["connection"], context["cursor"]
        # A named (server-side) cursor lives in its connection: nothing to repeat it on.
        repeat = not conn.in_atomic_block and not getattr(cursor.cursor, "name", None)
        if repeat and sql.lstrip()[:6].upper() == "INSERT":
            if not conn.is_usable():
                self._renew(conn, cursor)
            repeat = False
        for pause in (*PAUSES_S, None) if repeat else (None,):
            try:
                return execute(sql, params, many, context)
            except (OperationalError, InterfaceError) as exc:
                if not _lost(conn):
                    raise
                exc.database_connection_lost = True  # for retry_on_cut, once Django rolled back
                if pause is None or conn.in_atomic_block:
                    raise
            time.sleep(pause)
            self._renew(conn, cursor)

    @staticmethod
    def _renew(conn, cursor) -> None:
        """A new connection, and the caller's cursor moved onto it (the caller reads the
        statement's rows from that same cursor object)."""
        for pause in (*PAUSES_S, None):
            try:
                _reconnect(conn)
                break
            except (OperationalError, InterfaceError):  # the server is not back yet
                if pause is None:
                    raise
                time.sleep(pause)
        cursor.cursor = conn.create_cursor()


@contextmanager
def surviving_cuts():
    """For the block, statements of this thread's connection survive cuts (re-entrant)."""
    if any(isinstance(w, RetryCutStatements) for w in connection.execute_wrappers):
        yield
        return
    with connection.execute_wrapper(RetryCutStatements()):
        yield


def _lost_connection_in(exc: BaseException | None) -> bool:
    while exc is not None:
        if getattr(exc, "database_connection_lost", False):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def retry_on_cut(fn, *args, **kwargs):
    """Run ``fn``, a step that is one transaction of its own; when a cut connection made it
    fail (its transaction rolled back with the connection), run it again on a new connection,
    a few times."""
    with surviving_cuts():
        for pause in (*PAUSES_S, None):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                # Not inside a caller's transaction: that one is gone with the connection.
                if pause is None or connection.in_atomic_block or not _lost_connection_in(exc):
                    raise
            time.sleep(pause)
            connection.close()

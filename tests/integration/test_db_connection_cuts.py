"""PostgreSQL connections cut by the server (a failover, a restart: pg_terminate_backend here)
while reviewers post annotations or log in: a real gunicorn (2 processes x 4 threads,
connections reused as configured) behind real HTTP, client threads posting with client_ids as
the review page does (or logging in and opening a page), and a killer terminating every
connection of the server under test each 0.5 s, idle or in the middle of a query. No answer may
be a 5xx, and every acknowledged annotation is in the database exactly once (none lost, none
doubled)."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager

import psycopg
import pytest
import requests
from db_helpers import dsn
from django.conf import settings
from django.test import Client
from review_helpers import make_scored_scene

from labeling.jobs.local_services import REPO, worker_env
from labeling.models import Annotation

APP_NAME = "collage-under-test"  # libpq's application_name of the server's connections
CLIENTS, POSTS_EACH, KILL_EVERY_S = 8, 150, 0.5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Killer(threading.Thread):
    """Terminates every backend of the server under test, again and again."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop, self.rounds, self.killed, self.killed_busy = threading.Event(), 0, 0, 0

    def run(self):
        with psycopg.connect(dsn(), autocommit=True) as conn:
            while not self.stop.wait(KILL_EVERY_S * random.uniform(0.5, 1.5)):
                rows = conn.execute(
                    "SELECT state, pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = %s AND pid <> pg_backend_pid()",
                    [APP_NAME],
                ).fetchall()
                self.rounds += 1
                self.killed += sum(1 for _, ok in rows if ok)
                self.killed_busy += sum(1 for state, ok in rows if ok and state != "idle")


@contextmanager
def server_under_test(tmp_path):
    """A gunicorn on a free port, answering, and a killer cutting its connections; yields
    (base URL, killer). The server's log is in tmp_path/gunicorn.log."""
    port = free_port()
    env = worker_env() | {"PGAPPNAME": APP_NAME, "DEBUG": "1"}
    log = open(tmp_path / "gunicorn.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "collage_app.wsgi:application", "-b",
         f"127.0.0.1:{port}", "--workers", "2", "--threads", "4", "--timeout", "60"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    log.close()
    base = f"http://127.0.0.1:{port}"
    killer = Killer()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base}/login/", timeout=10).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):  # not up yet, or a slow start
                pass
            assert server.poll() is None and time.monotonic() < deadline, (
                (tmp_path / "gunicorn.log").read_text()[-3000:])  # fmt: skip
            time.sleep(0.3)
        killer.start()
        yield base, killer
    finally:
        killer.stop.set()
        if killer.is_alive():
            killer.join(10)
        server.terminate()
        server.wait(30)


def run_clients(count: int, client) -> None:
    threads = [threading.Thread(target=client, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)


@pytest.mark.django_db(transaction=True)
def test_cut_database_connections_cost_no_request(project, alice, storage_dir, redis_conn,
                                                  tmp_path):  # fmt: skip
    scene, _ = make_scored_scene(project, 256, 256, seed=5)
    login = Client()
    login.force_login(alice)
    session = login.cookies[settings.SESSION_COOKIE_NAME].value
    token = uuid.uuid4().hex  # CSRF: the same secret as cookie and header, as the page sends
    acknowledged, failures, statuses = {}, [], []
    lock = threading.Lock()

    def reviewer(base, seed: int):
        rng = random.Random(seed)
        http = requests.Session()
        http.cookies.update({settings.SESSION_COOKIE_NAME: session, "csrftoken": token})
        for _ in range(POSTS_EACH):
            client_id = str(uuid.UUID(int=rng.getrandbits(128)))
            body = {
                "kind": "false_negative",
                "label": "car",
                "x": rng.randrange(0, 224),
                "y": rng.randrange(0, 224),
                "w": 32,
                "h": 32,
                "client_id": client_id,
            }
            r = http.post(f"{base}/api/scenes/{scene.pk}/annotations", json=body,
                          headers={"X-CSRFToken": token, "Referer": base}, timeout=60)  # fmt: skip
            with lock:
                statuses.append(r.status_code)
                if r.status_code in (200, 201):
                    acknowledged[client_id] = r.json()["id"]
                else:
                    failures.append((r.status_code, r.text[:300]))

    with server_under_test(tmp_path) as (base, killer):
        run_clients(CLIENTS, lambda seed: reviewer(base, seed))

    server_log = (tmp_path / "gunicorn.log").read_text()[-3000:]
    assert not failures, (len(failures), failures[:10], server_log)
    assert len(statuses) == CLIENTS * POSTS_EACH and len(acknowledged) == CLIENTS * POSTS_EACH
    # The cuts really happened, also to connections in the middle of a request.
    assert killer.rounds >= 10 and killer.killed >= 20 and killer.killed_busy >= 1, vars(killer)
    rows = list(Annotation.objects.filter(scene=scene).values_list("client_id", "id"))
    assert len(rows) == len(acknowledged)  # none doubled
    assert dict(rows) == acknowledged  # none lost, each the row its client was told about


LOGINS_EACH = 8


@pytest.mark.django_db(transaction=True)
def test_cut_database_connections_cost_no_login(project, alice, tmp_path):
    """The login hashes the password (about 0.3 s of PBKDF2) between reading the user and
    writing the session: a connection idle that long is the one the killer cuts. Each client
    logs in afresh, then opens the project list with its new session."""
    token = uuid.uuid4().hex
    failures, logins, pages = [], [], []
    lock = threading.Lock()

    def person(base, seed: int):
        for _ in range(LOGINS_EACH):
            http = requests.Session()
            http.cookies.update({"csrftoken": token})
            r = http.post(f"{base}/login/", timeout=60, allow_redirects=False,
                          data={"username": "alice", "password": "pw-alice",
                                "csrfmiddlewaretoken": token})  # fmt: skip
            page = http.get(f"{base}/", timeout=60, allow_redirects=False)
            with lock:
                logins.append(r.status_code)
                pages.append(page.status_code)
                if r.status_code != 302 or page.status_code != 200:
                    failures.append((r.status_code, page.status_code, r.text[:200]))

    with server_under_test(tmp_path) as (base, killer):
        run_clients(CLIENTS, lambda seed: person(base, seed))

    server_log = (tmp_path / "gunicorn.log").read_text()[-3000:]
    assert not failures, (len(failures), failures[:10], server_log)
    assert logins == [302] * CLIENTS * LOGINS_EACH and set(pages) == {200}
    # The cuts that matter here are of idle connections (a login's password check leaves its
    # connection idle ~0.3 s); whether one also lands mid-query is chance on a quiet machine.
    assert killer.rounds >= 10 and killer.killed >= 20, vars(killer)

"""The processes the demo and the commands start on this machine: a private redis-server when none
answers, one RQ worker per queue, the web server. Each child runs in its own process group, logs
to a file, and is stopped with everything it started (`Services.stop`). `workers_for` makes sure a
worker serves each queue a command needs for the length of a block. Problems end as ServiceError;
commands turn it into CommandError (labeling.management.command_support)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlparse

from django.conf import settings

QUEUES = ("default", "train", "score")
REPO = Path(__file__).resolve().parents[2]


class ServiceError(Exception):
    """A service could not be started or stopped working; the message says what to do."""


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except Exception:
        return False


def worker_env() -> dict:
    """The environment of the children: the same database, Redis, storage and VAR_DIR as this
    process (also when a test changed them at run time)."""
    env = dict(os.environ)
    db = settings.DATABASES["default"]
    if "postgresql" in db["ENGINE"]:
        auth = quote(db.get("USER") or "")
        if db.get("PASSWORD"):
            auth += ":" + quote(db["PASSWORD"])
        host = f"{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}"
        env["DATABASE_URL"] = f"postgres://{auth + '@' if auth else ''}{host}/{db['NAME']}"
    else:
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    env.update(
        REDIS_URL=str(settings.REDIS_URL),
        STORAGE_URL=str(settings.STORAGE_URL),
        VAR_DIR=str(settings.VAR_DIR),
        SPARK_MASTER=str(settings.SPARK_MASTER),
        DJANGO_SETTINGS_MODULE=os.environ.get("DJANGO_SETTINGS_MODULE", "collage_app.settings"),
        PYTHONUNBUFFERED="1",
    )
    return env


def live_workers(queue_name: str) -> list:
    """Workers registered for the queue whose process is alive (local ones checked by pid)."""
    import django_rq
    from rq import Worker

    conn = django_rq.get_connection(queue_name)
    alive = []
    for worker in Worker.all(connection=conn, queue=django_rq.get_queue(queue_name)):
        if worker.hostname == socket.gethostname() and worker.pid:
            try:
                os.kill(worker.pid, 0)
            except ProcessLookupError:
                continue
            except PermissionError:
                pass
        alive.append(worker)
    return alive


class Services:
    """Children started here (each in its own process group), stopped together."""

    def __init__(self, log_dir: Path, out):
        self.log_dir = log_dir
        self.out = out
        self.children: list[tuple[str, subprocess.Popen]] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def spawn(self, name: str, argv: list[str], env=None) -> subprocess.Popen:
        with open(self.log_dir / f"{name}.log", "ab") as log:  # the child keeps its own handle
            proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        self.children.append((name, proc))
        return proc

    def ensure_redis(self, url: str) -> str:
        if redis_answers(url):
            return f"Redis answers at {url}"
        parsed = urlparse(url)
        if parsed.scheme != "redis":
            raise ServiceError(f"Redis does not answer at {url}; start it (or fix REDIS_URL).")
        if shutil.which("redis-server") is None:
            raise ServiceError(
                f"Redis does not answer at {url} and redis-server is not installed: "
                "apt-get install redis-server (or point REDIS_URL at a running Redis)."
            )
        host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
        data = Path(settings.VAR_DIR) / "redis"
        data.mkdir(parents=True, exist_ok=True)
        self.spawn("redis", ["redis-server", "--bind", host, "--port", str(port), "--save", "",
                             "--appendonly", "no", "--dir", str(data)])  # fmt: skip
        for _ in range(100):
            if redis_answers(url):
                return f"started a private redis-server on {host}:{port} (data in {data})"
            time.sleep(0.1)
        raise ServiceError(f"redis-server did not start; see {self.log_dir / 'redis.log'}")

    def ensure_workers(self, queues=QUEUES) -> list[str]:
        lines = []
        env = worker_env()
        for queue in queues:
            alive = live_workers(queue)
            if alive:
                lines.append(f"queue {queue}: {len(alive)} worker(s) already running")
                continue
            name = f"demo-{queue}-{socket.gethostname()}-{os.getpid()}"
            proc = self.spawn(f"worker-{queue}",
                              [sys.executable, "manage.py", "rqworker", queue, "--name", name],
                              env=env)  # fmt: skip
            lines.append(f"queue {queue}: started worker pid {proc.pid} (log in {self.log_dir})")
        return lines

    def serve(self, port: int) -> subprocess.Popen:
        """The development web server on 127.0.0.1:port, without the autoreloader's child."""
        argv = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
        return self.spawn("runserver", argv, env=worker_env())

    def check_children(self) -> None:
        for name, proc in self.children:
            if proc.poll() is not None:
                raise ServiceError(
                    f"{name} exited with status {proc.returncode}; see "
                    f"{self.log_dir / (name + '.log')}"
                )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM each child's process group, SIGKILL what is still there after ``timeout``."""
        for _name, proc in reversed(self.children):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for _name, proc in reversed(self.children):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        self.children.clear()


@contextlib.contextmanager
def workers_for(queues, opts: dict, out, logs: str = "commands"):
    """Make sure a worker serves each of ``queues`` for the block: ours, started when
    ``opts["start_workers"]`` and stopped at the end, else ServiceError naming the missing ones
    (nothing is checked with ``opts["no_wait"]``: the job only needs a worker some day)."""
    services = Services(Path(settings.VAR_DIR) / logs / "logs", out)
    try:
        missing = [q for q in queues if not live_workers(q)]
        if missing and not opts.get("no_wait"):
            if not opts.get("start_workers"):
                raise ServiceError(
                    f"No RQ worker runs for queue(s) {', '.join(missing)}: start them "
                    f"(manage.py rqworker {' '.join(QUEUES)}) or pass --start-workers."
                )
            for line in services.ensure_workers(missing):
                out.write(line)
        yield services
    finally:
        services.stop()

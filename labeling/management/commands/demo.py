"""manage.py demo (what `make demo` runs): the whole product on one machine, from nothing.

Starts what is missing (Redis when none answers at REDIS_URL, one RQ worker per queue), creates
the demo user and the project "Mona Lisa cars and boats", imports CIFAR-10, builds the training
canvases, trains the first model, makes the Mona Lisa collage (with ground truth) from the test
set, scores it on Spark, generates its deep-zoom tiles and serves the app. Every long step shows
a progress bar that follows the step's JobRecord; a second run reuses every step already done.
Ctrl-C stops everything this command started (each child runs in its own process group)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlparse

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

DEMO_PROJECT = "Mona Lisa cars and boats"
DEMO_USER = "demo"
COLLAGE_NAME = "Mona Lisa collage"
DATASET_NAME = "CIFAR-10 train"
QUEUES = ("default", "train", "score")
REPO = Path(__file__).resolve().parents[3]


# -- following jobs -------------------------------------------------------------------------------


def wait_job(record, desc: str, poll: float = 0.5, timeout: float | None = None, quiet=False):
    """Follow a JobRecord with a tqdm bar until it is done; CommandError with the job's reason
    when it failed (a dead worker is noticed through labeling.cycle.reconcile_job)."""
    from tqdm import tqdm

    from labeling.cycle import reconcile_job

    started = time.monotonic()
    bar = tqdm(
        total=100,
        desc=desc,
        disable=quiet,
        dynamic_ncols=True,
        bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}]{postfix}",
    )
    checked = 0.0
    try:
        while True:
            record.refresh_from_db()
            if record.status in ("queued", "running") and time.monotonic() - checked > 5:
                checked = time.monotonic()
                reconcile_job(record)
            pct = (
                100.0 * record.progress_done / record.progress_total if record.progress_total else 0
            )
            if record.status == "done":
                pct = 100.0
            bar.n = round(pct, 1)
            bar.set_postfix_str((record.message or record.status)[:60], refresh=False)
            bar.refresh()
            if record.status == "done":
                return record
            if record.status == "failed":
                raise CommandError(
                    f"{desc} failed: {record.error or 'no reason recorded'} (job {record.pk}; "
                    f"its log: GET /api/jobs/{record.pk})"
                )
            if timeout is not None and time.monotonic() - started > timeout:
                raise CommandError(
                    f"{desc} did not finish within {timeout:.0f}s (job {record.pk} is "
                    f"{record.status}): is an RQ worker running for queue {record.queue!r}?"
                )
            time.sleep(poll)
    finally:
        bar.close()


def score_records(version, scenes=None):
    """The JobRecords of the version's scoring runs (one per scene)."""
    from labeling.models import JobRecord, ScoringRun

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


def wait_cycle(record, quiet=False, timeout=None):
    """Follow a retrain cycle: its train-queue job, then each scene's scoring job; returns the
    version (ready and current), CommandError when any step failed."""
    from labeling.cycle import reconcile_versions
    from labeling.models import ModelVersion

    version = ModelVersion.objects.get(pk=record.params["version_id"])
    wait_job(
        record, f"v{version.number}: corrections, training, export", quiet=quiet, timeout=timeout
    )
    for run, score in score_records(version):
        wait_job(
            score,
            f"v{version.number}: scoring {run.scene.name} on Spark",
            quiet=quiet,
            timeout=timeout,
        )
    for _ in range(40):  # the last scoring job promotes the version as it finishes
        version.refresh_from_db()
        if version.status in ("ready", "failed"):
            break
        reconcile_versions(version.project)
        time.sleep(0.25)
    if version.status != "ready":
        raise CommandError(f"model v{version.number} is {version.status}: {version.error}")
    return version


# -- services --------------------------------------------------------------------------------------


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
    """Children this command started (each in its own process group), stopped together."""

    def __init__(self, log_dir: Path, out):
        self.log_dir = log_dir
        self.out = out
        self.children: list[tuple[str, subprocess.Popen]] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def spawn(self, name: str, argv: list[str], env=None) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.children.append((name, proc))
        return proc

    def ensure_redis(self, url: str) -> str:
        if redis_answers(url):
            return f"Redis answers at {url}"
        parsed = urlparse(url)
        if parsed.scheme != "redis":
            raise CommandError(f"Redis does not answer at {url}; start it (or fix REDIS_URL).")
        if shutil.which("redis-server") is None:
            raise CommandError(
                f"Redis does not answer at {url} and redis-server is not installed: "
                "apt-get install redis-server (or point REDIS_URL at a running Redis)."
            )
        host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
        data = Path(settings.VAR_DIR) / "redis"
        data.mkdir(parents=True, exist_ok=True)
        self.spawn(
            "redis",
            [
                "redis-server",
                "--bind",
                host,
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(data),
            ],
        )
        for _ in range(100):
            if redis_answers(url):
                return f"started a private redis-server on {host}:{port} (data in {data})"
            time.sleep(0.1)
        raise CommandError(f"redis-server did not start; see {self.log_dir / 'redis.log'}")

    def ensure_workers(self, queues=QUEUES) -> list[str]:
        lines = []
        env = worker_env()
        for queue in queues:
            alive = live_workers(queue)
            if alive:
                lines.append(f"queue {queue}: {len(alive)} worker(s) already running")
                continue
            proc = self.spawn(
                f"worker-{queue}",
                [
                    sys.executable,
                    "manage.py",
                    "rqworker",
                    queue,
                    "--name",
                    f"demo-{queue}-{socket.gethostname()}-{os.getpid()}",
                ],
                env=env,
            )
            lines.append(f"queue {queue}: started worker pid {proc.pid} (log in {self.log_dir})")
        return lines

    def check_children(self) -> None:
        for name, proc in self.children:
            if proc.poll() is not None:
                raise CommandError(
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


# -- the steps ---------------------------------------------------------------------------------


def demo_password(var_dir: Path) -> tuple[str, str]:
    """(password, where it came from): DEMO_PASSWORD, or generated once and kept in var/."""
    if os.environ.get("DEMO_PASSWORD"):
        return os.environ["DEMO_PASSWORD"], "from DEMO_PASSWORD"
    path = var_dir / "demo" / "password"
    if path.exists():
        return path.read_text().strip(), f"stored in {path}"
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return password, f"generated, stored in {path}"


def default_profile() -> str:
    try:
        import torch

        return "full" if torch.cuda.is_available() else "quick"
    except Exception:
        return "quick"


class Command(BaseCommand):
    help = (
        "Run the whole demo: services, demo user and project, CIFAR-10, canvases, first model, "
        "Mona Lisa collage, Spark scoring, deep-zoom tiles, then serve the app. Re-running "
        "reuses what is done; Ctrl-C stops what it started."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--profile",
            choices=["tiny", "quick", "full"],
            help="Training profile (default: full on a GPU, quick on a CPU)",
        )
        parser.add_argument("--cifar", help="CIFAR-10 zip/tar.gz when ../shared/data lacks it")
        parser.add_argument("--no-serve", action="store_true", help="Stop after the pipeline")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--collage-cols",
            type=int,
            default=80,
            help="Collage width in tiles (80: 2560 x 3936 px)",
        )
        parser.add_argument(
            "--canvases-per-class",
            type=int,
            default=None,
            help="Fewer training canvases (tests); default: the mlcore rule",
        )
        parser.add_argument("--canvas-size", type=int, default=1024)
        parser.add_argument("--project", default=DEMO_PROJECT)
        parser.add_argument(
            "--step-timeout",
            type=float,
            default=None,
            help="Fail a step that takes longer than this many seconds",
        )
        parser.add_argument("--timings", help="Write per-step timings as JSON to this file")

    def say(self, text: str, style=None) -> None:
        self.stdout.write(style(text) if style else text)

    def handle(self, *args, **opts):
        var_dir = Path(settings.VAR_DIR)
        services = Services(var_dir / "demo" / "logs", self.stdout)
        self.timings: dict[str, float] = {}
        self.opts = opts
        interrupted = False
        previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

        def on_term(signum, frame):
            raise KeyboardInterrupt

        # SIGINT too: a shell starting us in the background may have set it to "ignore".
        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            self.run_steps(services, var_dir)
        except KeyboardInterrupt:
            interrupted = True
            self.say("\ninterrupted: stopping what the demo started", self.style.WARNING)
        finally:
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])
            started = [name for name, _ in services.children]
            services.stop()
            if started:
                self.say(f"stopped: {', '.join(started)}")
            if opts["timings"]:
                Path(opts["timings"]).write_text(json.dumps(self.timings, indent=2))
        if interrupted:
            raise CommandError("interrupted (Ctrl-C)", returncode=130)

    def step(self, name: str):
        command = self

        class _Step:
            def __enter__(self):
                self.t = time.perf_counter()
                command.say(command.style.MIGRATE_HEADING(f"== {name}"))

            def __exit__(self, exc_type, *exc):
                if exc_type is None:
                    command.timings[name] = round(time.perf_counter() - self.t, 2)
                    command.say(f"   {name}: {command.timings[name]:.1f}s")
                return False

        return _Step()

    def run_steps(self, services: Services, var_dir: Path) -> None:
        opts = self.opts
        timeout = opts["step_timeout"]
        profile = opts["profile"] or default_profile()
        with self.step("services"):
            self.say("   " + services.ensure_redis(str(settings.REDIS_URL)))
            call_command("migrate", interactive=False, verbosity=0)
            for line in services.ensure_workers():
                self.say("   " + line)
        with self.step("user and project"):
            user, password, where = self.ensure_user(var_dir)
            project = self.ensure_project(user)
            self.say(
                f"   user {user.username!r} (password {where}); project {project.name!r} "
                f"#{project.pk}"
            )
        with self.step("import CIFAR-10"):
            self.ensure_dataset(project, timeout)
        with self.step("training canvases"):
            self.ensure_canvases(project, timeout)
        services.check_children()
        with self.step(f"first model (profile {profile})"):
            version = self.ensure_model(project, user, profile, timeout)
            val = version.metrics.get("val_accuracy")
            self.say(f"   model v{version.number} is current (validation accuracy {val})")
        with self.step("Mona Lisa collage"):
            scene = self.ensure_collage(project, timeout)
            self.say(f"   scene #{scene.pk} {scene.width} x {scene.height} px")
        with self.step("score on Spark"):
            run = self.ensure_scored(project, scene, timeout)
            self.say("   " + self.metrics_line(run))
        with self.step("deep-zoom tiles"):
            self.ensure_dzi(project, scene, timeout)
        self.say(
            self.style.SUCCESS(
                "demo ready: " + ", ".join(f"{k} {v:.0f}s" for k, v in self.timings.items())
            )
        )
        url = f"http://127.0.0.1:{opts['port']}/"
        login = f"login: {user.username} / {password}"
        if opts["no_serve"]:
            self.say(f"not serving (--no-serve); `manage.py runserver` serves it at {url}. {login}")
            return
        services.check_children()
        server = services.spawn(
            "runserver",
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{opts['port']}", "--noreload"],
            env=worker_env(),
        )
        self.say(self.style.SUCCESS(f"serving {url}  ({login}); scene: {url}scenes/{scene.pk}/"))
        self.say("Ctrl-C stops the server, the workers and anything else the demo started.")
        while server.poll() is None:
            services.check_children()
            time.sleep(1)
        raise CommandError(f"the web server exited ({server.returncode}); see runserver.log")

    # -- each step, idempotent ---------------------------------------------------------------

    def ensure_user(self, var_dir: Path):
        from django.contrib.auth import get_user_model

        password, where = demo_password(var_dir)
        user, _ = get_user_model().objects.get_or_create(username=DEMO_USER)
        if not user.check_password(password):
            user.set_password(password)
            user.save()
        return user, password, where

    def ensure_project(self, user):
        from labeling.models import Project

        project, _ = Project.objects.get_or_create(
            name=self.opts["project"],
            defaults={"description": "The demo: CIFAR-10 cars and boats in a Mona Lisa collage."},
        )
        project.members.add(user)
        return project

    def cifar_source(self, var_dir: Path) -> Path:
        from mlcore.datasets import download_cifar10, find_shared_data
        from mlcore.progress import terminal_progress

        if self.opts["cifar"]:
            path = Path(self.opts["cifar"])
            if not path.exists():
                raise CommandError(f"--cifar {path}: no such file")
            return path
        shared = find_shared_data()
        if shared is not None and (shared / "cifar10-jpg.zip").exists():
            return shared / "cifar10-jpg.zip"
        self.say("   ../shared/data has no cifar10-jpg.zip and no --cifar: downloading CIFAR-10")
        try:
            return download_cifar10(var_dir / "downloads", progress=terminal_progress("download"))
        except Exception as exc:
            raise CommandError(str(exc)) from None

    def ensure_dataset(self, project, timeout):
        from labeling.models import Dataset, JobRecord
        from labeling.uploads import UploadError, add_dataset

        ready = Dataset.objects.filter(project=project, status="ready").first()
        if ready is not None:
            self.say(f"   reusing dataset {ready.name!r}")
            return ready
        dataset = Dataset.objects.filter(project=project, status__in=("pending", "importing"))
        dataset = dataset.first()
        if dataset is not None:
            record = JobRecord.objects.filter(
                kind="import_dataset", params__dataset_id=dataset.pk
            ).first()
        else:
            source = self.cifar_source(Path(settings.VAR_DIR))
            try:
                dataset, record = add_dataset(
                    project, path=source, name=DATASET_NAME, split="train"
                )
            except UploadError as exc:
                raise CommandError(f"importing {source} failed: {exc}") from None
        wait_job(record, "import CIFAR-10 (train split)", timeout=timeout)
        dataset.refresh_from_db()
        return dataset

    def ensure_canvases(self, project, timeout):
        from labeling.jobs import enqueue
        from labeling.models import JobRecord, TrainingCanvas

        if TrainingCanvas.objects.filter(project=project, kind="original").exists():
            n = TrainingCanvas.objects.filter(project=project).count()
            self.say(f"   reusing {n} training canvases")
            return
        record = JobRecord.objects.filter(
            project=project, kind="build_canvases", status__in=("queued", "running")
        ).first()
        if record is None:
            params = {"canvas_size": self.opts["canvas_size"]}
            if self.opts["canvases_per_class"]:
                params["canvases_per_class"] = self.opts["canvases_per_class"]
            record = enqueue(
                "build_canvases",
                "workers.loop_jobs.build_canvases",
                project=project,
                project_id=project.pk,
                **params,
            )
        wait_job(record, "build canvases", timeout=timeout)
        n = TrainingCanvas.objects.filter(project=project).count()
        self.say(f"   {n} training canvases")

    def ensure_model(self, project, user, profile, timeout):
        from labeling.cycle import running_cycle, start_cycle

        current = project.current_model()
        if current is not None:
            self.say(f"   reusing model v{current.number}")
            return current
        running = running_cycle(project)
        if running is not None and running[0] is not None:
            record = running[0]
        else:
            record = start_cycle(project, user, profile=profile)
        return wait_cycle(record, timeout=timeout)

    def ensure_collage(self, project, timeout):
        from labeling.models import JobRecord, Scene
        from labeling.uploads import UploadError, add_collage_scene

        scene = Scene.objects.filter(project=project, name=COLLAGE_NAME).order_by("pk").first()
        if scene is not None and scene.pixels_key:
            self.say(f"   reusing scene {scene.name!r}")
            return scene
        record = None
        if scene is not None:
            record = JobRecord.objects.filter(
                kind="make_collage", params__scene_id=scene.pk, status__in=("queued", "running")
            ).first()
        if record is None:
            try:
                scene, record = add_collage_scene(
                    project, tiles="demo", cols=self.opts["collage_cols"], name=COLLAGE_NAME
                )
            except UploadError as exc:
                raise CommandError(f"the collage cannot be made: {exc}") from None
        wait_job(record, "collage from the CIFAR-10 test set", timeout=timeout)
        scene.refresh_from_db()
        return scene

    def ensure_scored(self, project, scene, timeout):
        from labeling.models import JobRecord, ScoringRun
        from labeling.cycle import enqueue_scoring

        version = project.current_model()
        done = ScoringRun.objects.filter(scene=scene, model_version=version, status="done")
        if done.exists():
            self.say(f"   reusing the scoring of v{version.number}")
            return done.latest("finished_at")
        run = ScoringRun.objects.filter(
            scene=scene, model_version=version, status__in=("queued", "running")
        ).first()
        if run is None:
            run = enqueue_scoring(version, [scene])[0]
        record = None
        for _ in range(40):  # the job row is written as the enqueue commits
            record = JobRecord.objects.filter(kind="score", params__run_id=run.pk).first()
            if record is not None:
                break
            time.sleep(0.25)
        if record is None:
            raise CommandError(f"scoring run {run.pk} has no job: start it with manage.py score")
        wait_job(record, f"score {scene.name} with v{version.number} on Spark", timeout=timeout)
        run.refresh_from_db()
        if run.status != "done":
            raise CommandError(f"scoring run {run.pk} is {run.status}: {run.error}")
        return run

    def ensure_dzi(self, project, scene, timeout):
        from labeling.jobs import enqueue
        from labeling.models import JobRecord

        record = (
            JobRecord.objects.filter(kind="dzi", params__scene_id=scene.pk)
            .order_by("-created_at")
            .first()
        )
        scene.refresh_from_db()
        if scene.dzi_key and (record is None or record.status == "done"):
            where = f" (job {record.pk}, the collage's follow-up)" if record else ""
            self.say(f"   deep-zoom tiles ready{where}")
            return
        if record is None or record.status not in ("queued", "running"):
            record = enqueue(
                "dzi", "workers.data_jobs.generate_dzi", project=project, scene_id=scene.pk
            )
        wait_job(record, "deep-zoom tiles", timeout=timeout)

    @staticmethod
    def metrics_line(run) -> str:
        from labeling.cycle import f1_summary

        summary = f1_summary(run.metrics, run.scene.project.negative_class)
        if not summary:
            return f"{run.n_windows} windows scored (no ground truth)"
        obj, coco = summary["object"], summary.get("coco")
        thresholds = ", ".join(f"{c} {t:.2f}" for c, t in summary.get("thresholds", {}).items())
        ap = (
            f"COCO AP@0.5 {coco['ap50']:.3f} AP@[.5:.95] {coco['ap']:.3f}"
            if coco
            else "COCO AP not computed (a run stored before it was; rescore)"
        )
        return (
            f"{run.n_windows} windows scored; thresholds {thresholds or 'n/a'} "
            f"({summary.get('threshold_source', 'project')}); object P {obj['precision']:.3f} "
            f"R {obj['recall']:.3f} F1 {obj['f1']:.3f}; {ap}; window F1 "
            f"{summary['window']['f1']:.3f} (diagnostic); "
            f"detections {run.metrics.get('detections')}"
        )

"""manage.py demo (what `make demo` runs): the whole product on one machine, from nothing.

Starts what is missing (Redis when none answers at REDIS_URL, one RQ worker per queue), creates
the demo user and the project "Mona Lisa cars and boats", imports CIFAR-10, builds the training
canvases, trains the first model, makes the Mona Lisa collage (with ground truth) from the test
set, scores it on Spark, generates its deep-zoom tiles and serves the app. Every long step follows
its JobRecord (labeling.jobs.follow: a bar on a terminal, a few lines in a log); a second run
reuses every step already done. Ctrl-C stops everything this command started
(labeling.jobs.local_services: each child runs in its own process group)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import time
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from labeling.jobs.follow import output_stream
from labeling.jobs.local_services import Services
from labeling.management.command_support import LabelingCommand, enqueue_canvases, run_metrics_line
from labeling.web.formatting import fixed3
from mlcore.model.starting_model import StartingModelError

DEMO_PROJECT = "Mona Lisa cars and boats"
DEMO_USER = "demo"
COLLAGE_NAME = "Mona Lisa collage"
DATASET_NAME = "CIFAR-10 train"


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


class Command(LabelingCommand):
    help = (
        "Run the whole demo: services, demo user and project, CIFAR-10, canvases, first model, "
        "Mona Lisa collage, Spark scoring, deep-zoom tiles, then serve the app. Re-running "
        "reuses what is done; Ctrl-C stops what it started."
    )
    metrics_line = staticmethod(run_metrics_line)  # the summary line after scoring

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

    @contextlib.contextmanager
    def step(self, name: str):
        """A heading, then the step's time (kept for --timings) once it worked."""
        started = time.perf_counter()
        self.say(self.style.MIGRATE_HEADING(f"== {name}"))
        yield
        self.timings[name] = round(time.perf_counter() - started, 2)
        self.say(f"   {name}: {self.timings[name]:.1f}s")

    def run_steps(self, services: Services, var_dir: Path) -> None:
        profile = self.opts["profile"] or default_profile()
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
            self.ensure_dataset(project)
        with self.step("training canvases"):
            self.ensure_canvases(project)
        services.check_children()
        with self.step(f"first model (profile {profile})"):
            version = self.ensure_model(project, user, profile)
            val = version.metrics.get("val_accuracy")
            self.say(f"   model v{version.number} is current (validation accuracy {fixed3(val)})")
        with self.step("Mona Lisa collage"):
            scene = self.ensure_collage(project)
            self.say(f"   scene #{scene.pk} {scene.width} x {scene.height} px")
        with self.step("score on Spark"):
            run = self.ensure_scored(project, scene)
            self.say("   " + run_metrics_line(run))
        with self.step("deep-zoom tiles"):
            self.ensure_dzi(project, scene)
        self.say(
            self.style.SUCCESS(
                "demo ready: " + ", ".join(f"{k} {v:.0f}s" for k, v in self.timings.items())
            )
        )
        self.serve(services, f"login: {user.username} / {password}", scene)

    def serve(self, services: Services, login: str, scene) -> None:
        """The web server until it stops (or Ctrl-C); with --no-serve only how to start it."""
        url = f"http://127.0.0.1:{self.opts['port']}/"
        if self.opts["no_serve"]:
            self.say(f"not serving (--no-serve); `manage.py runserver` serves it at {url}. {login}")
            return
        services.check_children()
        server = services.serve(self.opts["port"])
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
        from mlcore.data.datasets import download_cifar10, find_shared_data
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
            progress = terminal_progress("download", output_stream(self.stderr))
            return download_cifar10(var_dir / "downloads", progress=progress)
        except Exception as exc:
            raise CommandError(str(exc)) from None

    def ensure_dataset(self, project):
        from labeling.ingest.uploads import UploadError, add_dataset
        from labeling.models import Dataset, JobRecord

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
        self.follow(record, "import CIFAR-10 (train split)")
        dataset.refresh_from_db()
        return dataset

    def ensure_canvases(self, project):
        from labeling.models import JobRecord, TrainingCanvas

        if TrainingCanvas.objects.filter(project=project, kind="original").exists():
            n = TrainingCanvas.objects.filter(project=project).count()
            self.say(f"   reusing {n} training canvases")
            return
        record = JobRecord.objects.filter(
            project=project, kind="build_canvases", status__in=("queued", "running")
        ).first()
        if record is None:
            record = enqueue_canvases(project, self.opts)
        self.follow(record, "build canvases")
        n = TrainingCanvas.objects.filter(project=project).count()
        self.say(f"   {n} training canvases")

    def ensure_model(self, project, user, profile):
        from labeling.loop.cycle import running_cycle, start_cycle
        from labeling.models import ModelVersion

        current = project.current_model()
        if current is not None:
            self.say(f"   reusing model v{current.number} (started from "
                     f"{current.started_from['name']})")  # fmt: skip
            return current
        running = running_cycle(project)
        if running is not None and running[0] is not None:
            record = running[0]
        else:
            try:
                record = start_cycle(project, user, profile=profile)
            except StartingModelError as exc:
                raise CommandError(str(exc)) from None
        version = ModelVersion.objects.get(pk=record.params["version_id"])
        self.say(f"   starting from: {version.started_from['name']}")
        return self.follow_cycle(record)

    def ensure_collage(self, project):
        from labeling.ingest.uploads import UploadError, add_collage_scene
        from labeling.models import JobRecord, Scene

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
        self.follow(record, "collage from the CIFAR-10 test set")
        scene.refresh_from_db()
        return scene

    def ensure_scored(self, project, scene):
        from labeling.loop.cycle import enqueue_scoring
        from labeling.models import JobRecord, ScoringRun

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
        self.follow(record, f"score {scene.name} with v{version.number} on Spark")
        run.refresh_from_db()
        if run.status != "done":
            raise CommandError(f"scoring run {run.pk} is {run.status}: {run.error}")
        return run

    def ensure_dzi(self, project, scene):
        from labeling.jobs.enqueue import enqueue
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
        self.follow(record, "deep-zoom tiles")

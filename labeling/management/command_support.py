"""What the management commands share (not a command itself: it lives outside commands/).

`LabelingCommand` follows jobs on the command's stderr and ends a failed job or service
(labeling.jobs.follow.JobFailed, labeling.jobs.local_services.ServiceError) as a CommandError;
`ProjectJobCommand` adds the project argument and the worker options; `CycleCommand` is train and
retrain. Also: finding a user or project from a command-line reference, the arguments of an
upload (add_dataset, add_scene), queueing the canvas build, and a scoring run in one line."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from labeling.jobs.follow import JobFailed, follow_cycle, follow_job
from labeling.jobs.local_services import ServiceError, workers_for
from labeling.loop import cycle
from labeling.loop.first_model import NothingToTrainOn
from labeling.web.formatting import fixed3
from mlcore.model.starting_model import StartingModelError


class LabelingCommand(BaseCommand):
    """A command whose failed job or service ends as one line on stderr and exit status 1 (a
    CommandError), not as a traceback; `follow` shows a job's progress on the command's stderr,
    failing a job that takes longer than --step-timeout (when the command has it)."""

    step_timeout: float | None = None

    def execute(self, *args, **options):
        self.step_timeout = options.get("step_timeout")
        try:
            return super().execute(*args, **options)
        except (JobFailed, ServiceError) as exc:
            raise CommandError(str(exc)) from None

    def follow(self, record, desc: str):
        return follow_job(record, desc, timeout=self.step_timeout, stream=self.stderr)

    def follow_cycle(self, record):
        return follow_cycle(record, timeout=self.step_timeout, stream=self.stderr)


class ProjectJobCommand(LabelingCommand):
    """A command that queues a project's jobs for the RQ workers of ``queues`` and follows them:
    the project argument, --no-wait, --start-workers and --step-timeout."""

    queues: tuple[str, ...] = ("default",)

    def add_arguments(self, parser):
        parser.add_argument("project", help="Project name or id")
        parser.add_argument("--no-wait", action="store_true", help="Queue the job and return")
        parser.add_argument(
            "--start-workers",
            action="store_true",
            help="Start RQ workers when none runs (stopped at the end)",
        )
        parser.add_argument("--step-timeout", type=float, default=None)

    def workers(self, opts):
        """labeling.jobs.local_services.workers_for this command's queues."""
        return workers_for(self.queues, opts, self.stdout)


class CycleCommand(ProjectJobCommand):
    """train and retrain: start a training cycle (from scratch, or a fine-tune on the pending
    corrections) on the train and score workers and follow it to the promoted version."""

    queues = ("train", "score")
    new_model = True  # train: a new first model; retrain: a fine-tune of the current one

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--profile", default="quick", help="tiny, quick or full")
        parser.add_argument("--steps", type=int, default=None, help="Override the step count")
        if self.new_model:
            parser.add_argument(
                "--from-scratch", action="store_true",
                help="random weights instead of the shipped starting model",
            )  # fmt: skip

    def handle(self, *args, **opts):
        project = get_project(opts["project"])
        if not self.new_model:
            pending = len(cycle.pending_annotations(project))
            self.stdout.write(f"{pending} pending annotation(s)")
        profile = opts["profile"]
        if profile not in cycle.TRAIN_PROFILES:
            names = ", ".join(cycle.TRAIN_PROFILES)
            raise CommandError(f"Unknown profile {profile!r}: use one of {names}.")
        overrides = {"steps": opts["steps"]} if opts.get("steps") else None
        with self.workers(opts):
            try:
                record = cycle.start_cycle(
                    project, None, profile=profile, config=overrides, new_model=self.new_model,
                    from_scratch=opts.get("from_scratch", False),
                )  # fmt: skip
            except (cycle.CycleAlreadyRunning, StartingModelError, NothingToTrainOn) as exc:
                raise CommandError(str(exc)) from None
            if opts["no_wait"]:
                number = record.params["version_id"]
                self.stdout.write(f"queued job {record.pk} (model version id {number})")
                return
            version = self.follow_cycle(record)
        self.stdout.write(
            f"model v{version.number} is current: validation accuracy "
            f"{fixed3(version.metrics.get('val_accuracy'))}, scenes "
            f"{', '.join(map(str, version.metrics.get('scenes', {}))) or 'none'}"
        )


# -- finding what the command line names --------------------------------------------------------


def get_user(username: str):
    from django.contrib.auth import get_user_model

    if not username:
        raise CommandError("Name the user with --user USERNAME (the project's owner or member).")
    try:
        return get_user_model().objects.get(username=username)
    except get_user_model().DoesNotExist:
        raise CommandError(
            f"No user {username!r}; create one with `manage.py createsuperuser` or the admin."
        ) from None


def get_project(ref: str):
    """Any project, by name or else by id (the operator's commands: train, score...)."""
    from labeling.models import Project

    project = Project.objects.filter(name=ref).first()
    if project is None and ref.isdigit():
        project = Project.objects.filter(pk=int(ref)).first()
    if project is None:
        raise CommandError(f"No project named {ref!r} (or with that id).")
    return project


def get_member_project(username: str, ref: str):
    """A project of the user's by id or by name; CommandError otherwise (as the API's 404)."""
    from labeling.projects.access import projects_for

    user = get_user(username)
    projects = projects_for(user)
    found = projects.filter(pk=int(ref)).first() if str(ref).isdigit() else None
    found = found or projects.filter(name=ref).first()
    if found is None:
        raise CommandError(
            f"No project {ref!r} among {user.username}'s projects; give the id or the exact "
            "name of a project the user is a member of."
        )
    return found


# -- arguments and jobs --------------------------------------------------------------------------


def add_upload_arguments(parser, source: str, source_help: str, *, what: str, wait_help: str):
    """The project and its member, a local ``source`` file or a storage --key, --name, --wait and
    --json (add_dataset, add_scene)."""
    parser.add_argument("project", help="Project id or name")
    parser.add_argument(source, nargs="?", help=source_help)
    parser.add_argument("--key", default="", help="…or a key in the configured storage")
    parser.add_argument("--user", required=True, help="A member of the project")
    parser.add_argument("--name", default="", help=f"{what} name (default: the file name)")
    parser.add_argument("--wait", action="store_true", help=wait_help)
    parser.add_argument("--json", action="store_true", help="Print the result as JSON")


def enqueue_canvases(project, opts, **params):
    """Queue the build of the project's training canvases (--canvas-size,
    --canvases-per-class); the JobRecord."""
    from labeling.jobs.enqueue import enqueue

    params["canvas_size"] = opts["canvas_size"]
    if opts["canvases_per_class"]:
        params["canvases_per_class"] = opts["canvases_per_class"]
    return enqueue("build_canvases", "workers.loop_jobs.build_canvases", project=project,
                   project_id=project.pk, **params)  # fmt: skip


def run_metrics_line(run) -> str:
    """A finished scoring run in one line: thresholds, object P/R/F1, COCO AP, window F1."""
    summary = cycle.f1_summary(run.metrics, run.scene.project.negative_class)
    if not summary:
        return f"{run.n_windows} windows scored (no ground truth)"
    obj, coco = summary["object"], summary.get("coco")
    counts = run.metrics.get("detections") or {}
    detections = ", ".join(f"{label} {n:,}" for label, n in counts.items())
    thresholds = ", ".join(f"{c} {fixed3(t)}" for c, t in summary.get("thresholds", {}).items())
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
        f"detections {detections or 'none'}"
    )

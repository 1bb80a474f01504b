"""manage.py train <project>: train a model version from scratch on the project's canvases, then
export and score it like any cycle (the version becomes current only when all of it worked)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from labeling.management.commands.demo import QUEUES, Services, live_workers, wait_cycle
from labeling.management.commands.simulate_review import get_project


def add_worker_options(parser):
    parser.add_argument("--no-wait", action="store_true", help="Queue the job and return")
    parser.add_argument(
        "--start-workers",
        action="store_true",
        help="Start RQ workers when none runs (stopped at the end)",
    )
    parser.add_argument("--step-timeout", type=float, default=None)


@contextlib.contextmanager
def workers_for(queues, opts, out):
    """Make sure a worker serves each queue (starting ours with --start-workers) for the block."""
    from django.conf import settings

    services = Services(Path(settings.VAR_DIR) / "commands" / "logs", out)
    try:
        missing = [q for q in queues if not live_workers(q)]
        if missing and not opts["no_wait"]:
            if not opts["start_workers"]:
                raise CommandError(
                    f"No RQ worker runs for queue(s) {', '.join(missing)}: start them "
                    f"(manage.py rqworker {' '.join(QUEUES)}) or pass --start-workers."
                )
            for line in services.ensure_workers(missing):
                out.write(line)
        yield services
    finally:
        services.stop()


def start_and_follow(command, project, opts, from_scratch: bool):
    from labeling.cycle import TRAIN_PROFILES, CycleAlreadyRunning, start_cycle

    profile = opts["profile"]
    if profile not in TRAIN_PROFILES:
        raise CommandError(f"Unknown profile {profile!r}: use one of {', '.join(TRAIN_PROFILES)}.")
    overrides = {"steps": opts["steps"]} if opts.get("steps") else None
    with workers_for(["train", "score"], opts, command.stdout):
        try:
            record = start_cycle(project, None, profile=profile, config=overrides,
                                 from_scratch=from_scratch)  # fmt: skip
        except CycleAlreadyRunning as exc:
            raise CommandError(str(exc)) from None
        number = record.params["version_id"]
        if opts["no_wait"]:
            command.stdout.write(f"queued job {record.pk} (model version id {number})")
            return None
        version = wait_cycle(record, timeout=opts["step_timeout"])
    command.stdout.write(
        f"model v{version.number} is current: validation accuracy "
        f"{version.metrics.get('val_accuracy')}, scenes {list(version.metrics.get('scenes', {}))}"
    )
    return version


class Command(BaseCommand):
    help = "Train a new model version from scratch (then export, score, promote)."

    def add_arguments(self, parser):
        parser.add_argument("project", help="Project name or id")
        parser.add_argument("--profile", default="quick", help="tiny, quick or full")
        parser.add_argument("--steps", type=int, default=None, help="Override the step count")
        add_worker_options(parser)

    def handle(self, *args, **opts):
        start_and_follow(self, get_project(opts["project"]), opts, from_scratch=True)

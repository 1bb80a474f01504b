"""manage.py add_dataset: import a zip of image folders or the CIFAR-10 archive into a project."""

from __future__ import annotations

import contextlib
import json
import sys

from django.core.management.base import BaseCommand, CommandError

from labeling.management.commands.create_project import get_user
from labeling.uploads import UploadError, add_dataset, run_inline


def get_project(user, ref: str):
    """A project of the user's by id or by name; CommandError otherwise (as the API's 404)."""
    from labeling.access import projects_for

    projects = projects_for(user)
    found = projects.filter(pk=int(ref)).first() if str(ref).isdigit() else None
    found = found or projects.filter(name=ref).first()
    if found is None:
        raise CommandError(
            f"No project {ref!r} among {user.username}'s projects; give the id or the exact "
            "name of a project the user is a member of."
        )
    return found


def count_table(class_counts: dict) -> str:
    """The per-class table printed after an import."""
    lines = [f"{'source class':<20} {'images':>8}  project class"]
    for name, row in (class_counts.get("sources") or {}).items():
        lines.append(f"{name:<20} {row['count']:>8}  {row['to']}")
    lines.append("-" * 44)
    for name, n in (class_counts.get("classes") or {}).items():
        lines.append(f"{name:<20} {n:>8}")
    return "\n".join(lines)


def follow_job(record, progress_desc: str, stderr=None):
    """Run an inline job with a tqdm bar (on the command's stderr); CommandError with the job's
    reason when it fails."""
    from mlcore.progress import terminal_progress

    stream = getattr(stderr, "_out", stderr) or sys.stderr
    try:
        with contextlib.redirect_stderr(stream):  # tqdm writes to sys.stderr
            run_inline(record, terminal_progress(progress_desc))
    except Exception:
        record.refresh_from_db()
        raise CommandError(f"{progress_desc} failed: {record.error}") from None
    record.refresh_from_db()
    return record


class Command(BaseCommand):
    help = (
        "Add a dataset to a project: a local FILE (a zip of image folders, <class>/*.jpg or "
        "<split>/<class>/*.jpg, or the official cifar-10-python.tar.gz) or --key, a path in "
        "the configured storage. By default the import is queued for an RQ worker (start one "
        "with `manage.py rqworker default`) and the command prints the dataset and job ids; "
        "with --wait it runs here, with a progress bar, and prints the per-class counts and "
        "the skipped files."
    )

    def add_arguments(self, parser):
        parser.add_argument("project", help="Project id or name")
        parser.add_argument("file", nargs="?", help="Local zip or CIFAR-10 archive")
        parser.add_argument("--key", default="", help="…or a key in the configured storage")
        parser.add_argument("--user", required=True, help="A member of the project")
        parser.add_argument("--name", default="", help="Dataset name (default: the file name)")
        parser.add_argument("--split", choices=["all", "train", "test"], default="all")
        parser.add_argument(
            "--wait", action="store_true", help="Import here with a progress bar (no worker)"
        )
        parser.add_argument("--json", action="store_true", help="Print the result as JSON")

    def handle(self, *args, **opts):
        user = get_user(opts["user"])
        project = get_project(user, opts["project"])
        if bool(opts["file"]) == bool(opts["key"]):
            raise CommandError("Give a local FILE or --key STORAGE_KEY (exactly one of the two).")
        try:
            dataset, record = add_dataset(
                project,
                path=opts["file"] or None,
                key=opts["key"],
                name=opts["name"],
                split=opts["split"],
                inline=opts["wait"],
            )
        except UploadError as exc:
            raise CommandError(str(exc)) from None
        if opts["wait"]:
            follow_job(record, f"importing {dataset.name}", self.stderr)
            dataset.refresh_from_db()
            if opts["json"]:
                from labeling.views.data import dataset_state

                self.stdout.write(json.dumps(dataset_state(dataset)))
                return
            self.stdout.write(
                self.style.SUCCESS(f"Dataset #{dataset.pk} {dataset.name!r}: {dataset.status}")
            )
            self.stdout.write(count_table(dataset.ordered_counts()))
            self.stdout.write(f"skipped files: {len(dataset.skipped)}")
            for member, reason in dataset.skipped:
                self.stdout.write(f"  {member}: {reason}")
            return
        if opts["json"]:
            self.stdout.write(json.dumps({"dataset": dataset.pk, "job": record.pk}))
            return
        self.stdout.write(
            self.style.SUCCESS(f"Dataset #{dataset.pk} {dataset.name!r} queued (job #{record.pk})")
        )
        self.stdout.write(
            f"follow it at /projects/{project.pk}/datasets/{dataset.pk}/ or "
            f"GET /api/projects/{project.pk}/datasets/{dataset.pk}"
        )

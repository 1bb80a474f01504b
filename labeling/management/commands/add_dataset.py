"""manage.py add_dataset: import a zip of image folders or the CIFAR-10 archive into a project."""

from __future__ import annotations

import json

from django.core.management.base import CommandError

from labeling.ingest.uploads import UploadError, add_dataset
from labeling.jobs.follow import run_job_here
from labeling.management.command_support import (
    LabelingCommand,
    add_upload_arguments,
    get_member_project,
)


def count_table(class_counts: dict) -> str:
    """The per-class table printed after an import."""
    lines = [f"{'source class':<20} {'images':>8}  project class"]
    for name, row in (class_counts.get("sources") or {}).items():
        lines.append(f"{name:<20} {row['count']:>8}  {row['to']}")
    lines.append("-" * 44)
    for name, n in (class_counts.get("classes") or {}).items():
        lines.append(f"{name:<20} {n:>8}")
    return "\n".join(lines)


class Command(LabelingCommand):
    help = """Add a dataset to a project: a local FILE (a zip of image folders, <class>/*.jpg or
    <split>/<class>/*.jpg, or the official cifar-10-python.tar.gz) or --key, a path in the
    configured storage. By default the import is queued for an RQ worker (start one with
    `manage.py rqworker default`) and the command prints the dataset and job ids; with --wait it
    runs here, with a progress bar, and prints the per-class counts and the skipped files."""

    def add_arguments(self, parser):
        add_upload_arguments(parser, "file", "Local zip or CIFAR-10 archive", what="Dataset",
                             wait_help="Import here with a progress bar (no worker)")  # fmt: skip
        parser.add_argument("--split", choices=["all", "train", "test"], default="all")

    def handle(self, *args, **opts):
        project = get_member_project(opts["user"], opts["project"])
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
            run_job_here(record, f"importing {dataset.name}", self.stderr)
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

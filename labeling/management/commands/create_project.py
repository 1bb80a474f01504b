"""manage.py create_project: a new project with its classes, for pipelines and first set-ups."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from labeling.forms import ProjectForm, parse_class_option
from labeling.management.command_support import get_user
from labeling.models import Project


def form_errors(form) -> str:
    lines = []
    for field, errors in form.errors.items():
        text = " ".join(str(e) for e in errors)
        lines.append(text if field == "__all__" else f"{field.replace('_', ' ')}: {text}")
    return "\n".join(lines)


class Command(BaseCommand):
    help = (
        "Create a project and make --user its member. Classes are given as "
        "--class NAME[:#RRGGBB[:SOURCE,SOURCE...]], e.g. --class plane:#1f77b4:airplane "
        "--class ship::ship; without --class the demo's car/boat classes are used. Every "
        "source class not named becomes the negative class."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="Project name (unique)")
        parser.add_argument("--user", required=True, help="Username of the owner (a member)")
        parser.add_argument(
            "--class",
            dest="classes",
            action="append",
            default=[],
            metavar="NAME[:#RRGGBB[:SOURCES]]",
            help="A positive class; repeat for several. SOURCES: comma-separated dataset "
            "class (folder) names that become this class.",
        )
        parser.add_argument("--negative", default="negative", help="Negative class name")
        parser.add_argument("--description", default="")
        parser.add_argument("--window", type=int, default=32, help="Window size in pixels")
        parser.add_argument(
            "--object-size", type=int, default=None,
            help="The objects' typical size on the scenes in pixels (default: the window size)",
        )  # fmt: skip
        parser.add_argument("--train-step", type=int, default=8, help="Training step (px)")
        parser.add_argument("--score-step", type=int, default=16, help="Scoring step (px)")
        parser.add_argument("--threshold", type=float, default=0.9, help="Detection threshold")
        parser.add_argument("--engine", choices=[e for e, _ in Project.ENGINES], default="torch")
        parser.add_argument(
            "--from-scratch", action="store_true",
            help="First model from random weights instead of the shipped starting model",
        )  # fmt: skip
        parser.add_argument("--json", action="store_true", help="Print the project as JSON")

    def handle(self, *args, **opts):
        user = get_user(opts["user"])
        classes = [parse_class_option(spec) for spec in opts["classes"]] or ProjectForm.preset()
        form = ProjectForm(
            {
                "name": opts["name"],
                "description": opts["description"],
                "negative_class": opts["negative"],
                "window_size": opts["window"],
                "object_size": opts["object_size"],
                "train_step": opts["train_step"],
                "score_step": opts["score_step"],
                "threshold": opts["threshold"],
                "engine": opts["engine"],
                "start_from_scratch": opts["from_scratch"],
            },
            classes=classes,
        )
        if not form.is_valid():
            raise CommandError(f"The project was not created:\n{form_errors(form)}")
        project = form.save(user=user)
        if opts["json"]:
            from labeling.views.data import project_json

            self.stdout.write(json.dumps(project_json(project)))
            return
        mapping = "; ".join(
            f"{c['name']} ({c['color']}) <- {', '.join(c['sources']) or '(no source)'}"
            for c in project.classes
        )
        self.stdout.write(
            self.style.SUCCESS(f"Created project #{project.pk} {project.name!r} for {user}")
        )
        self.stdout.write(f"classes: {mapping}; everything else -> {project.negative_class}")
        self.stdout.write(
            f"next: manage.py add_dataset {project.pk} DATASET.zip --user {user.username}"
        )

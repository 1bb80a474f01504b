"""manage.py build_canvases <project>: scatter the project's ready datasets on training canvases
(an RQ job on the `default` queue; the bar follows its progress)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from labeling.management.commands.demo import wait_job
from labeling.management.commands.simulate_review import get_project
from labeling.management.commands.train import add_worker_options, workers_for


class Command(BaseCommand):
    help = "Build the project's training canvases (kept if they exist; --rebuild to redo)."

    def add_arguments(self, parser):
        parser.add_argument("project", help="Project name or id")
        parser.add_argument("--rebuild", action="store_true", help="Rebuild the originals")
        parser.add_argument("--canvas-size", type=int, default=1024)
        parser.add_argument("--canvases-per-class", type=int, default=None)
        parser.add_argument("--seed", type=int, default=0)
        add_worker_options(parser)

    def handle(self, *args, **opts):
        from labeling.jobs import enqueue
        from labeling.models import TrainingCanvas

        project = get_project(opts["project"])
        params = {"canvas_size": opts["canvas_size"], "seed": opts["seed"],
                  "rebuild": opts["rebuild"]}  # fmt: skip
        if opts["canvases_per_class"]:
            params["canvases_per_class"] = opts["canvases_per_class"]
        with workers_for(["default"], opts, self.stdout):
            record = enqueue("build_canvases", "workers.loop_jobs.build_canvases",
                             project=project, project_id=project.pk, **params)  # fmt: skip
            if opts["no_wait"]:
                self.stdout.write(f"queued job {record.pk}")
                return
            wait_job(record, "build canvases", timeout=opts["step_timeout"])
        rows = TrainingCanvas.objects.filter(project=project)
        self.stdout.write(
            f"{rows.filter(kind='original').count()} original and "
            f"{rows.filter(kind='correction').count()} correction canvases"
        )

"""manage.py build_canvases <project>: scatter the project's ready datasets on training canvases
(an RQ job on the `default` queue; the bar follows its progress)."""

from __future__ import annotations

from labeling.management.command_support import ProjectJobCommand, enqueue_canvases, get_project


class Command(ProjectJobCommand):
    help = "Build the project's training canvases (kept if they exist; --rebuild to redo)."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--rebuild", action="store_true", help="Rebuild the originals")
        parser.add_argument("--canvas-size", type=int, default=1024)
        parser.add_argument("--canvases-per-class", type=int, default=None)
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, **opts):
        from labeling.models import TrainingCanvas

        project = get_project(opts["project"])
        with self.workers(opts):
            record = enqueue_canvases(project, opts, seed=opts["seed"], rebuild=opts["rebuild"])
            if opts["no_wait"]:
                self.stdout.write(f"queued job {record.pk}")
                return
            self.follow(record, "build canvases")
        rows = TrainingCanvas.objects.filter(project=project)
        self.stdout.write(
            f"{rows.filter(kind='original').count()} original and "
            f"{rows.filter(kind='correction').count()} correction canvases"
        )

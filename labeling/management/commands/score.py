"""manage.py score <project>: score the project's scenes (or --scene) with the current model (or
--version N) on Spark, through the `score` queue; prints the metrics when there is ground truth."""

from __future__ import annotations

from django.core.management.base import CommandError

from labeling.jobs.follow import score_records
from labeling.management.command_support import ProjectJobCommand, get_project, run_metrics_line


class Command(ProjectJobCommand):
    help = "Score scenes with a model version on Spark (queue `score`)."
    queues = ("score",)

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--scene", help="Scene name or id (default: every scene)")
        parser.add_argument(
            "--model-version", type=int, help="Model version number (default: current)"
        )

    def handle(self, *args, **opts):
        from labeling.loop.cycle import enqueue_scoring
        from labeling.models import ModelVersion, Scene

        project = get_project(opts["project"])
        if opts["model_version"]:
            version = ModelVersion.objects.filter(
                project=project, number=opts["model_version"]
            ).first()
        else:
            version = project.current_model()
        if version is None or not version.model_key:
            raise CommandError("No such model version with a model file: train one first.")
        scenes = Scene.objects.filter(project=project).exclude(pixels_key="")
        if opts["scene"]:
            ref = opts["scene"]
            scenes = scenes.filter(pk=int(ref)) if ref.isdigit() else scenes.filter(name=ref)
        scenes = list(scenes)
        if not scenes:
            raise CommandError("No scene with pixels to score: import one first.")
        with self.workers(opts):
            runs = enqueue_scoring(version, scenes)
            if opts["no_wait"]:
                self.stdout.write(f"queued {len(runs)} scoring run(s)")
                return
            ids = {r.pk for r in runs}
            for run, record in score_records(version, scenes):
                if run.pk in ids:
                    self.follow(record, f"score {run.scene.name} with v{version.number}")
                    run.refresh_from_db()
                    self.stdout.write(f"{run.scene.name}: {run_metrics_line(run)}")

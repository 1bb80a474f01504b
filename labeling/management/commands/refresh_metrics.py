"""manage.py refresh_metrics <project> [--run N]: recompute the stored metrics of the project's
finished scoring runs from their probability grids and merged detections, without rescoring:
adds COCO AP and the thresholds to runs stored before they existed, and measures window truth
over every tile. The detections themselves are left as they are."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from labeling.management.command_support import get_project


class Command(BaseCommand):
    help = "Recompute the metrics (object P/R/F1, COCO AP, window) of finished scoring runs."

    def add_arguments(self, parser):
        parser.add_argument("project", help="Project name or id")
        parser.add_argument("--run", type=int, help="Only this scoring run id")

    def handle(self, *args, **opts):
        from labeling.loop.cycle import f1_summary
        from labeling.models import ScoringRun
        from labeling.scoring.results import refresh_metrics

        project = get_project(opts["project"])
        runs = ScoringRun.objects.filter(scene__project=project, status="done").exclude(grid_key="")
        if opts["run"]:
            runs = runs.filter(pk=opts["run"])
            if not runs.exists():
                raise CommandError(f"No finished scoring run {opts['run']} in {project.name!r}.")
        for run in runs.select_related("scene", "model_version").order_by("pk"):
            summary = f1_summary(refresh_metrics(run), project.negative_class)
            if not summary:
                self.stdout.write(f"run {run.pk} ({run.scene.name}): no ground truth, counts only")
                continue
            obj, coco = summary["object"], summary.get("coco") or {}
            self.stdout.write(
                f"run {run.pk} ({run.scene.name}, v{run.model_version.number}): object P "
                f"{obj['precision']:.3f} R {obj['recall']:.3f} F1 {obj['f1']:.3f}; COCO AP@0.5 "
                f"{coco.get('ap50', 0):.3f} AP@[.5:.95] {coco.get('ap', 0):.3f}"
            )

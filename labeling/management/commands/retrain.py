"""manage.py retrain <project>: one retrain cycle (the dashboard's Retrain button): feed the
pending corrections, fine-tune from the current model, export, rescore every scene, promote."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from labeling.management.commands.simulate_review import get_project
from labeling.management.commands.train import add_worker_options, start_and_follow


class Command(BaseCommand):
    help = "Run one retrain cycle (fine-tune on the pending corrections) and follow it."

    def add_arguments(self, parser):
        parser.add_argument("project", help="Project name or id")
        parser.add_argument("--profile", default="quick", help="tiny, quick or full")
        parser.add_argument("--steps", type=int, default=None, help="Override the step count")
        add_worker_options(parser)

    def handle(self, *args, **opts):
        from labeling.cycle import pending_annotations

        project = get_project(opts["project"])
        self.stdout.write(f"{len(pending_annotations(project))} pending annotation(s)")
        start_and_follow(self, project, opts, from_scratch=False)

"""manage.py train <project>: train a new first model version on the project's canvases (from the
shipped starting model, or with --from-scratch from random weights), then export and score it
like any cycle (the version becomes current only when all of it worked)."""

from __future__ import annotations

from labeling.management.command_support import CycleCommand


class Command(CycleCommand):
    help = "Train a new first model version (then export, score, promote)."

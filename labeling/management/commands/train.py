"""manage.py train <project>: train a model version from scratch on the project's canvases, then
export and score it like any cycle (the version becomes current only when all of it worked)."""

from __future__ import annotations

from labeling.management.command_support import CycleCommand


class Command(CycleCommand):
    help = "Train a new model version from scratch (then export, score, promote)."

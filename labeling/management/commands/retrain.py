"""manage.py retrain <project>: one retrain cycle (the dashboard's Retrain button): feed the
pending corrections, fine-tune from the current model, export, rescore every scene, promote."""

from __future__ import annotations

from labeling.management.command_support import CycleCommand


class Command(CycleCommand):
    help = "Run one retrain cycle (fine-tune on the pending corrections) and follow it."
    new_model = False

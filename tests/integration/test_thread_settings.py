"""The OpenMP wait policy must be in the environment when torch is first imported (its OpenMP
runtime reads it once, at start), whatever the entry point: a finder on sys.meta_path records
the variable at the moment of the first ``import torch`` in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import importlib, os, sys
seen = []
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("OMP_WAIT_POLICY"))
        return None
sys.meta_path.insert(0, Spy())
if {django}:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "collage_app.settings")
    import django
    django.setup()
importlib.import_module({module!r})
import torch  # whatever the entry point imported, torch is loaded by now
print("policy at first torch import:", seen[0] if seen else None)
"""

ENTRY_POINTS = [
    ("mlcore.cli", False),  # python -m mlcore
    ("mlcore.train.training", False),
    ("mlcore.train.distributed", False),  # torchrun -m mlcore.train.distributed
    ("workers.loop_jobs", True),  # the RQ train worker
    ("workers.rq_worker", True),  # manage.py rqworker
    ("labeling.management.commands.demo", True),  # manage.py demo
    ("labeling.management.commands.simulate_review", True),
    ("bench.bench_mlcore", False),
    ("bench.bench_loop", False),
    ("bench.bench_review", False),
    ("bench.bench_engines", False),
]


@pytest.mark.parametrize(("module", "django"), ENTRY_POINTS)
def test_wait_policy_is_set_before_torch_starts(module, django):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "bench")])
    code = PROBE.format(module=module, django=django)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "policy at first torch import: PASSIVE" in out.stdout, out.stdout + out.stderr[-2000:]


def test_an_explicit_setting_wins():
    env = dict(os.environ, OMP_WAIT_POLICY="ACTIVE", PYTHONPATH=str(ROOT))
    code = "import mlcore.train.training, os; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.stdout.strip() == "ACTIVE", out.stderr

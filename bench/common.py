"""Shared helpers of the benchmarks: result rows, the machine, subprocess runs, medians.

Every bench module exposes ``run(quick: bool) -> list[dict]``; each dict is one figure made with
:func:`row`: ``name, value, unit, baseline, baseline_value, ratio, target`` (+ ``met``, ``note``).
``ratio`` is always ``value / baseline_value``; ``target`` says in words which ratio or value is
wanted and ``met`` whether this run reached it (None: no target, or nothing to compare).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mlcore  # noqa: E402, F401  (sets the OpenMP wait policy before any benchmark imports torch)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
PYTHON = REPO / ".venv" / "bin" / "python"
MXNET_PYTHON = REPO / ".venv-mxnet" / "bin" / "python"
ROW_KEYS = ("name", "value", "unit", "baseline", "baseline_value", "ratio", "target")

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def row(
    name: str,
    value: float | None,
    unit: str,
    baseline: str,
    baseline_value: float | None,
    target: str = "",
    met: bool | None = None,
    note: str = "",
) -> dict:
    """One figure of the table; ``ratio = value / baseline_value`` when both are known."""
    ratio = None
    if value is not None and baseline_value:
        ratio = float(value) / float(baseline_value)
    return {
        "name": name,
        "value": None if value is None else float(value),
        "unit": unit,
        "baseline": baseline,
        "baseline_value": None if baseline_value is None else float(baseline_value),
        "ratio": ratio,
        "target": target,
        "met": met,
        "note": note,
    }


def error_row(name: str, error: str, target: str = "") -> dict:
    """A figure that could not be measured (the error is shown in the table, never hidden)."""
    out = row(name, None, "", "", None, target, None, f"ERROR: {error}")
    out["error"] = error
    return out


def skipped_row(name: str, reason: str, target: str = "") -> dict:
    """A figure left out on purpose, with the one-line reason (an optional engine not installed)."""
    out = row(name, None, "", "", None, target, None, f"skipped: {reason}")
    out["skipped"] = reason
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (None, None, None)
    info = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "load_average_1m": load[0],
        "host": platform.node(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def median_rate(fn: Callable[[], int], repeats: int = 3, min_seconds: float = 0.0) -> float:
    """Median items/s of ``repeats`` calls of ``fn`` (which returns how many items it did)."""
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = fn()
        while time.perf_counter() - started < min_seconds:
            done += fn()
        rates.append(done / (time.perf_counter() - started))
    return statistics.median(rates)


def run_json(cmd: list[str], timeout: float, env: dict | None = None) -> dict:
    """Run a child benchmark; its last stdout line starting with '{' is the result.

    Raises RuntimeError with the child's last stderr lines when it fails."""
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        env=full_env,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
        raise RuntimeError(f"{Path(str(cmd[1])).name} exited {proc.returncode}: {tail}")
    return json.loads(lines[-1])


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) or (isinstance(value, float) and abs(value) >= 1000):
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"

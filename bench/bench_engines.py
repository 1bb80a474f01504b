"""Training speed of the two engines side by side: PyTorch (main venv) vs MXNet (.venv-mxnet).

Both train the same model (ResNet-20, width 16, on uint8 32x32 windows) with batch 128, the same
options and the same ``WindowSampler`` over the same synthetic canvases, on the CPU. Each engine
runs in its own virtualenv as a subprocess of this script (``--engine NAME`` is what each child
runs), one after the other so they do not share the cores; the table gives images/s of each and
the ratio torch/mxnet. Results go to bench/results/bench_engines-<time>.json.

    .venv/bin/python bench/bench_engines.py                 # both engines, one table
    .venv-mxnet/bin/python bench/bench_engines.py --engine mxnet --steps 20   # one engine, JSON

The first step of each run (graph building, allocator warm-up) is excluded from the rate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PYTHONS = {
    "torch": REPO / ".venv" / "bin" / "python",
    "mxnet": REPO / ".venv-mxnet" / "bin" / "python",
}
CLASSES = ["car", "boat", "negative"]


def synthetic_canvases(size: int = 512, per_class: int = 2, seed: int = 0):
    """Canvases with class-tinted noise: content does not change speed, only shapes do."""
    from mlcore.canvases import Canvas, CanvasSet

    rng = np.random.default_rng(seed)
    canvases = []
    for k, name in enumerate(CLASSES):
        for _ in range(per_class):
            array = rng.integers(0, 120, (size, size, 3)).astype(np.uint8)
            array[..., k] += 100
            canvases.append(Canvas(name, array))
    return CanvasSet(CLASSES, canvases)


def run_one(engine_name: str, steps: int, batch_size: int, depth: int, width: int) -> dict:
    """Train ``steps`` steps with one engine in this process; returns the measurement."""
    from mlcore.engines import get_engine

    engine = get_engine(engine_name)
    config = {
        "depth": depth,
        "width": width,
        "batch_size": batch_size,
        "steps": steps,
        "device": "cpu",
        "val_windows": 0,
        "log_every": steps,
    }
    started = time.perf_counter()
    result = engine.train(synthetic_canvases(), CLASSES, config)
    wall = time.perf_counter() - started
    return {
        "engine": engine_name,
        "framework_version": _framework_version(engine_name),
        "python": platform.python_version(),
        "images_per_s": round(float(result.windows_per_s), 1),
        "steps": steps,
        "batch_size": batch_size,
        "depth": depth,
        "width": width,
        "wall_s": round(wall, 2),
        "final_loss": round(float(result.history[-1]["loss"]), 4),
    }


def _framework_version(engine_name: str) -> str:
    if engine_name == "mxnet":
        import mxnet

        return mxnet.__version__
    import torch

    return f"{torch.__version__} ({torch.get_num_threads()} threads)"


def run_both(args) -> dict:
    rows = {}
    for name in ("torch", "mxnet"):
        python = PYTHONS[name]
        if not python.exists():
            hint = " (make setup-mxnet)" if name == "mxnet" else ""
            rows[name] = {"engine": name, "error": f"{python} does not exist{hint}"}
            continue
        cmd = [str(python), __file__, "--engine", name, "--steps", str(args.steps)]
        cmd += ["--batch-size", str(args.batch_size), "--depth", str(args.depth)]
        cmd += ["--width", str(args.width)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=args.timeout)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            rows[name] = {"engine": name, "error": f"exit {proc.returncode}: {' | '.join(tail)}"}
        else:
            rows[name] = json.loads(lines[-1])
    torch_rate = rows["torch"].get("images_per_s")
    mxnet_rate = rows["mxnet"].get("images_per_s")
    ratio = round(torch_rate / mxnet_rate, 2) if torch_rate and mxnet_rate else None
    return {
        "benchmark": "bench_engines",
        "what": f"CPU training, ResNet-{args.depth} width {args.width}, batch {args.batch_size}",
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "engines": rows,
        "ratio_torch_over_mxnet": ratio,
    }


def print_table(report: dict) -> None:
    print(f"{report['what']} on {report['cpu_count']} CPU(s)")
    print(f"{'engine':8} {'version':28} {'images/s':>10} {'wall s':>8}")
    for name, row in report["engines"].items():
        if "error" in row:
            print(f"{name:8} {'-':28} {'-':>10} {'-':>8}  {row['error']}")
        else:
            version = row["framework_version"]
            print(f"{name:8} {version:28} {row['images_per_s']:>10.1f} {row['wall_s']:>8.1f}")
    print(f"ratio torch/mxnet: {report['ratio_torch_over_mxnet']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=sorted(PYTHONS), help="run one engine here (child)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per engine")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    if args.engine:
        print(json.dumps(run_one(args.engine, args.steps, args.batch_size, args.depth, args.width)))
        return 0
    report = run_both(args)
    print_table(report)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench_engines-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")
    return 0 if all("error" not in r for r in report["engines"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

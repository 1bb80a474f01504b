"""Training speed of the two engines side by side: PyTorch (main venv) vs MXNet (.venv-mxnet).

Both train the same model (ResNet-20, width 16, on uint8 32x32 windows) with batch 128, the same
options and the same ``WindowSampler`` over the same synthetic canvases, on the CPU. Each engine
runs in its own virtualenv as a subprocess of this script (``--engine NAME`` is what each child
runs), one after the other so they do not share the cores; the table gives images/s of each and
the ratio torch/mxnet. Results go to bench/results/bench_engines-<time>.json.

    .venv/bin/python bench/bench_engines.py                 # both engines, one table
    .venv-mxnet/bin/python bench/bench_engines.py --engine mxnet --steps 20   # one engine, JSON

The first step of each run (graph building, allocator warm-up) is excluded from the rate; a
torch.compile run excludes its first three (compilation), and the compile time is reported. The
PyTorch side runs as the engine runs a long training (``compile`` on: an epoch of the published
size is 2.3 million windows, where the one-minute compile is repaid many times); ``--eager``
measures it without. ``run(quick)`` is what bench/run_all.py calls: interleaved rounds, best of
each engine (the machine is shared; both sides get the same treatment).
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
import mlcore  # noqa: E402, F401  (sets the OpenMP wait policy before torch is imported)

PYTHONS = {
    "torch": REPO / ".venv" / "bin" / "python",
    "mxnet": REPO / ".venv-mxnet" / "bin" / "python",
}
CLASSES = ["car", "boat", "negative"]


def synthetic_canvases(size: int = 512, per_class: int = 2, seed: int = 0):
    """Canvases with class-tinted noise: content does not change speed, only shapes do."""
    from mlcore.data.canvases import Canvas, CanvasSet

    rng = np.random.default_rng(seed)
    canvases = []
    for k, name in enumerate(CLASSES):
        for _ in range(per_class):
            array = rng.integers(0, 120, (size, size, 3)).astype(np.uint8)
            array[..., k] += 100
            canvases.append(Canvas(name, array))
    return CanvasSet(CLASSES, canvases)


def run_one(
    engine_name: str,
    steps: int,
    batch_size: int,
    depth: int,
    width: int,
    compile_: bool = False,
    threads: int | None = None,
) -> dict:
    """Train ``steps`` steps with one engine in this process; returns the measurement.
    (MXNet's thread count comes from OMP_NUM_THREADS, which the parent sets for the child.)"""
    from mlcore.engines import get_engine

    engine = get_engine(engine_name)
    extra = {"compile": bool(compile_), "threads": threads} if engine_name == "torch" else {}
    config = {
        **extra,
        "depth": depth,
        "width": width,
        "batch_size": batch_size,
        "steps": steps,
        "device": "cpu",
        "val_windows": 0,
        "log_every": steps,
    }
    canvases = synthetic_canvases()
    started = time.perf_counter()
    result = engine.train(canvases, CLASSES, config)
    wall = time.perf_counter() - started
    warm = 3 if compile_ and engine_name == "torch" else 1
    steady = (steps - warm) * batch_size / result.windows_per_s if result.windows_per_s else 0.0
    return {
        "engine": engine_name,
        "threads": threads or os.environ.get("OMP_NUM_THREADS") or os.cpu_count(),
        "compiled": bool(extra.get("compile")),
        "warmup_s": round(wall - steady, 1),
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


def run_child(name: str, args, compile_: bool = False, threads: int | None = None) -> dict:
    """One engine in its own virtualenv; the measurement, or {"error": ...}. ``threads`` sets
    OMP_NUM_THREADS (and torch's intra-op threads) of the child."""
    python = PYTHONS[name]
    if not python.exists():
        return {"engine": name, "missing": f"{python.relative_to(REPO)} is not installed "
                f"(make setup-{name} installs it)"}  # fmt: skip
    cmd = [str(python), __file__, "--engine", name, "--steps", str(args.steps)]
    cmd += ["--batch-size", str(args.batch_size), "--depth", str(args.depth)]
    cmd += ["--width", str(args.width)] + (["--compile"] if compile_ else [])
    env = dict(os.environ)
    if threads:
        cmd += ["--threads", str(threads)]
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=REPO, timeout=args.timeout, env=env
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"engine": name, "error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    return json.loads(lines[-1])


def best(runs: list[dict]) -> dict:
    """The fastest successful run (least disturbed by other work), else the last error."""
    ok = [r for r in runs if "error" not in r and "missing" not in r]
    if not ok:
        return runs[-1]
    top = dict(max(ok, key=lambda r: r["images_per_s"]))
    top["all_images_per_s"] = [f"{r['images_per_s']} ({r.get('threads')}t)" for r in ok]
    return top


def run_both(args) -> dict:
    """Interleaved rounds; in each, every engine at every thread count of ``args.threads``
    (None: the framework's default). The best run of each engine is its figure: each engine
    gets its best thread setting on this machine."""
    runs: dict[str, list[dict]] = {"torch": [], "mxnet": []}
    if args.eager:
        runs["torch eager"] = []
    for round_ in range(args.rounds):
        for threads in args.threads or [None]:
            runs["torch"].append(run_child("torch", args, not args.no_compile, threads))
            runs["mxnet"].append(run_child("mxnet", args, threads=threads))
            if args.eager and round_ == 0:
                runs["torch eager"].append(run_child("torch", args, threads=threads))
    rows = {name: best(r) for name, r in runs.items()}
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
    print(f"{'engine':12} {'version':28} {'images/s':>10} {'wall s':>8} {'warm-up s':>9}")
    for name, row in report["engines"].items():
        if "images_per_s" not in row:
            reason = row.get("error") or f"skipped: {row['missing']}"
            print(f"{name:12} {'-':28} {'-':>10} {'-':>8}  {reason}")
        else:
            version = row["framework_version"] + (" compiled" if row.get("compiled") else "")
            print(
                f"{name:12} {version:28} {row['images_per_s']:>10.1f} {row['wall_s']:>8.1f} "
                f"{row.get('warmup_s', 0):>9.1f}"
            )
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
    parser.add_argument("--compile", action="store_true", help="(child) torch.compile the model")
    parser.add_argument("--no-compile", action="store_true", help="PyTorch eager only")
    parser.add_argument("--eager", action="store_true", help="also PyTorch eager, for reference")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds, best of each")
    parser.add_argument(
        "--threads", type=int, nargs="*", help="thread counts to try (child: the one to use)"
    )
    args = parser.parse_args(argv)
    if args.engine:
        threads = args.threads[0] if args.threads else None
        one = run_one(
            args.engine, args.steps, args.batch_size, args.depth, args.width, args.compile, threads
        )
        print(json.dumps(one))
        return 0
    report = run_both(args)
    print_table(report)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench_engines-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")
    return 0 if all("error" not in r for r in report["engines"].values()) else 1


PUBLISHED_WINDOWS = 2_300_000  # one epoch of the published training set
PUBLISHED_EPOCH_MIN = 27.0  # minutes per epoch on one Tesla K80, batch 128


def run(quick: bool = False) -> list[dict]:
    """Rows for bench/run_all.py: PyTorch (compiled) vs MXNet, eager for reference, epoch time."""
    from bench.common import error_row, row, skipped_row

    args = argparse.Namespace(
        steps=12 if quick else 24, batch_size=128, depth=20, width=16, timeout=900,
        rounds=1 if quick else 2, eager=True, no_compile=False,
        threads=[1] if quick else [1, os.cpu_count() or 1],
    )  # fmt: skip
    report = run_both(args)
    engines = report["engines"]
    what = (
        f"ResNet-20 width 16, batch 128, {args.steps} steps, best of {args.rounds} round(s) x "
        f"threads {args.threads}"
    )
    out = []
    torch_row, mx_row = engines["torch"], engines["mxnet"]
    if "missing" in mx_row:
        name = "CPU training, PyTorch vs MXNet 1.9.1"
        out.append(skipped_row(name, mx_row["missing"], ">= 2.5x"))
    elif "error" in torch_row or "error" in mx_row:
        bad = torch_row if "error" in torch_row else mx_row
        out.append(error_row("CPU training, PyTorch vs MXNet 1.9.1", bad["error"], ">= 2.5x"))
    else:
        t, m = torch_row["images_per_s"], mx_row["images_per_s"]
        out.append(
            row(
                "CPU training, PyTorch (compiled) vs MXNet 1.9.1",
                t,
                "images/s",
                f"MXNet {mx_row['framework_version']} hybridized, same model/batch/sampler",
                m,
                ">= 2.5x",
                t / m >= 2.5,
                f"{what}; runs torch {torch_row['all_images_per_s']}, mxnet "
                f"{mx_row['all_images_per_s']}; compile warm-up {torch_row['warmup_s']} s",
            )
        )
    eager = engines.get("torch eager", {})
    if "images_per_s" in eager and "images_per_s" in mx_row:
        out.append(
            row(
                "CPU training, PyTorch eager vs MXNet 1.9.1 (reference)",
                eager["images_per_s"],
                "images/s",
                "MXNet (above)",
                mx_row["images_per_s"],
                "",
                None,
                "without torch.compile (what short runs, e.g. fine-tunes, use)",
            )
        )
    if "error" not in torch_row:
        minutes = PUBLISHED_WINDOWS / torch_row["images_per_s"] / 60
        out.append(
            row(
                "CPU training epoch (2.3M windows) vs published",
                minutes,
                "min/epoch",
                "published: 27 min/epoch on one Tesla K80 (not measured here)",
                PUBLISHED_EPOCH_MIN,
                "",
                None,
                "this 2-core CPU vs a GPU; the GPU target (< 50 s/epoch) is in --gpu",
            )
        )
    return out


if __name__ == "__main__":
    sys.exit(main())

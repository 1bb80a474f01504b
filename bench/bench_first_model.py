"""The first model a reviewer meets, over several seeds: `python -m mlcore demo` per seed (from the
shipped starting model by default, or --from-scratch), then the figures side by side with their
mean and spread. The seeds share one copy of the demo's inputs (train split, canvases, both
collages), so only training, calibration, scoring and metrics run again.

    .venv/bin/python bench/bench_first_model.py --seeds 0 1 2 --json docs/first_model.json
    .venv/bin/python bench/bench_first_model.py --seeds 0 --from-scratch
    .venv/bin/python bench/bench_first_model.py --seeds 0 --set lr=0.1 --name lr0.1

Choose variants on the calibration-scene figure only; the collages are what is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_INPUTS = ("train.npz", "canvases", "collage-mona_lisa.png", "collage-mona_lisa.json",
                 "collage-rocket.png", "collage-rocket.json")  # fmt: skip


def figures(metrics: dict) -> dict:
    """The row of one seed: what docs/model-quality.md reports."""
    calibration = (metrics.get("calibration") or {}).get("f1", {})
    aligned = metrics["aligned"]
    return {
        "mona_lisa_f1": metrics["object"]["overall"]["f1"],
        "rocket_f1": metrics["heldout"]["object"]["overall"]["f1"],
        "mona_lisa_ap50": metrics["coco"]["ap50"],
        "mona_lisa_ap": metrics["coco"]["ap"],
        "aligned_balanced_accuracy": aligned["balanced_accuracy"],
        "trucks_called_car": aligned["called_as"].get("truck", {}).get("car"),
        "airplanes_called_boat": aligned["called_as"].get("airplane", {}).get("boat"),
        "calibration_f1_car": calibration.get("car"),
        "calibration_f1_boat": calibration.get("boat"),
        "thresholds": metrics["thresholds"],
        "train_seconds": metrics["train_seconds"],
        "started_from": (metrics.get("started_from") or {}).get("name"),
    }


def spread(rows: list[dict]) -> dict:
    out = {}
    for key, value in rows[0].items():
        if isinstance(value, (int, float)) and all(isinstance(r[key], (int, float)) for r in rows):
            values = [r[key] for r in rows]
            out[key] = {"mean": statistics.fmean(values), "min": min(values), "max": max(values),
                        "sd": statistics.stdev(values) if len(values) > 1 else 0.0}  # fmt: skip
    return out


def finished(out: Path, command: list[str]) -> bool:
    """Whether ``out`` holds a finished run of exactly ``command`` (what --resume keeps)."""
    ran = out / "bench_command.json"
    if not ((out / "metrics.json").is_file() and ran.is_file()):
        return False
    return json.loads(ran.read_text()) == command


def run_seed(out: Path, seed: int, first: Path | None, args) -> dict:
    command = [sys.executable, "-m", "mlcore", "demo", "--out", str(out), "--seed", str(seed)]
    command += ["--from-scratch"] if args.from_scratch else []
    command += ["--profile", args.profile]
    for item in args.set or []:
        command += ["--set", item]
    ran = out / "bench_command.json"
    if args.resume and finished(out, command[1:]):
        print(f"[bench_first_model] seed {seed}: kept from {out} (--resume)", flush=True)
        return json.loads((out / "metrics.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    if first is not None:  # share the inputs of the first seed's run
        for name in SHARED_INPUTS:
            link = out / name
            if not link.exists() and (first / name).exists():
                link.symlink_to((first / name).resolve())
    print(f"[bench_first_model {time.strftime('%H:%M:%S')}] {' '.join(command[1:])}", flush=True)
    ran.unlink(missing_ok=True)
    subprocess.run(command, cwd=REPO, check=True)
    ran.write_text(json.dumps(command[1:]))  # what --resume compares: the same run, finished
    return json.loads((out / "metrics.json").read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--from-scratch", action="store_true")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE")
    parser.add_argument("--name", help="variant name (default: start or scratch)")
    parser.add_argument("--out", default="var/exp/first-model")
    parser.add_argument("--inputs", help="a demo folder whose inputs (canvases, collages) to share")
    parser.add_argument("--json", help="write the rows and their spread here")
    parser.add_argument("--resume", action="store_true",
                        help="keep a seed whose run of the same command finished")  # fmt: skip
    args = parser.parse_args(argv)
    name = args.name or ("scratch" if args.from_scratch else "start")
    root = REPO / args.out
    rows, first = [], (REPO / args.inputs) if args.inputs else None
    for seed in args.seeds:
        out = root / name / f"seed{seed}"
        metrics = run_seed(out, seed, first or _any_done(root), args)
        first = first or out
        rows.append({"seed": seed} | figures(metrics))
    measured = [{k: v for k, v in r.items() if k != "seed"} for r in rows]
    result = {"variant": name, "from_scratch": args.from_scratch, "profile": args.profile,
              "set": args.set or [], "seeds": args.seeds, "rows": rows,
              "spread": spread(measured)}  # fmt: skip
    keys = ("mona_lisa_f1", "rocket_f1", "mona_lisa_ap50", "aligned_balanced_accuracy",
            "calibration_f1_car", "calibration_f1_boat", "train_seconds")  # fmt: skip
    print("\n" + " | ".join(["seed", *keys]))
    for row in rows:
        print(" | ".join([str(row["seed"])] + [_fmt(row[k]) for k in keys]))
    s = result["spread"]
    print(" | ".join(["mean"] + [_fmt(s[k]["mean"]) if k in s else "-" for k in keys]))
    print(" | ".join(["range"] + [f"{_fmt(s[k]['min'])}-{_fmt(s[k]['max'])}" if k in s else "-"
                                  for k in keys]))  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _any_done(root: Path) -> Path | None:
    """A finished run of any variant whose inputs a new variant can share."""
    for metrics in sorted(root.glob("*/seed*/metrics.json")):
        return metrics.parent
    return None


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    sys.exit(main())

"""The measured loop: simulated review cycles, every strategy over several seeds, on the Mona Lisa
collage, with a held-out collage (rocket.jpg) that the loop never labels.

Built from the product's own pieces (mlcore, no web stack, so that N seeds x S strategies fit on
a 2-core machine): the first model, its canvases and its calibration scene come from
``python -m mlcore demo``; each cycle

1. asks the strategy (``mlcore.sampling.select_batch``) for ``--per-cycle`` windows of the
   current model's grid, skipping windows answered before;
2. answers them with the simulated reviewer: the class under each window's centre
   (``mlcore.metrics.window_truth`` on all ground-truth boxes: the truth the metrics use);
3. adds the reviewed windows to the canvases as exact samples (``CanvasSet.append(...,
   layout="exact")``, weight ``--weight``) and fine-tunes the previous model on all canvases
   (the ``quick`` profile's fine-tune settings; seed = the run's seed);
4. exports, calibrates the thresholds on the calibration scene (as the app's export does),
   rescores both collages and records object F1 at the calibrated thresholds.

Seed = the fine-tune seed and the strategy's random stream. The first model is shared by all runs.

    .venv/bin/python -m mlcore demo                      # the first model, once
    .venv/bin/python bench/bench_loop.py --seeds 5 --strategies random diverse_uncertainty \
        --json docs/loop_results.json --chart docs/loop_f1.png
    .venv/bin/python bench/bench_loop.py --chart-only --json docs/loop_results.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import mlcore  # noqa: E402, F401  (sets the OpenMP wait policy before torch is imported)

SCENES = {"mona_lisa": "collage-mona_lisa", "heldout": "collage-rocket"}
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}


def log(message: str) -> None:
    print(f"[bench_loop {time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_scene(demo: Path, stem: str):
    from PIL import Image

    from mlcore.collage import load_ground_truth

    image = np.asarray(Image.open(demo / f"{stem}.png").convert("RGB"))
    return image, load_ground_truth(demo / f"{stem}.json")


def score_and_measure(model_path: Path, scenes: dict) -> tuple[dict, dict]:
    """(grids, object metrics at the model's calibrated thresholds) for every scene."""
    from mlcore.evaluation import evaluate_grid
    from mlcore.scenes import ArrayScene
    from mlcore.scoring import OnnxScorer, score_scene

    scorer = OnnxScorer(model_path)
    grids, metrics = {}, {}
    for name, (image, truth) in scenes.items():
        grid = score_scene(scorer, ArrayScene(image), 16, batch_size=1024)
        grids[name] = grid
        result = evaluate_grid(grid, truth, thresholds=scorer.thresholds or 0.9, coco=False)
        metrics[name] = result["object"]["overall"]
    return grids, metrics


def oracle_answers(grid, truth, picks) -> list[str]:
    """The simulated reviewer: the class under each picked window's centre (the grid's truth,
    looked up per pick: ``window_truth`` wants sorted origins)."""
    from mlcore.metrics import window_truth

    label = window_truth(grid.ys, grid.xs, grid.window, truth, grid.classes, "negative")
    row = {int(y): i for i, y in enumerate(grid.ys)}
    col = {int(x): j for j, x in enumerate(grid.xs)}
    return [grid.classes[int(label[row[p.y], col[p.x]])] for p in picks]


def run_one(demo: Path, strategy: str, seed: int, cycles: int, per_cycle: int, weight: float,
            steps: int | None, scenes: dict, first: tuple) -> dict:  # fmt: skip
    """One strategy, one seed: ``cycles`` rounds of review, fine-tune, recalibrate, rescore."""
    from mlcore.calibration import calibrate_model_file
    from mlcore.canvases import CanvasSet
    from mlcore.export import export_onnx
    from mlcore.profiles import profile_config
    from mlcore.sampling import select_batch
    from mlcore.training import read_checkpoint, train

    grids, metrics = first
    cset = CanvasSet.load(demo / "canvases")
    cset.canvases = [c for c in cset.canvases if c.kind == "original"]
    state = read_checkpoint(demo / "model" / "checkpoint.pt")["state_dict"]
    config = profile_config("quick", finetune=True, seed=seed, steps=steps)
    config["log_every"] = 10**6
    curve = {name: [round(metrics[name]["f1"], 4)] for name in scenes}
    answered: set = set()
    mix = []
    image, truth = scenes["mona_lisa"]
    with tempfile.TemporaryDirectory() as tmp:
        for cycle in range(1, cycles + 1):
            started = time.perf_counter()
            picks = select_batch(grids["mona_lisa"], strategy, per_cycle, exclude=answered,
                                 seed=seed * 1000 + cycle)  # fmt: skip
            labels = oracle_answers(grids["mona_lisa"], truth, picks)
            answered |= {(p.y, p.x) for p in picks}
            mix.append({c: labels.count(c) for c in grids["mona_lisa"].classes})
            for label in sorted(set(labels)):
                chosen = [p for p, lab in zip(picks, labels) if lab == label]
                crops = np.stack([image[p.y : p.y + 32, p.x : p.x + 32] for p in chosen])
                ids = [f"s{seed}c{cycle}:{p.y},{p.x}" for p in chosen]
                cset.append(label, crops, ids, weight=weight, layout="exact")
            result = train(cset, cset.classes, config, init_state=state)
            state = {k: v.detach().clone() for k, v in result.model.state_dict().items()}
            model_path = Path(tmp) / f"model-{cycle}.onnx"
            export_onnx(result.model, model_path, cset.classes, 32)
            calibration = calibrate_model_file(model_path, cset)
            grids, metrics = score_and_measure(model_path, scenes)
            for name in scenes:
                curve[name].append(round(metrics[name]["f1"], 4))
            log(f"{strategy} seed {seed} cycle {cycle}: F1 "
                f"{ {n: curve[n][-1] for n in scenes} } thresholds {calibration['thresholds']} "
                f"answers {mix[-1]} ({time.perf_counter() - started:.0f}s)")  # fmt: skip
    return {"curve": curve, "answers": mix}


def summarise(runs: list[dict], scene: str) -> dict:
    curves = np.array([r["curve"][scene] for r in runs], dtype=np.float64)
    n = len(curves)
    mean = curves.mean(0)
    if n > 1:
        half = T95.get(n - 1, 1.96) * curves.std(0, ddof=1) / math.sqrt(n)
    else:
        half = np.full_like(mean, np.nan)
    return {
        "object_f1_mean": [round(float(v), 4) for v in mean],
        "object_f1_ci95": [
            [round(float(m - h), 4), round(float(m + h), 4)] for m, h in zip(mean, half)
        ],  # fmt: skip
        "object_f1_runs": curves.round(4).tolist(),
    }


def build_results(raw: dict, per_cycle: int, cycles: int, meta: dict) -> dict:
    out = {"strategies": {}, "heldout": {"scene": "rocket", "strategies": {}}, "meta": meta}
    labels = [per_cycle * k for k in range(cycles + 1)]
    for strategy, runs in raw.items():
        if not runs:
            continue
        base = {"labels": labels, "seeds": len(runs), "seed_list": [r["seed"] for r in runs]}
        out["strategies"][strategy] = (
            base | summarise(runs, "mona_lisa") | {"answers": [r["answers"] for r in runs]}
        )
        out["heldout"]["strategies"][strategy] = base | summarise(runs, "heldout")
    finals = {s: v["object_f1_mean"][-1] for s, v in out["strategies"].items()}
    non_random = {s: f for s, f in finals.items() if s != "random"}
    out["default_strategy"] = max(non_random, key=non_random.get) if non_random else None
    return out


def draw_chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    blocks = (
        ("Mona Lisa (labelled)", results["strategies"]),
        ("rocket (held out)", results["heldout"]["strategies"]),
    )
    for ax, (title, block) in zip(axes, blocks):
        for name, s in block.items():
            x = np.array(s["labels"])
            mean = np.array(s["object_f1_mean"])
            ci = np.array(s["object_f1_ci95"], dtype=np.float64)
            style = "--" if name == "random" else "-"
            ax.plot(x, mean, style, marker="o", label=f"{name} (n={s['seeds']})")
            ax.fill_between(x, ci[:, 0], ci[:, 1], alpha=0.2)
        ax.set_title(title)
        ax.set_xlabel("labels answered")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("object F1 at calibrated thresholds")
    axes[0].legend(fontsize=8)
    fig.suptitle("Active-learning cycles: mean and 95% interval over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"chart: {path}")


def table(results: dict) -> str:
    labels = next(iter(results["strategies"].values()))["labels"]
    lines = ["| strategy | scene | seeds | " + " | ".join(f"F1 @ {n}" for n in labels) + " |"]
    lines.append("|" + " --- |" * (3 + len(labels)))
    for scene, block in (("Mona Lisa", results["strategies"]),
                         ("rocket (held out)", results["heldout"]["strategies"])):  # fmt: skip
        for name, s in block.items():
            cells = [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" if s["seeds"] > 1 else f"{m:.3f}"
                     for m, (lo, hi) in zip(s["object_f1_mean"], s["object_f1_ci95"])]  # fmt: skip
            lines.append(f"| {name} | {scene} | {s['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", default=str(REPO / "var" / "mlcore-demo"),
                        help="output folder of `python -m mlcore demo`")  # fmt: skip
    parser.add_argument("--strategies", nargs="+", default=["random", "diverse_uncertainty"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--per-cycle", type=int, default=200)
    parser.add_argument("--weight", type=float, default=50.0, help="weight of a reviewed window")
    parser.add_argument("--steps", type=int, default=None, help="fine-tune steps (profile's)")
    parser.add_argument("--json", default=str(REPO / "docs" / "loop_results.json"))
    parser.add_argument("--chart", default=str(REPO / "docs" / "loop_f1.png"))
    parser.add_argument("--chart-only", action="store_true", help="redraw from --json")
    args = parser.parse_args(argv)
    out = Path(args.json)
    if args.chart_only:
        results = json.loads(out.read_text())
        draw_chart(results, Path(args.chart))
        print(table(results))
        return 0
    demo = Path(args.demo)
    if not (demo / "model" / "model.onnx").exists():
        print(f"error: {demo} holds no first model: run `python -m mlcore demo --out {demo}`",
              file=sys.stderr)  # fmt: skip
        return 2
    from mlcore.sampling import STRATEGIES

    unknown = [s for s in args.strategies if s not in STRATEGIES]
    if unknown:
        print(f"error: unknown strategies {unknown}; choose from {list(STRATEGIES)}",
              file=sys.stderr)  # fmt: skip
        return 2
    scenes = {name: load_scene(demo, stem) for name, stem in SCENES.items()}
    log("scoring the first model on both collages")
    first = score_and_measure(demo / "model" / "model.onnx", scenes)
    raw: dict = {s: [] for s in args.strategies}
    started = time.perf_counter()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    # Seeds outside, strategies inside: an interrupted run still compares every strategy.
    for seed in seeds:
        for strategy in args.strategies:
            run = run_one(demo, strategy, seed, args.cycles, args.per_cycle, args.weight,
                          args.steps, scenes, first)  # fmt: skip
            raw[strategy].append(run | {"seed": seed})
            meta = {
                "command": "bench/bench_loop.py " + " ".join(argv or sys.argv[1:]),
                "machine": f"{platform.machine()}, {platform.node()}",
                "date": time.strftime("%Y-%m-%d"),
                "minutes": round((time.perf_counter() - started) / 60, 1),
                "per_cycle": args.per_cycle, "cycles": args.cycles, "weight": args.weight,
                "first_model": str(demo / "model"), "thresholds": "calibrated per version",
            }  # fmt: skip
            results = build_results(raw, args.per_cycle, args.cycles, meta)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=2))
    draw_chart(results, Path(args.chart))
    print(table(results))
    print(f"default strategy by this measurement: {results['default_strategy']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

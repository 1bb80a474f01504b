"""The measured loop: simulated review cycles from the project's first model, every strategy over
paired seeds, on the Mona Lisa collage, with a held-out collage (rocket.jpg) the loop never labels.

Built from the product's own pieces (mlcore, no web stack, so that seeds x strategies fit on a
2-core machine): the first model, its canvases and its data come from ``python -m mlcore demo``
(the quick profile fine-tuned from the shipped starting model); each cycle

1. asks the strategy (``mlcore.sampling.select_batch``) for ``--per-cycle`` windows of the current
   model's grid, skipping windows answered before;
2. answers them with the simulated reviewer: the class under each window's centre
   (``mlcore.eval.metrics.window_truth`` on all ground-truth boxes: the truth the metrics use);
3. adds the reviewed windows to the canvases as exact samples (weight ``--weight``) and fine-tunes
   the previous model on all canvases for ``--steps`` steps (the same budget for every strategy);
4. exports, calibrates the thresholds on the calibration scene, rescores the collage and records
   object F1 at those thresholds and **corrections stick**: the share of every window answered so
   far that the new version decides as the reviewer answered (``mlcore.eval.loop_figures``).

**Paired seeds**: seed k gives every strategy the same first model (one, shared, its sha256 is in
the JSON), the same fine-tune seed and the same random stream for the strategy; so the paired
difference per seed removes what the seeds share. Random continues to ``--random-cycles`` so that
**labels saved** can be read off its curve: the answers random needs to reach the default's F1.

The calibration scene holds each held-out image ``--calibration-copies`` times (the product's
default, ``mlcore.data.canvases.CALIBRATION_COPIES``); each version is also calibrated on a corner
of it as large as a one-copy scene, so the JSON compares the thresholds' spread of both. The default
strategy is chosen on the calibration scene's F1 after 600 answers, never on the collages.

    .venv/bin/python -m mlcore demo --out var/mlcore-demo             # the first model, once
    .venv/bin/python bench/bench_loop.py --demo var/mlcore-demo --seeds 10 --workers 2
    ... the same with --resume                                         # only the runs missing
    .venv/bin/python bench/bench_loop.py --chart-only                  # redraw from the JSON
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
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
# Random, the default (diverse margin: margin is the strongest simple uncertainty in published
# comparisons), and the two others: diverse least-confidence (the default before this
# measurement) and cluster-margin (Citovsky et al. 2021: margin over k-means clusters, made for
# large batches).
DEFAULT_STRATEGIES = ["random", "diverse_margin", "diverse_uncertainty", "cluster_margin"]
WINDOW, STEP = 32, 16


def log(message: str) -> None:
    print(f"[bench_loop {time.strftime('%H:%M:%S')}] {message}", flush=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def has_first_model(demo: Path) -> bool:
    """Whether ``demo`` holds the first model of `python -m mlcore demo`; if not, say how to
    make it."""
    if (demo / "model" / "model.onnx").exists():
        return True
    print(f"error: {demo} holds no first model: run `python -m mlcore demo --out {demo}`",
          file=sys.stderr)  # fmt: skip
    return False


def load_scene(demo: Path, stem: str):
    from PIL import Image

    from mlcore.data.collage import load_ground_truth

    image = np.asarray(Image.open(demo / f"{stem}.png").convert("RGB"))
    return image, load_ground_truth(demo / f"{stem}.json")


# -- calibration ---------------------------------------------------------------------------------


def calibration_scene(demo: Path, copies: int, cache: Path):
    """(image, truth) of the calibration scene with ``copies`` pastes of each held-out image: the
    demo's own when it was built so, else rebuilt from its images (the same held-out split)."""
    from mlcore.data.canvases import (
        CALIBRATION_FRACTION,
        CanvasSet,
        calibration_scene,
        split_calibration,
    )
    from mlcore.data.datasets import LabelledImages

    cset = CanvasSet.load(demo / "canvases")
    if cset.calibration is not None and cset.meta.get("calibration_copies", 1) == copies:
        return cset.calibration
    image_path, truth_path = (
        cache / f"calibration-x{copies}.npy",
        cache / f"calibration-x{copies}.json",
    )
    if not image_path.exists():
        images = LabelledImages.load_npz(demo / "train.npz")
        _, held_out = split_calibration(images, CALIBRATION_FRACTION, cset.seed)
        image, truth = calibration_scene(held_out, cset.seed, copies)
        np.save(image_path, image)
        truth_path.write_text(json.dumps(truth))
    return np.load(image_path), json.loads(truth_path.read_text())


def corner(grid, truth: list[dict], share: float):
    """The top-left corner of ``grid`` holding ``share`` of its area, and the truth boxes in it."""
    from mlcore.inference.scoring import ScoreGrid

    side = math.sqrt(share)
    height = int(grid.ys[-1]) + grid.window
    width = int(grid.xs[-1]) + grid.window
    ylim, xlim = height * side, width * side
    rows = grid.ys + grid.window <= ylim
    cols = grid.xs + grid.window <= xlim
    part = ScoreGrid(
        grid.ys[rows], grid.xs[cols], grid.probs[np.ix_(rows, cols)], grid.classes, grid.window,
        grid.step, **{k: v[np.ix_(rows, cols)] for k, v in grid.refinements().items()},
    )  # fmt: skip
    inside = [b for b in truth if b["x"] + b["w"] <= xlim and b["y"] + b["h"] <= ylim]
    return part, inside


def calibrate(model_path: Path, scene, copies: int, threads: int) -> dict:
    """Thresholds of ``model_path`` on the calibration scene (written into the file, as the app's
    export does) and, for the spread, on a corner the size of a one-copy scene."""
    from mlcore.inference.calibration import accept_scores, calibrate_thresholds
    from mlcore.model.onnx_file import write_metadata

    image, truth = scene
    grid = score(model_path, image, threads)
    full = calibrate_thresholds(grid, truth)
    part = calibrate_thresholds(*corner(grid, truth, 1.0 / copies)) if copies > 1 else full
    write_metadata(model_path, {"thresholds": full["thresholds"]})
    f1 = _overall_f1(grid, truth, full["thresholds"])
    return {"thresholds": full["thresholds"], "thresholds_one_copy": part["thresholds"],
            "thresholds_plateau": plateau_middle(full["curve"]), "objects": full["objects"],
            "f1": f1, "precision": full["precision"], "recall": full["recall"],
            "accept": accept_scores(grid, truth, full["thresholds"])}  # fmt: skip


def plateau_middle(curve: dict, tolerance: float = 0.005) -> dict:
    """Measured only (the product takes the best F1): per class the middle of the thresholds
    whose F1 is within ``tolerance`` of the best, a rule that a flat curve cannot swing."""
    out = {}
    for c, rows in curve.items():
        best = max(r[3] for r in rows)
        near = [r[0] for r in rows if r[3] >= best - tolerance]
        out[c] = round(float(np.median(near)), 4)
    return out


def _overall_f1(grid, truth, thresholds) -> float:
    from mlcore.eval.evaluation import evaluate_grid

    return round(evaluate_grid(grid, truth, thresholds, coco=False)["object"]["overall"]["f1"], 4)


# -- one run: a strategy, a seed ----------------------------------------------------------------


def score(model_path: Path, image, threads: int):
    """As the app scores the file: densely when it names a dense graph (a fine-tune with
    ``--set dense_crop=...`` writes one), else per window."""
    from mlcore.inference.model_file_scoring import score_with_model_file
    from mlcore.ingest.scenes import ArrayScene

    grid, _ = score_with_model_file(model_path, ArrayScene(image), STEP, threads=threads,
                                    batch_size=1024)  # fmt: skip
    return grid


def picks_digest(picks) -> str:
    return hashlib.sha256(",".join(f"{p.y}:{p.x}" for p in picks).encode()).hexdigest()[:16]


def strategy_seed(seed: int, cycle: int) -> int:
    """The strategy's random stream in cycle ``cycle`` of seed ``seed``: the same for every
    strategy (the pairing)."""
    return seed * 1000 + cycle


def run_one(setup: dict, strategy: str, seed: int, cycles: int, scene: str = "mona_lisa",
            observe=None) -> dict:  # fmt: skip
    """``cycles`` rounds of review, fine-tune, recalibrate, rescore for one strategy and seed on
    ``scene`` (the other collage is the held-out one). ``observe(cycle, picks, labels, grid,
    calibration)``, when given, sees each cycle's answers and the new version's grid of the scene
    and calibration (bench/bench_review_time.py reads the scene's labels off them)."""
    from mlcore.cli import parse_settings
    from mlcore.data.canvases import CanvasSet
    from mlcore.data.scene_marks import MARK_CONTEXT_PX, crop_mark
    from mlcore.eval.loop_figures import corrections_stick, stick_by_coverage
    from mlcore.eval.oracle import Oracle
    from mlcore.inference.postprocess import decided_labels
    from mlcore.inference.scoring import ScoreGrid
    from mlcore.ingest.scenes import ArrayScene
    from mlcore.model.scoring_files import export_scoring_files
    from mlcore.sampling import select_batch
    from mlcore.train.profiles import profile_config
    from mlcore.train.training import train

    args, scenes, calib = setup["args"], setup["scenes"], setup["calibration"]
    threads, demo = args["threads"], Path(args["demo"])
    cset = CanvasSet.load(demo / "canvases")
    cset.canvases = [c for c in cset.canvases if c.kind == "original"]
    cset.calibration = calib
    # A checkpoint file, as the app passes its parent: it carries the architecture (box head).
    init = demo / "model" / "checkpoint.pt"
    overrides = parse_settings(args.get("set"))  # --set: any other fine-tune option
    config = profile_config("quick", finetune=True, seed=seed, steps=args["steps"], lr=args["lr"],
                            correction_share=args["correction_share"],
                            parent_mix=args["parent_mix"], **overrides)  # fmt: skip
    config.update(log_every=10**6, threads=threads)
    first = setup["first"]
    grid = ScoreGrid.load(first["grids"][scene])
    image, truth = scenes[scene]
    scene_reader = ArrayScene(image)
    heldout = next(name for name in SCENES if name != scene)
    classes = grid.classes
    answered = np.full(grid.shape, -1, dtype=np.int64)
    row = {int(y): i for i, y in enumerate(grid.ys)}
    col = {int(x): j for j, x in enumerate(grid.xs)}
    done: set = set()
    coverage = setup["answer_coverage"][scene]
    record = {
        "seed": seed, "strategy": strategy, "first_model_sha256": first["sha256"],
        "finetune_seed": config["seed"], "steps": config["steps"], "lr": config["lr"],
        "correction_share": config.get("correction_share"),
        "parent_mix": config.get("parent_mix", 0.0),
        "set": overrides,
        "scene": scene,
        "f1": [first["f1"][scene]], "heldout_f1": {"0": first["f1"][heldout]},
        "calibration_f1": [first["calibration"]["f1"]],
        "thresholds": [first["calibration"]["thresholds"]],
        "thresholds_one_copy": [first["calibration"]["thresholds_one_copy"]],
        "thresholds_plateau": [first["calibration"]["thresholds_plateau"]],
        "stick": [], "stick_earlier": [], "stick_by_coverage": [],
        "answers": [], "picks": [], "seconds": [],
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for cycle in range(1, cycles + 1):
            started = time.perf_counter()
            picks = select_batch(grid, strategy, args["per_cycle"], exclude=done,
                                 seed=strategy_seed(seed, cycle))  # fmt: skip
            labels = Oracle(truth, "negative", grid.classes).answers(grid, picks)
            earlier = answered.copy()
            for p, label in zip(picks, labels):
                done.add((p.y, p.x))
                answered[row[p.y], col[p.x]] = classes.index(label)
            record["answers"].append({c: labels.count(c) for c in classes})
            record["picks"].append(picks_digest(picks))
            for label in sorted(set(labels)):
                chosen = [p for p, lab in zip(picks, labels) if lab == label]
                # As the app cuts a reviewed window: with its scene context (crop_mark).
                crops = np.stack([crop_mark(scene_reader, (p.x, p.y, WINDOW, WINDOW), WINDOW,
                                            context=MARK_CONTEXT_PX) for p in chosen])  # fmt: skip
                ids = [f"s{seed}c{cycle}:{p.y},{p.x}" for p in chosen]
                cset.append(label, crops, ids, weight=args["weight"], layout="exact",
                            context=MARK_CONTEXT_PX)  # fmt: skip
            result = train(cset, cset.classes, config, init_state=init)
            init = result.save_checkpoint(Path(tmp) / f"model-{cycle}.pt")
            model_path = Path(tmp) / f"model-{cycle}.onnx"
            export_scoring_files(result.model, model_path, cset.classes, result.config)
            cal = calibrate(model_path, calib, args["calibration_copies"], threads)
            grid = score(model_path, image, threads)
            record["f1"].append(_overall_f1(grid, truth, cal["thresholds"]))
            for key in ("thresholds", "thresholds_one_copy", "thresholds_plateau"):
                record[key].append(cal[key])
            record["calibration_f1"].append(cal["f1"])
            decided = decided_labels(grid.probs, classes, cal["thresholds"], "negative")
            record["stick"].append(corrections_stick(decided, answered))
            record["stick_earlier"].append(corrections_stick(decided, earlier))
            record["stick_by_coverage"].append(stick_by_coverage(decided, answered, coverage))
            if observe is not None:
                observe(cycle, picks, labels, grid, cal)
            if cycle in setup["heldout_at"]:
                held_image, held_truth = scenes[heldout]
                held = score(model_path, held_image, threads)
                record["heldout_f1"][str(cycle)] = _overall_f1(held, held_truth, cal["thresholds"])
            record["seconds"].append(round(time.perf_counter() - started, 1))
            share = record["stick"][-1]["share"]
            log(f"{strategy} seed {seed} cycle {cycle}: F1 {record['f1'][-1]} "
                f"(held out {record['heldout_f1'].get(str(cycle), '-')}), stick {share:.3f}, "
                f"thresholds {cal['thresholds']}, answers {record['answers'][-1]} "
                f"({record['seconds'][-1]:.0f}s)")  # fmt: skip
    return record


_SETUP: dict = {}


def _worker_init(setup: dict) -> None:
    """A spawned worker imports this module, hence mlcore (its OpenMP policy) first."""
    from mlcore.eval.metrics import centre_class_coverage
    from mlcore.inference.scoring import ScoreGrid

    scenes = {name: load_scene(Path(setup["args"]["demo"]), stem) for name, stem in SCENES.items()}
    calib = (np.load(setup["calibration_files"][0]),
             json.loads(Path(setup["calibration_files"][1]).read_text()))  # fmt: skip
    # How much of each window of each collage its centre's class covers: the same for every
    # run, so once per worker.
    coverage = {}
    for name, (image, truth) in scenes.items():
        grid = ScoreGrid.load(setup["first"]["grids"][name])
        coverage[name] = centre_class_coverage(grid.ys, grid.xs, WINDOW, truth, image.shape,
                                               grid.classes, "negative")  # fmt: skip
    _SETUP.update(setup | {"scenes": scenes, "calibration": calib, "answer_coverage": coverage})


def _worker_run(task: tuple) -> dict:
    strategy, seed, cycles = task
    return run_one(_SETUP, strategy, seed, cycles)


# -- summaries -----------------------------------------------------------------------------------


def summarise_curves(curves: list[list[float]]) -> dict:
    from mlcore.eval.loop_figures import mean_interval

    arr = np.array(curves, dtype=np.float64)
    stats = [mean_interval(arr[:, j]) for j in range(arr.shape[1])]
    return {
        "mean": [round(s["mean"], 4) for s in stats],
        "ci95": [[round(v, 4) for v in s["ci95"]] for s in stats],
        "runs": arr.round(4).tolist(),
    }


def threshold_spread(runs: list[dict], key: str) -> dict:
    """How much the calibrated thresholds move: the mean absolute change from one version to the
    next within a run, and the standard deviation across seeds at each cycle (mean over cycles),
    per class."""
    classes = list(runs[0][key][0])
    out = {}
    for c in classes:
        series = np.array([[t[c] for t in r[key]] for r in runs], dtype=np.float64)
        steps = np.abs(np.diff(series, axis=1))
        out[c] = {
            "version_to_version_mean_abs": round(float(steps.mean()), 4),
            "version_to_version_max_abs": round(float(steps.max()), 4),
            "across_seeds_sd": round(float(series[:, 1:].std(axis=0, ddof=1).mean()), 4)
            if len(series) > 1 else None,
        }  # fmt: skip
    return out


def stick_coverage_summary(runs: list[dict], cycles: int) -> list[dict] | None:
    """Per coverage bin of the answers, kept / answered summed over the runs after the last
    cycle (None for records from before the breakdown)."""
    if not all(len(r.get("stick_by_coverage", [])) >= cycles for r in runs) or not cycles:
        return None
    bins = [b["coverage"] for b in runs[0]["stick_by_coverage"][cycles - 1]]
    out = []
    for i, span in enumerate(bins):
        answered = sum(r["stick_by_coverage"][cycles - 1][i]["answered"] for r in runs)
        kept = sum(r["stick_by_coverage"][cycles - 1][i]["kept"] for r in runs)
        out.append({"coverage": span, "answered": answered, "kept": kept,
                    "share": round(kept / answered, 4) if answered else None})  # fmt: skip
    return out


def build_results(records: list[dict], args: dict, meta: dict) -> dict:
    from mlcore.eval.loop_figures import labels_saved, paired_differences

    per = args["per_cycle"]
    by_strategy: dict[str, list[dict]] = {}
    for r in sorted(records, key=lambda r: (r["strategy"], r["seed"])):
        by_strategy.setdefault(r["strategy"], []).append(r)
    out: dict = {"strategies": {}, "meta": meta}
    for strategy, runs in by_strategy.items():
        cycles = min(len(r["f1"]) for r in runs) - 1
        held_points = sorted({int(k) for r in runs for k in r["heldout_f1"]})
        held_points = [k for k in held_points if all(str(k) in r["heldout_f1"] for r in runs)]
        stick = [[r["stick"][j]["share"] for r in runs] for j in range(cycles)]
        earlier = [[r["stick_earlier"][j]["share"] for r in runs] for j in range(1, cycles)]
        out["strategies"][strategy] = {
            "labels": [per * k for k in range(cycles + 1)],
            "seeds": [r["seed"] for r in runs],
            "object_f1": summarise_curves([r["f1"][: cycles + 1] for r in runs]),
            "heldout_labels": [per * k for k in held_points],
            "heldout_object_f1": summarise_curves(
                [[r["heldout_f1"][str(k)] for k in held_points] for r in runs]
            ),
            "calibration_f1": summarise_curves([r["calibration_f1"][: cycles + 1] for r in runs]),
            "corrections_stick": {
                "mean": [round(float(np.mean(v)), 4) for v in stick],
                "min": [round(float(np.min(v)), 4) for v in stick],
                "earlier_mean": [round(float(np.mean(v)), 4) for v in earlier],
                "by_answer_coverage": stick_coverage_summary(runs, cycles),
            },
            "thresholds_spread": {
                "calibration_scene": threshold_spread(runs, "thresholds"),
                "one_copy_corner": threshold_spread(runs, "thresholds_one_copy"),
                "plateau_middle_measured_only": threshold_spread(runs, "thresholds_plateau"),
            },
            "never_worse": (
                never_worse(runs, args["cycles"], per)
                if cycles >= args["cycles"]
                and len(runs) > 1
                and all(str(args["cycles"]) in r["heldout_f1"] for r in runs)
                else None
            ),
            "answers": [r["answers"] for r in runs],
            "minutes_per_run": round(float(np.mean([sum(r["seconds"]) for r in runs])) / 60, 1),
        }
    strategies = out["strategies"]
    budget_cycle = args["cycles"]
    if "random" in strategies:
        rand_runs = {r["seed"]: r for r in by_strategy["random"]}
        out["paired_vs_random"] = {}
        for strategy, runs in by_strategy.items():
            if strategy == "random":
                continue
            seeds = [r["seed"] for r in runs if r["seed"] in rand_runs]
            if not seeds:
                continue
            mine = {r["seed"]: r for r in runs}
            length = budget_cycle + 1
            out["paired_vs_random"][strategy] = {
                "seeds": seeds,
                "object_f1": paired_differences(
                    [mine[s]["f1"][:length] for s in seeds],
                    [rand_runs[s]["f1"][:length] for s in seeds],
                ),
                "heldout_object_f1": paired_differences(
                    [[mine[s]["heldout_f1"][k] for k in ("0", str(budget_cycle))] for s in seeds],
                    [[rand_runs[s]["heldout_f1"][k] for k in ("0", str(budget_cycle))]
                     for s in seeds],
                ) | {"labels": [0, per * budget_cycle]},
            }  # fmt: skip
    # The default: the best calibration-scene F1 at the budget over the seeds every candidate
    # ran (the collages report, never choose).
    runs_of = {s: {r["seed"]: r for r in runs} for s, runs in by_strategy.items()
               if s != "random" and min(len(r["f1"]) for r in runs) > budget_cycle}  # fmt: skip
    common = sorted(set.intersection(*(set(v) for v in runs_of.values()))) if runs_of else []
    candidates = {s: float(np.mean([v[k]["calibration_f1"][budget_cycle] for k in common]))
                  for s, v in runs_of.items()} if common else {}  # fmt: skip
    default = max(candidates, key=candidates.get) if candidates else None
    out["default_strategy"] = default
    out["default_chosen_on"] = (
        f"calibration-scene object F1 after the budget, mean over the seeds all ran ({common})"
    )
    out["default_candidates"] = {s: round(v, 4) for s, v in candidates.items()}
    if default and "random" in strategies:
        rand = strategies["random"]
        reached = strategies[default]["object_f1"]["mean"][budget_cycle]
        out["labels_saved"] = labels_saved(
            rand["labels"], rand["object_f1"]["mean"], per * budget_cycle, reached
        ) | {"strategy": default, "against": "random (mean curve over the same seeds)"}
    return out


# Issue 35's bar: a step of the loop may not lose more than this (paired, 95% interval).
NEVER_WORSE_TOLERANCE = 0.005


def _paired_change(arr: np.ndarray, labels: list[int], a: int, b: int) -> dict:
    """Column a -> b of ``arr`` (a row per seed), mean and 95% interval, and whether it passes."""
    from mlcore.eval.loop_figures import mean_interval

    summary = mean_interval(arr[:, b] - arr[:, a])
    return {"answers": [labels[a], labels[b]], "mean": round(summary["mean"], 4),
            "ci95": [round(v, 4) for v in summary["ci95"]],
            "passes": bool(summary["ci95"][1] > -NEVER_WORSE_TOLERANCE)}  # fmt: skip


def never_worse(runs: list[dict], budget_cycle: int, per: int) -> dict:
    """Does each step of the loop keep what the model knew? Per scene, the paired change of each
    step (cycle k - cycle k-1 on the same seed) with its 95% interval; a step passes when the
    interval reaches above -NEVER_WORSE_TOLERANCE. The labelled collage and the calibration scene
    are scored every cycle, the held-out rocket at 0 and the budget only (one step)."""
    curves = {
        "mona_lisa": [r["f1"][: budget_cycle + 1] for r in runs],
        "calibration_scene": [r["calibration_f1"][: budget_cycle + 1] for r in runs],
        "rocket": [[r["heldout_f1"]["0"], r["heldout_f1"][str(budget_cycle)]] for r in runs],
    }
    out: dict = {}
    for scene, rows in curves.items():
        arr = np.array(rows, dtype=np.float64)
        labels = (
            [0, per * budget_cycle] if scene == "rocket" else [per * k for k in range(len(arr[0]))]
        )
        out[scene] = [_paired_change(arr, labels, j - 1, j) for j in range(1, arr.shape[1])]
        last = arr.shape[1] - 1  # first to last: what the steps add up to
        out.setdefault("overall", {})[scene] = _paired_change(arr, labels, 0, last)
    # The bar is per step; "overall" (first to last, the same test) is reported beside it.
    out["passes"] = all(step["passes"] for scene in curves for step in out[scene])
    return out


# -- chart and table ----------------------------------------------------------------------------


def draw_chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    for name, s in results["strategies"].items():
        style = "--" if name == "random" else "-"
        n = len(s["seeds"])
        for ax, xkey, ykey in ((axes[0], "labels", "object_f1"),
                               (axes[1], "heldout_labels", "heldout_object_f1")):  # fmt: skip
            x = np.array(s[xkey])
            mean = np.array(s[ykey]["mean"])
            ci = np.array(s[ykey]["ci95"], dtype=np.float64)
            ax.plot(x, mean, style, marker="o", label=f"{name} (n={n})")
            ax.fill_between(x, ci[:, 0], ci[:, 1], alpha=0.15)
    for name, d in results.get("paired_vs_random", {}).items():
        x = np.array(results["strategies"][name]["labels"])
        mean = np.array(d["object_f1"]["mean"])
        ci = np.array(d["object_f1"]["ci95"], dtype=np.float64)
        axes[2].plot(x, mean, marker="o", label=name)
        axes[2].fill_between(x, ci[:, 0], ci[:, 1], alpha=0.15)
    axes[2].axhline(0, color="grey", lw=1)
    axes[0].set_title("Mona Lisa (labelled): object F1")
    axes[1].set_title("rocket (held out): object F1")
    axes[2].set_title("paired gain over random (Mona Lisa)")
    for ax in axes:
        ax.set_xlabel("answers")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle("Active-learning cycles from the starting model: mean and 95% interval over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"chart: {path}")


def _cell(mean: float, ci: list[float], with_ci: bool) -> str:
    return f"{mean:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if with_ci else f"{mean:.3f}"


def table(results: dict) -> str:
    """Object F1 per cycle (mean [95% interval]), the held-out collage, corrections stick."""
    longest = max((s["labels"] for s in results["strategies"].values()), key=len)
    head = " | ".join(f"F1 @ {n}" for n in longest)
    lines = [f"| strategy | seeds | {head} | rocket @ 0 / 600 | stick after each cycle |"]
    lines.append("|" + " --- |" * (len(longest) + 4))
    for name, s in results["strategies"].items():
        f1 = s["object_f1"]
        several = len(s["seeds"]) > 1
        cells = [
            _cell(m, ci, several and k > 0) for k, (m, ci) in enumerate(zip(f1["mean"], f1["ci95"]))
        ]
        cells += [""] * (len(longest) - len(cells))
        held = " / ".join(f"{v:.3f}" for v in s["heldout_object_f1"]["mean"])
        stick = " / ".join(f"{v:.1%}" for v in s["corrections_stick"]["mean"])
        row = " | ".join(cells)
        lines.append(f"| {name} | {len(s['seeds'])} | {row} | {held} | {stick} |")
    return "\n".join(lines)


def paired_table(results: dict) -> str:
    lines = ["| strategy - random | seeds | " + " | ".join(
        f"@ {n}" for n in next(iter(results["strategies"].values()))["labels"][1:4]
    ) + " | rocket @ 600 |", "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for name, d in results.get("paired_vs_random", {}).items():
        o = d["object_f1"]
        cells = [f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}] ({a}/{d['object_f1']['seeds']} ahead)"
                 for m, (lo, hi), a in list(zip(o["mean"], o["ci95"], o["ahead"]))[1:]]  # fmt: skip
        h = d["heldout_object_f1"]
        held = f"{h['mean'][1]:+.3f} [{h['ci95'][1][0]:+.3f}, {h['ci95'][1][1]:+.3f}]"
        lines.append(f"| {name} | {len(d['seeds'])} | " + " | ".join(cells) + f" | {held} |")
    return "\n".join(lines)


def never_worse_table(results: dict) -> str:
    """Each step's paired change per scene, mean [95% interval], and whether it passes."""
    lines = ["| strategy | scene | " + "step | " * 3 + "steps pass | first to last |",
             "|" + " --- |" * 7]  # fmt: skip
    for name, s in results["strategies"].items():
        check = s.get("never_worse")
        if not check:
            continue
        for scene in ("mona_lisa", "calibration_scene", "rocket"):
            cells = [
                f"{st['answers'][0]}->{st['answers'][1]}: {st['mean']:+.4f} "
                f"[{st['ci95'][0]:+.4f}, {st['ci95'][1]:+.4f}]"
                for st in check[scene]
            ]
            cells += [""] * (3 - len(cells))
            ok = "yes" if all(st["passes"] for st in check[scene]) else "**no**"
            whole = check["overall"][scene]
            total = (f"{whole['mean']:+.4f} [{whole['ci95'][0]:+.4f}, {whole['ci95'][1]:+.4f}]"
                     + ("" if whole["passes"] else " **below**"))  # fmt: skip
            lines.append(f"| {name} | {scene} | " + " | ".join(cells) + f" | {ok} | {total} |")
    return "\n".join(lines)


def tables(results: dict) -> str:
    return "\n\n".join([table(results), paired_table(results), never_worse_table(results)])


# -- main ----------------------------------------------------------------------------------------


def kept_records(out: Path, meta: dict, strategies: list[str]) -> list[dict]:
    """The runs of an earlier ``--json`` this run can add to: the same fine-tune and cycle sizes
    (else none: mixing them would pair unlike runs). From another first model (a demo remade in
    another session or on another host) only whole seeds are kept, every one of ``strategies``:
    the pairs are within a seed (same first model, fine-tune seed, random stream), so seeds may
    start from different first models; each record names its own."""
    if not out.exists():
        return []
    earlier = json.loads(out.read_text())
    before = earlier.get("meta", {})
    same = ("per_cycle", "cycles", "random_cycles", "weight", "finetune", "calibration_copies")
    changed = [k for k in same if before.get(k) != meta[k]]
    if changed:
        log(f"not resuming {out}: it differs in {', '.join(changed)}")
        return []
    records = earlier.get("records", [])
    ours = meta["first_model"]["sha256"]
    other = [r for r in records if r["first_model_sha256"] != ours]
    if other:
        by_seed: dict[int, set] = {}
        for r in other:
            by_seed.setdefault(r["seed"], set()).add(r["strategy"])
        whole = {seed for seed, done in by_seed.items() if set(strategies) <= done}
        records = [r for r in records if r["first_model_sha256"] == ours or r["seed"] in whole]
        log(f"seeds {sorted(whole)} kept from another first model (whole seeds only)")
    return records


def prepare(args, cache: Path) -> dict:
    """The shared part of every run: the calibration scene, and the first model recalibrated on
    it and scored on both collages (the same first model for every seed and strategy)."""
    from mlcore.inference.dense_scoring import dense_model_name

    demo = Path(args.demo)
    image, truth = calibration_scene(demo, args.calibration_copies, cache)
    calib_files = (cache / "calibration.npy", cache / "calibration.json")
    np.save(calib_files[0], image)
    calib_files[1].write_text(json.dumps(truth))
    first_model = cache / "first.onnx"
    first_model.write_bytes((demo / "model" / "model.onnx").read_bytes())
    dense = dense_model_name(first_model)  # a first model trained densely is scored so
    if dense:
        (cache / dense).write_bytes((demo / "model" / dense).read_bytes())
    log(f"calibrating the first model on the calibration scene ({image.shape[1]}x{image.shape[0]})")
    cal = calibrate(
        first_model, (image, truth), args.calibration_copies, args.threads * args.workers
    )
    f1 = {}
    for name, stem in SCENES.items():
        scene_image, scene_truth = load_scene(demo, stem)
        grid = score(first_model, scene_image, args.threads * args.workers)
        f1[name] = _overall_f1(grid, scene_truth, cal["thresholds"])
        grid.save(cache / f"first-grid-{name}.npz")
    log(f"first model: F1 {f1}, thresholds {cal['thresholds']}")
    return {
        "grids": {name: str(cache / f"first-grid-{name}.npz") for name in SCENES},
        "f1": f1, "calibration": cal,
        "sha256": sha256(demo / "model" / "model.onnx"),
        "calibration_files": [str(p) for p in calib_files],
    }  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", default=str(REPO / "var" / "mlcore-demo"),
                        help="output folder of `python -m mlcore demo`")  # fmt: skip
    parser.add_argument("--strategies", nargs="+", default=DEFAULT_STRATEGIES)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--cycles", type=int, default=3, help="cycles of every strategy")
    parser.add_argument("--random-cycles", type=int, default=6, help="random's (labels saved)")
    parser.add_argument("--per-cycle", type=int, default=200)
    parser.add_argument("--weight", type=float, default=50.0, help="weight of a reviewed window")
    parser.add_argument("--steps", type=int, default=None, help="fine-tune steps (profile's)")
    parser.add_argument("--lr", type=float, default=None, help="fine-tune peak lr (profile's)")
    parser.add_argument("--correction-share", type=float, default=None,
                        help="reviewed windows' share of the draws (profile's)")  # fmt: skip
    parser.add_argument("--parent-mix", type=float, default=None,
                        help="parent's share of each fine-tune's weights (profile's)")  # fmt: skip
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="a fine-tune option as mlcore train takes it")  # fmt: skip
    parser.add_argument("--calibration-copies", type=int, default=None,
                        help="pastes of each held-out image (default: the product's)")  # fmt: skip
    parser.add_argument("--core", type=int, default=2,
                        help="the first N strategies run on all seeds before the rest")  # fmt: skip
    parser.add_argument("--workers", type=int, default=1, help="runs in parallel (processes)")
    parser.add_argument("--threads", type=int, default=None, help="threads per run (2/workers)")
    parser.add_argument("--json", default=str(REPO / "docs" / "loop_results.json"))
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs already in --json (same fine-tune; from another "
                             "first model whole seeds) and run only the missing ones")  # fmt: skip
    parser.add_argument("--chart", default=str(REPO / "docs" / "loop_f1.png"))
    parser.add_argument("--chart-only", action="store_true", help="redraw from --json")
    parser.add_argument("--resummarise", action="store_true",
                        help="with --chart-only: summarise the JSON's records again")  # fmt: skip
    args = parser.parse_args(argv)
    out = Path(args.json)
    if args.chart_only:
        results = json.loads(out.read_text())
        if args.resummarise:  # the records again, through this file's summaries
            records, meta = results["records"], results["meta"]
            settings = {"per_cycle": meta["per_cycle"], "cycles": meta["cycles"]}
            results = build_results(records, settings, meta) | {"records": records}
            out.write_text(json.dumps(results, indent=1))
        draw_chart(results, Path(args.chart))
        print(tables(results))
        return 0
    from mlcore.cli import parse_settings
    from mlcore.data.canvases import CALIBRATION_COPIES
    from mlcore.sampling import STRATEGIES
    from mlcore.train.profiles import profile_config

    demo = Path(args.demo)
    if not has_first_model(demo):
        return 2
    unknown = [s for s in args.strategies if s not in STRATEGIES]
    if unknown:
        print(f"error: unknown strategies {unknown}; choose from {list(STRATEGIES)}",
              file=sys.stderr)  # fmt: skip
        return 2
    args.calibration_copies = args.calibration_copies or CALIBRATION_COPIES
    args.workers = max(1, args.workers)
    args.threads = args.threads or max(1, 2 // args.workers)
    cache = demo / "bench_loop"
    cache.mkdir(exist_ok=True)
    started = time.perf_counter()
    first = prepare(args, cache)
    budget = args.cycles
    setup = {
        "args": vars(args) | {"demo": str(demo)}, "first": first,
        "heldout_at": {budget, args.random_cycles}, "calibration_files": first["calibration_files"],
    }  # fmt: skip
    # The first --core strategies (random and the default) over every seed first, then the
    # others; seeds outside, strategies inside: an interrupted run leaves whole pairs.
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    groups = [args.strategies[: args.core], args.strategies[args.core :]]
    tasks = [(s, seed, args.random_cycles if s == "random" else budget)
             for group in groups for seed in seeds for s in group]  # fmt: skip
    meta = {
        "command": "bench/bench_loop.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {platform.node()}, 2 cores",
        "date": time.strftime("%Y-%m-%d"), "per_cycle": args.per_cycle, "cycles": budget,
        "random_cycles": args.random_cycles, "weight": args.weight,
        "finetune": {k: v for k, v in profile_config(
            "quick", finetune=True, steps=args.steps, lr=args.lr,
            correction_share=args.correction_share, parent_mix=args.parent_mix).items()
            if k in ("steps", "lr", "correction_share", "warmup_fraction", "parent_mix")}
            | parse_settings(args.set),
        "calibration_copies": args.calibration_copies,
        "first_model": {"path": str(demo / "model"), "sha256": first["sha256"],
                        "f1": first["f1"], "thresholds": first["calibration"]["thresholds"]},
        "thresholds": "calibrated per version on the calibration scene",
    }  # fmt: skip
    records = kept_records(out, meta, args.strategies) if args.resume else []
    kept = {(r["strategy"], r["seed"]) for r in records}
    # A seed is run whole from this first model unless another first model's seed is kept whole.
    tasks = [t for t in tasks if (t[0], t[1]) not in kept]
    total = len(records) + len(tasks)
    if records:
        meta["runs_kept_from_earlier"] = len(records)
        log(f"resuming: {len(records)} runs kept from {out}, {len(tasks)} to run")
    first_models: dict[str, list[int]] = {}
    for r in records:
        first_models.setdefault(r["first_model_sha256"], []).append(r["seed"])
    for _, seed, _ in tasks:
        first_models.setdefault(first["sha256"], []).append(seed)
    meta["first_models"] = {sha: sorted(set(seeds)) for sha, seeds in first_models.items()}
    results: dict = {}

    def collect(record: dict) -> None:
        records.append(record)
        meta["minutes"] = round((time.perf_counter() - started) / 60, 1)
        meta["runs_done"] = f"{len(records)}/{total}"
        results.update(build_results(records, vars(args), meta))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results | {"records": records}, indent=1))

    if args.workers == 1:
        _worker_init(setup)
        for task in tasks:
            collect(_worker_run(task))
    else:
        context = multiprocessing.get_context("spawn")
        with context.Pool(args.workers, _worker_init, (setup,)) as pool:
            for record in pool.imap(_worker_run, tasks):
                collect(record)
    draw_chart(results, Path(args.chart))
    print(tables(results))
    print(f"default strategy by this measurement: {results['default_strategy']} "
          f"({results['default_chosen_on']})")  # fmt: skip
    if results.get("labels_saved"):
        print(f"labels saved: {results['labels_saved']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

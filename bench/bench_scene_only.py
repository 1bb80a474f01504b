"""A first model from the scene alone (issue 34, "Done when"): two CIFAR-10 classes, horse and
deer, treated as classes of one's own, learnt only from what a reviewer marks on one collage;
object F1 on that collage and on a second one nobody marked.

The app's recipe, run without Django (the same mlcore functions the cycle calls,
workers.loop_jobs): an empty canvas set (mlcore.data.scene_marks.scene_only_set), each mark's
window cut from the scene (crop_mark), a share of each class's marks held out as the calibration
scene (hold_out_marks, 20%), the rest exact training samples (add_marked_windows); the first model
fine-tuned from the starting model with the dashboard's profile (quick, its from-start options,
the project's default window 32 and step 8), new heads on its backbone (the classes are named
"own-horse" and "own-deer", so no starting-model head shares their name: no head mapping, as for
any class without CIFAR-10 sources), exported to ONNX and calibrated on the held-out marks
(mlcore.inference.calibration.calibrate_model_file), then both collages scored at the project's
default step 16 and evaluated at the calibrated thresholds (mlcore.eval.evaluation).

The scenes: the marked collage is the Mona Lisa made of CIFAR-10 *train* images, the unmarked one
rocket.jpg made of *test* images (no image of it was ever marked or trained on); horse and deer
are the classes, the eight other CIFAR-10 classes the background (negative).

The reviewer: marks N objects of each class, a seeded random sample of the collage's objects
(truth boxes with at least half their pixels visible, what the metrics count), each mark the
object's own box; and 2N background clicks ("nothing here") at random spots whose window holds
no horse or deer (IoU < 0.1 with every horse and deer box, hidden ones included), a click being
a window of the object size centred on it. 2N: as many background marks as object marks, the
same number of clicks as the objects cost, and the profile draws half of each batch from the
negative class anyway (negative_share 0.5); chosen before any figure was seen.

A seed decides which objects and spots are marked and the training seed. Each finished run is
appended to the JSON at once; a second call skips the runs the JSON already holds.

    nice -n 5 .venv/bin/python bench/bench_scene_only.py --json docs/scene_only.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"
RENAME = {"horse": "own-horse", "deer": "own-deer"}
NEGATIVE = "negative"
CLASSES = [*RENAME.values(), NEGATIVE]
WINDOW, TRAIN_STEP, SCORE_STEP = 32, 8, 16  # the project defaults (labeling.models.Project)
BACKGROUND_PER_OBJECT_MARK = 1  # one background click per object mark: 2N for N a class
BACKGROUND_MAX_IOU = 0.1


def collage_of(target, tiles_path, split: str, cols: int, cache: Path):
    """(image, truth) of the collage of ``target`` made of CIFAR-10 ``split`` images, horse and
    deer renamed, the rest negative; cached as PNG + JSON under ``cache``."""
    from PIL import Image

    from mlcore.data.collage import load_ground_truth, make_collage
    from mlcore.data.datasets import ClassMapping, apply_mapping, load_dataset

    picture = cache / f"{Path(target).stem}-{split}-{cols}.png"
    if not picture.exists():
        tiles = apply_mapping(load_dataset(tiles_path, split=split),
                              ClassMapping(dict(RENAME), negative=NEGATIVE))  # fmt: skip
        make_collage(target, tiles, cols=cols, seed=0).save(picture, picture.with_suffix(".json"))
    image = np.asarray(Image.open(picture).convert("RGB"))
    return image, load_ground_truth(picture.with_suffix(".json"))


def objects_of(truth: list[dict], label: str) -> list[dict]:
    """The boxes of ``label`` the metrics count (at least half visible)."""
    from mlcore.data.collage import ground_truth_objects

    return ground_truth_objects(truth, [label])


def choose_marks(truth: list[dict], n: int, rng: np.random.Generator) -> list[dict]:
    """The reviewer's object marks: ``n`` objects of each class, a random sample of the truth's
    countable boxes, each marked with its own box. Fewer when a class has fewer objects."""
    marks = []
    for label in RENAME.values():
        boxes = objects_of(truth, label)
        if len(boxes) < n:
            raise ValueError(f"the collage has {len(boxes)} {label} objects, {n} are to be "
                             "marked: use more --cols")  # fmt: skip
        for i in rng.choice(len(boxes), n, replace=False).tolist():
            marks.append(boxes[i] | {"mark": "object"})
    return marks


def iou_with(box: tuple, boxes: np.ndarray) -> np.ndarray:
    x, y, w, h = box
    ix = np.clip(np.minimum(x + w, boxes[:, 0] + boxes[:, 2]) - np.maximum(x, boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(y + h, boxes[:, 1] + boxes[:, 3]) - np.maximum(y, boxes[:, 1]), 0, None)
    inter = ix * iy
    return inter / (w * h + boxes[:, 2] * boxes[:, 3] - inter)


def background_clicks(truth, shape, n: int, rng: np.random.Generator) -> list[dict]:
    """``n`` "nothing here" clicks at random spots whose window (the object size, centred on the
    click, clamped into the scene) overlaps no horse or deer box by IoU >= BACKGROUND_MAX_IOU."""
    own = [[b["x"], b["y"], b["w"], b["h"]] for b in truth if b["label"] in RENAME.values()]
    own = np.array(own, dtype=np.float64).reshape(-1, 4)
    height, width = shape[:2]
    clicks: list[dict] = []
    for _ in range(1000 * max(1, n)):
        if len(clicks) == n:
            break
        cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
        y = min(max(cy - WINDOW // 2, 0), height - WINDOW)
        x = min(max(cx - WINDOW // 2, 0), width - WINDOW)
        box = (x, y, WINDOW, WINDOW)
        if len(own) and iou_with(box, own).max() >= BACKGROUND_MAX_IOU:
            continue
        clicks.append({"label": NEGATIVE, "x": x, "y": y, "w": WINDOW, "h": WINDOW,
                       "mark": "background"})  # fmt: skip
    if len(clicks) < n:
        raise ValueError(f"found only {len(clicks)} background spots of {n}")
    return clicks


def marked_set(image: np.ndarray, marks: list[dict]):
    """The canvas set the app builds from these marks (workers.loop_jobs.feed_corrections on a
    scene-only project): (canvas set, {class: held out}, {image id: mark})."""
    from mlcore.data.scene_marks import (
        MARK_CONTEXT_PX,
        add_marked_windows,
        crop_mark,
        hold_out_marks,
        scene_only_set,
    )
    from mlcore.ingest.scenes import ArrayScene

    cset = scene_only_set(CLASSES, WINDOW)
    reader = ArrayScene(image)
    by_class: dict[str, list] = {c: [] for c in CLASSES}
    by_id = {}
    for k, mark in enumerate(marks):
        image_id = f"mark-{k}"
        box = (mark["x"], mark["y"], mark["w"], mark["h"])
        tile = crop_mark(reader, box, WINDOW, context=MARK_CONTEXT_PX)  # as the app cuts it
        by_class[mark["label"]].append((image_id, tile))
        by_id[image_id] = mark
    held = hold_out_marks(cset, by_class)
    add_marked_windows(cset, by_class)
    return cset, held, by_id


def train_config(profile: str, seed: int, overrides: dict | None = None) -> dict:
    """The options the app gives a project's first model from the starting model
    (labeling.loop.cycle.train_config_for: the profile's from-start options, the project's window
    and train step), with the bench's seed."""
    from mlcore.train.profiles import profile_config

    return profile_config(profile, start=True) | {"window": WINDOW, "step": TRAIN_STEP,
                                                  "seed": seed} | (overrides or {})  # fmt: skip


def first_model(cset, config: dict, out: Path) -> tuple[Path, dict]:
    """Train from the starting model (workers.loop_jobs.train_model), export and calibrate
    (workers.loop_jobs.export): the model file and what training said."""
    from mlcore.engines import get_engine
    from mlcore.inference.calibration import calibrate_model_file
    from mlcore.model import starting_model
    from mlcore.model.export import export_onnx

    started = time.perf_counter()
    start = starting_model.starting_checkpoint(WINDOW)
    result = get_engine("torch").train(cset, CLASSES, config, init_from=start)
    seconds = time.perf_counter() - started
    path = export_onnx(result.model, out / "model.onnx", CLASSES, WINDOW, {"bench": "scene-only"})
    summary = calibrate_model_file(path, cset, step=SCORE_STEP)
    return path, {"train_seconds": round(seconds, 1), "thresholds": summary["thresholds"],
                  "calibration_f1": summary["f1"]}  # fmt: skip


def scene_figures(model_path: Path, image: np.ndarray, truth: list[dict]) -> dict:
    """Object P / R / F1 of the model file on a scene at its calibrated thresholds."""
    from mlcore.eval.evaluation import evaluate_grid
    from mlcore.inference.scoring import OnnxScorer, score_scene
    from mlcore.ingest.scenes import ArrayScene
    from mlcore.model.onnx_file import read_metadata

    grid = score_scene(OnnxScorer(model_path), ArrayScene(image), SCORE_STEP)
    thresholds = read_metadata(model_path)["thresholds"]
    metrics = evaluate_grid(grid, truth, thresholds=thresholds, negative=NEGATIVE, coco=False)
    overall = metrics["object"]["overall"]
    return {"f1": round(overall["f1"], 4), "precision": round(overall["precision"], 4),
            "recall": round(overall["recall"], 4),
            # the objects the metrics counted (found + missed)
            "objects": int(sum(m["tp"] + m["fn"] for m in metrics["object"]["per_class"].values())),
            "per_class_f1": {c: round(m["f1"], 4)
                             for c, m in metrics["object"]["per_class"].items()}}  # fmt: skip


def run_one(scenes: dict, n: int, seed: int, profile: str, out: Path, overrides=None) -> dict:
    """One reviewer (seed) with ``n`` marks a class: marks -> first model -> both collages."""
    marked_image, marked_truth = scenes["marked"]
    rng = np.random.default_rng([seed, n])
    marks = choose_marks(marked_truth, n, rng)
    marks += background_clicks(marked_truth, marked_image.shape,
                               BACKGROUND_PER_OBJECT_MARK * len(RENAME) * n, rng)  # fmt: skip
    cset, held, _ = marked_set(marked_image, marks)
    out.mkdir(parents=True, exist_ok=True)
    model_path, trained = first_model(cset, train_config(profile, seed, overrides), out)
    row = {"n_per_class": n, "seed": seed, "object_marks": len(RENAME) * n,
           "background_marks": BACKGROUND_PER_OBJECT_MARK * len(RENAME) * n,
           "held_out": held, "trained_samples": sum(len(c.placements) for c in cset.canvases),
           **trained}  # fmt: skip
    for name, (image, truth) in scenes.items():
        row[name] = scene_figures(model_path, image, truth)
    return row


def spread(values: list[float]) -> dict:
    return {"mean": round(statistics.fmean(values), 4), "min": min(values), "max": max(values),
            "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0}  # fmt: skip


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for n in sorted({r["n_per_class"] for r in rows}):
        of_n = [r for r in rows if r["n_per_class"] == n]
        out.append({"n_per_class": n, "seeds": sorted(r["seed"] for r in of_n),
                    "marked_f1": spread([r["marked"]["f1"] for r in of_n]),
                    "unmarked_f1": spread([r["unmarked"]["f1"] for r in of_n]),
                    "calibration_f1": spread([statistics.fmean(r["calibration_f1"].values())
                                              for r in of_n]),
                    "train_seconds": spread([r["train_seconds"] for r in of_n])})  # fmt: skip
    return out


def cell(value: dict) -> str:
    """mean (min-max) of a spread."""
    return f"{value['mean']:.3f} ({value['min']:.3f}-{value['max']:.3f})"


def table(summary: list[dict]) -> str:
    lines = [
        "| marks a class (+ background) | seeds | marked collage F1 | unmarked collage F1 "
        "| held-out marks F1 | train s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in summary:
        n = s["n_per_class"]
        background = BACKGROUND_PER_OBJECT_MARK * len(RENAME) * n
        figures = " | ".join(cell(s[k]) for k in ("marked_f1", "unmarked_f1", "calibration_f1"))
        seconds = s["train_seconds"]["mean"]
        lines.append(f"| {n} (+{background}) | {len(s['seeds'])} | {figures} | {seconds:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--marks", type=int, nargs="+", default=[10, 25, 50, 100],
                        help="objects marked per class")  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cols", type=int, default=48, help="marked collage width in tiles")
    parser.add_argument("--unmarked-cols", type=int, default=48,
                        help="unmarked (rocket) collage width in tiles")  # fmt: skip
    parser.add_argument("--profile", default="quick", help="the app's default: quick")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="a training option (tests only: the figures use none)")  # fmt: skip
    parser.add_argument("--tiles", default=str(DATA / "cifar10-jpg.zip"))
    parser.add_argument("--marked-target", default=str(DATA / "mona_lisa.jpg"))
    parser.add_argument("--unmarked-target", default=str(DATA / "rocket.jpg"))
    parser.add_argument("--work", default=str(REPO / "var" / "bench-scene-only"))
    parser.add_argument("--json", help="write (and resume from) the rows here")
    args = parser.parse_args(argv)
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    scenes = {
        "marked": collage_of(args.marked_target, args.tiles, "train", args.cols, work),
        "unmarked": collage_of(args.unmarked_target, args.tiles, "test", args.unmarked_cols, work),
    }
    setup = {name: {"size": f"{image.shape[1]} x {image.shape[0]}",
                    "objects": {c: len(objects_of(truth, c)) for c in RENAME.values()}}
             for name, (image, truth) in scenes.items()}  # fmt: skip
    print(json.dumps({"scenes": setup, "setup_seconds": round(time.perf_counter() - started, 1)}),
          flush=True)  # fmt: skip
    path = Path(args.json) if args.json else None
    rows = json.loads(path.read_text()).get("rows", []) if path and path.exists() else []
    done = {(r["n_per_class"], r["seed"]) for r in rows}
    for seed in args.seeds:
        for n in args.marks:
            if (n, seed) in done:
                continue
            began = time.perf_counter()
            row = run_one(scenes, n, seed, args.profile, work / f"n{n}-seed{seed}", overrides)
            row["wall_seconds"] = round(time.perf_counter() - began, 1)
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("n_per_class", "seed", "train_seconds",
                                                   "wall_seconds")}
                             | {s: row[s]["f1"] for s in scenes}), flush=True)  # fmt: skip
            if path:
                path.write_text(json.dumps(result(args, setup, rows), indent=1) + "\n")
    out = result(args, setup, rows)
    print(table(out["summary"]))
    if path:
        path.write_text(json.dumps(out, indent=1) + "\n")
    return out


def result(args, setup: dict, rows: list[dict]) -> dict:
    return {"command": "bench/bench_scene_only.py " + " ".join(sys.argv[1:]),
            "profile": args.profile, "cols": args.cols, "unmarked_cols": args.unmarked_cols,
            "classes": CLASSES, "background_marks_per_object_mark": BACKGROUND_PER_OBJECT_MARK,
            "background_max_iou": BACKGROUND_MAX_IOU, "scenes": setup, "rows": rows,
            "summary": summarise(rows)}  # fmt: skip


if __name__ == "__main__":
    main()

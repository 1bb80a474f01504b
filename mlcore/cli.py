"""`python -m mlcore`: the model side from a terminal, without the web app.

    python -m mlcore import-dataset SRC OUT.npz        (CIFAR-10 archive/folder, image folder/zip)
    python -m mlcore build-canvases DATASET.npz OUT_DIR
    python -m mlcore collage TARGET TILES OUT.png       (and OUT.json ground truth)
    python -m mlcore train CANVAS_DIR OUT_DIR           (checkpoint + model.onnx)
    python -m mlcore score MODEL.onnx SCENE OUT.npz     (probability grid; --parquet too)
    python -m mlcore evaluate GRID.npz GROUND_TRUTH.json [--model MODEL.onnx]
    python -m mlcore ceiling GROUND_TRUTH.json --step 16   (a perfect classifier's figures)
    python -m mlcore upload STORAGE_URL LOCAL KEY / download STORAGE_URL KEY LOCAL
    python -m mlcore demo [--json FILE]                 (all of the above on ../shared/data)
    python -m mlcore pretrain [--out DIR] [--resume]    (the starting model and its card)

Every long step shows a progress bar (a few plain lines when stderr is a log file); every command
ends with a one-screen summary. Errors in the input (a missing file, an unknown class) end with one
line saying what to do, not a traceback."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from mlcore.data.canvases import CALIBRATION_FRACTION
from mlcore.progress import terminal_progress


class CliError(Exception):
    """A mistake in the command line or its inputs, reported in one line."""


def _summary(title: str, rows: dict) -> None:
    width = max(len(k) for k in rows) if rows else 0
    print(f"\n== {title}")
    for key, value in rows.items():
        print(f"  {key:<{width}}  {value}")


def _mapping(spec: str | None, negative: str):
    from mlcore.data.datasets import ClassMapping

    if spec is None:
        return ClassMapping.cifar_default() if negative == "negative" else None
    return ClassMapping.parse(spec, negative=negative or None)


# -- commands ----------------------------------------------------------------------------------


def cmd_import_dataset(args) -> dict:
    from mlcore.data.datasets import apply_mapping, load_dataset

    started = time.perf_counter()
    ds = load_dataset(args.source, split=args.split, progress=terminal_progress("loading images"))
    mapping = _mapping(args.map, args.negative)
    if mapping is not None and not args.keep_classes:
        ds = apply_mapping(ds, mapping)
    ds.save_npz(args.out)
    rows = {
        "images": len(ds),
        "saved to": args.out,
        "seconds": f"{time.perf_counter() - started:.1f}",
    }
    rows.update({f"class {name}": n for name, n in ds.counts().items()})
    rows["skipped"] = len(ds.skipped)
    for member, reason in ds.skipped[:10]:
        print(f"  skipped {member}: {reason}", file=sys.stderr)
    return rows


def cmd_build_canvases(args) -> dict:
    from mlcore.data.canvases import build_canvas_set
    from mlcore.data.datasets import LabelledImages

    started = time.perf_counter()
    ds = LabelledImages.load_npz(args.dataset)
    cset = build_canvas_set(
        ds,
        canvas_size=args.canvas_size,
        n_windows_target=args.windows,
        window=args.window,
        step=args.step,
        seed=args.seed,
        progress=terminal_progress("building canvases"),
        layout=args.layout,
        calibration_fraction=args.calibration_fraction,
        meta={"dataset": str(args.dataset)},
    )
    cset.save(args.out)
    # Mixed canvases hold every class, so they are counted by kind ("mixed"), not per class.
    per_kind = Counter(canvas.class_name for canvas in cset.canvases)
    return {
        "canvases": dict(per_kind),
        f"windows at step {args.step}": f"{cset.n_windows(args.window, args.step):,}",
        "bytes": f"{cset.nbytes():,}",
        "saved to": args.out,
        "seconds": f"{time.perf_counter() - started:.1f}",
    }


def _tiles(path: str, mapping_spec: str | None = None, negative: str = "negative"):
    from mlcore.data.datasets import LabelledImages, apply_mapping, load_dataset

    if path.endswith(".npz"):
        return LabelledImages.load_npz(path)
    return apply_mapping(load_dataset(path, split="test"), _mapping(mapping_spec, negative))


def cmd_collage(args) -> dict:
    from mlcore.data.collage import make_collage

    started = time.perf_counter()
    collage = make_collage(
        args.target,
        _tiles(args.tiles, getattr(args, "map", None), getattr(args, "negative", "negative")),
        cols=args.cols,
        mode=args.mode,
        seed=args.seed,
        progress=terminal_progress("placing tiles"),
    )
    gt_path = Path(args.ground_truth or Path(args.out).with_suffix(".json"))
    collage.save(args.out, gt_path)
    counts: dict[str, int] = {}
    for box in collage.ground_truth:
        counts[box["label"]] = counts.get(box["label"], 0) + 1
    return {
        "size": f"{collage.width} x {collage.height}",
        "tiles placed": len(collage.ground_truth),
        "per class": counts,
        "image": args.out,
        "ground truth": gt_path,
        "seconds": f"{time.perf_counter() - started:.1f}",
    }


def parse_settings(items: list[str] | None) -> dict:
    """``--set key=value`` training options (values as JSON where they parse, else text)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--set takes key=value (e.g. lr=0.05), got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def start_of(args, window: int = 32):
    """(initial state, what it is) of a `train`: ``--init``, the starting model, or scratch."""
    from mlcore.model import starting_model
    from mlcore.train.profiles import profile_start

    if args.init is not None:
        return args.init, {"kind": "fine-tune", "name": str(args.init)}
    if profile_start(args.profile, getattr(args, "from_scratch", False)) == "scratch":
        return None, starting_model.SCRATCH
    return starting_model.starting_checkpoint(window), starting_model.describe()


def cmd_train(args) -> dict:
    from mlcore.data.canvases import CanvasSet
    from mlcore.inference.int8_sibling import check_words
    from mlcore.model.scoring_files import export_scoring_files
    from mlcore.train.profiles import profile_config
    from mlcore.train.training import train

    init, started_from = start_of(args)
    flags = {"steps": args.steps, "depth": args.depth, "width": args.width,
             "batch_size": args.batch_size, "device": args.device, "seed": args.seed}  # fmt: skip
    settings = parse_settings(getattr(args, "set", None))
    flags = {k: v for k, v in flags.items() if v is not None}  # given on the command line
    twice = sorted(set(settings) & set(flags))
    if twice:
        key = twice[0]
        raise CliError(f"{key} is given twice (--{key.replace('_', '-')} and --set "
                       f"{key}=...): give it once")  # fmt: skip
    config = profile_config(
        args.profile,
        finetune=args.init is not None,
        start=started_from["kind"] == "starting-model",
        **(settings | flags),
    )
    cset = CanvasSet.load(args.canvases)
    started = time.perf_counter()
    print(f"[train] starting from: {started_from['name']}")
    result = train(
        cset, cset.classes, config, progress=terminal_progress("training"), init_state=init
    )
    seconds = time.perf_counter() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.save_checkpoint(out / "checkpoint.pt")
    model_path, dense = export_scoring_files(
        result.model, out / "model.onnx", cset.classes, result.config
    )
    calibration = None
    if getattr(args, "calibrate", True) and cset.calibration is not None:
        from mlcore.inference.calibration import calibrate_model_file

        calibration = calibrate_model_file(model_path, cset)
    info = {
        "profile": args.profile, "config": result.config.to_dict(),
        "train_seconds": round(seconds, 1), "windows_per_s": round(result.windows_per_s, 1),
        "val_accuracy": result.val_accuracy, "calibration": calibration,
        "started_from": started_from, "precision": result.precision,
    }  # fmt: skip
    (out / "train.json").write_text(json.dumps(info, indent=2))
    return {
        "classes": cset.classes,
        "started from": started_from["name"],
        "steps": result.config.total_steps(1),
        "windows/s": f"{result.windows_per_s:,.0f}",
        "precision": f"{result.precision['dtype']} ({result.precision['reason']})",
        "validation accuracy": f"{result.val_accuracy:.3f}" if result.val_accuracy else "-",
        "training seconds": f"{seconds:.1f}",
        "thresholds": calibration["thresholds"] if calibration else "0.9 (not calibrated)",
        "int8 copy": check_words((calibration or {}).get("int8")),
        "files": ", ".join(str(f) for f in (out / "checkpoint.pt", model_path, dense) if f),
        "scoring": "dense (trained for it)" if dense else "per window",
    }


def cmd_score(args) -> dict:
    from mlcore.inference.int8_sibling import scoring_file
    from mlcore.inference.model_file_scoring import score_with_model_file
    from mlcore.inference.scoring import load_scorer, scene_geometry
    from mlcore.ingest.scenes import open_scene

    scorer = load_scorer(args.model)
    scene = open_scene(args.scene)
    started = time.perf_counter()
    # --step is at the model's scale; windows of --object-size scene pixels are resized to it.
    size, step = scene_geometry(int(scorer.window), args.object_size, args.step)
    # Its int8 copy on a CPU with int8 units; densely where the file says it can be.
    try:
        chosen = scoring_file(args.model, getattr(args, "precision", None))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    grid, dense = score_with_model_file(chosen, scene, step, scene_window=size,
                                        batch_size=args.batch_size,
                                        progress=terminal_progress("scoring"))  # fmt: skip
    seconds = time.perf_counter() - started
    grid.save(args.out)
    rows = {
        "scene": f"{scene.width} x {scene.height}",
        "windows": f"{grid.probs.shape[0] * grid.probs.shape[1]:,}",
        "windows/s": f"{grid.probs.shape[0] * grid.probs.shape[1] / seconds:,.0f}",
        "scoring": f"dense ({dense.name})" if dense is not None else "per window",
        "precision": f"int8 ({chosen.name})" if chosen != Path(args.model) else "fp32",
        "grid": args.out,
    }
    if args.parquet:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table(grid.to_rows()), args.parquet, compression="zstd")
        rows["parquet"] = args.parquet
    return rows


def evaluate_grid(grid, truth: list[dict], thresholds, iou, negative: str, coco=True) -> dict:
    """Object (headline) and window (diagnostic) metrics; the CLI's errors in one line."""
    from mlcore.eval.evaluation import evaluate_grid as evaluate

    if negative not in grid.classes:
        raise CliError(f"negative class {negative!r} is not one of the model's {grid.classes}")
    return evaluate(grid, truth, thresholds=thresholds, negative=negative, iou=iou, coco=coco)


def _metric_rows(metrics: dict) -> dict:
    rows = {}
    for level in ("window", "object"):
        for name, values in metrics[level].get("per_class", {}).items():
            rows[f"{level} {name}"] = (
                f"P {values['precision']:.3f}  R {values['recall']:.3f}  F1 {values['f1']:.3f}"
            )
        overall = metrics[level].get("overall") or metrics[level].get("macro")
        if overall:
            rows[f"{level} overall"] = (
                f"P {overall['precision']:.3f}  R {overall['recall']:.3f}  F1 {overall['f1']:.3f}"
            )
    if "accuracy" in metrics["window"]:
        rows["window accuracy"] = f"{metrics['window']['accuracy']:.3f}"
    if "coco" in metrics:
        rows["COCO AP@0.5 / AP@[.5:.95]"] = (
            f"{metrics['coco']['ap50']:.3f} / {metrics['coco']['ap']:.3f}"
        )
    rows["merged detections"] = metrics["detections"]
    return rows


def cmd_evaluate(args) -> dict:
    from mlcore.data.collage import load_ground_truth
    from mlcore.inference.postprocess import PUBLISHED_THRESHOLD
    from mlcore.inference.scoring import ScoreGrid

    model_thresholds = None
    if args.model:
        from mlcore.model.onnx_file import read_metadata

        model_thresholds = read_metadata(args.model)["thresholds"]
    grid = ScoreGrid.load(args.grid)
    thresholds = _thresholds_arg(args.threshold, model_thresholds)
    metrics = evaluate_grid(
        grid, load_ground_truth(args.ground_truth), thresholds, args.iou, args.negative
    )
    # Say which thresholds made these figures: a number is every positive class's threshold.
    positives = [c for c in grid.classes if c != args.negative]
    if not isinstance(thresholds, dict):
        thresholds = dict.fromkeys(positives, float(thresholds))
    if args.threshold not in (None, "calibrated"):
        source = f"--threshold {args.threshold}"
    elif model_thresholds:
        source = f"calibrated, stored in {args.model}"
    elif args.model:
        source = f"published {PUBLISHED_THRESHOLD} ({args.model} has no calibrated thresholds)"
    else:
        source = f"published {PUBLISHED_THRESHOLD} (no --model given)"
    metrics["thresholds"] = {c: float(thresholds.get(c, PUBLISHED_THRESHOLD)) for c in positives}
    metrics["thresholds_source"] = source
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2))
    shown = ", ".join(f"{c} {t:.3f}" for c, t in metrics["thresholds"].items())
    return {"thresholds": f"{shown}  ({source})"} | _metric_rows(metrics)


def cmd_upload(args) -> dict:
    from mlcore.storage import storage_from_url, upload_file

    storage = storage_from_url(args.storage_url, create=True)
    size = upload_file(storage, args.local, args.key, progress=terminal_progress("uploading"))
    return {"uploaded": f"{size:,} bytes", "to": storage.url(args.key)}


def cmd_download(args) -> dict:
    from mlcore.storage import download_file, storage_from_url

    storage = storage_from_url(args.storage_url)
    path = download_file(storage, args.key, args.local, progress=terminal_progress("downloading"))
    return {"downloaded": f"{path.stat().st_size:,} bytes", "to": path}


def _thresholds_arg(value: str | None, model_thresholds: dict | None):
    """--threshold: a number, "calibrated" (the model's own, else 0.9), or None (= calibrated)."""
    if value in (None, "calibrated"):
        return model_thresholds if model_thresholds else 0.9
    try:
        number = float(value)
    except ValueError as exc:
        raise CliError(f"--threshold must be a number or 'calibrated', got {value!r}") from exc
    if not 0 <= number <= 1:
        raise CliError(f"--threshold must lie in [0, 1], got {number}")
    return number


def _overall(metrics: dict) -> dict:
    o = metrics["object"]["overall"]
    return {k: round(o[k], 4) for k in ("precision", "recall", "f1", "tp", "fp", "fn")}


def cmd_ceiling(args) -> dict:
    from mlcore.data.collage import load_ground_truth
    from mlcore.eval.evaluation import ceiling

    truth = load_ground_truth(args.ground_truth)
    classes = [c for c in args.classes.split(",") if c]
    if args.negative not in classes:
        classes.append(args.negative)
    result = ceiling(truth, args.step, classes, args.negative, args.window, args.iou)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    rows = {"step": args.step, "NMS IoU": f"{result['nms_iou']:.3f}", "windows": result["windows"]}
    rows |= _metric_rows(result)
    # The three oracles side by side: only the ranked ones bound COCO AP (evaluation.ORACLES).
    for name, oracle in result["oracles"].items():
        o, coco = oracle["object"]["overall"], oracle["coco"]
        rows[f"oracle {name}"] = (
            f"P {o['precision']:.3f}  R {o['recall']:.3f}  F1 {o['f1']:.3f}  "
            f"AP@0.5 {coco['ap50']:.3f}  AP@[.5:.95] {coco['ap']:.3f}  ({oracle['description']})"
        )
    return rows


def cmd_pretrain(args) -> dict:
    from mlcore.data.datasets import find_shared_data
    from mlcore.train.pretrain import command_line, pretrain
    from mlcore.train.profiles import profile_config

    source = args.data
    if source is None:
        shared = find_shared_data()
        source = shared / "cifar10-jpg.zip" if shared else None
    if source is None or not Path(source).exists():
        raise CliError("no CIFAR-10 data: pass --data (cifar10-jpg.zip, or the python archive)")
    config = profile_config(args.profile, steps=args.steps, device=args.device,
                            batch_size=args.batch_size)  # fmt: skip
    card = pretrain(
        source, args.out, config, work_dir=None, seed=args.seed,
        limit_per_class=args.limit_per_class, command=command_line(sys.argv[1:]),
        progress_for=terminal_progress, checkpoint_every=args.checkpoint_every,
        resume=args.resume,
    )  # fmt: skip
    summary = card["figures"]["summary"]
    return {
        "starting model": args.out,
        "steps": f"{card['steps']:,} x {card['batch_size']}",
        "train minutes": f"{card['train_seconds'] / 60:.1f} on {card['device']}",
        "aligned 10-way accuracy": f"{summary['aligned_10way_accuracy']:.3f}",
        "aligned 3-way balanced accuracy": f"{summary['aligned_3way_balanced_accuracy']:.3f}",
        "calibration-scene F1 (car, boat)": summary["calibration_f1"],
        "card": Path(args.out) / "CARD.md",
    }


def cmd_demo(args) -> dict:
    """The published pipeline end to end on the shared data: CIFAR-10 -> scene-like canvases ->
    ResNet -> thresholds calibrated on held-out images -> Mona Lisa collage of the test set ->
    scoring -> metrics, and the same model on a second collage (rocket.jpg) that calibration
    never sees. Each step reuses its output when present, so a second run only repeats what is
    missing."""
    from mlcore.data.canvases import CanvasSet
    from mlcore.data.collage import demo_collage, load_ground_truth
    from mlcore.data.datasets import ClassMapping, find_shared_data, load_dataset
    from mlcore.eval.aligned_tiles import aligned_accuracy
    from mlcore.eval.evaluation import ceiling
    from mlcore.inference.calibration import calibrate_model_file
    from mlcore.inference.scoring import ScoreGrid, load_scorer
    from mlcore.model.onnx_file import read_metadata

    data = Path(args.data) if args.data else find_shared_data()
    if data is None or not (data / "cifar10-jpg.zip").exists():
        raise CliError(
            "no CIFAR-10 data: pass --data FOLDER holding cifar10-jpg.zip and mona_lisa.jpg "
            "(or set MLCORE_SHARED_DATA)"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def step(name, done_path, func, namespace):
        if Path(done_path).exists():
            print(f"[{name}] reusing {done_path}")
            return
        started = time.perf_counter()
        _summary(name, func(argparse.Namespace(**namespace)))
        timings[name] = time.perf_counter() - started

    step("import", out / "train.npz", cmd_import_dataset, {
        "source": data / "cifar10-jpg.zip", "out": out / "train.npz", "split": "train",
        "map": None, "negative": "negative", "keep_classes": False,
    })  # fmt: skip
    step("canvases", out / "canvases" / "manifest.json", cmd_build_canvases, {
        "dataset": out / "train.npz", "out": out / "canvases", "canvas_size": 1024,
        "windows": args.windows, "window": 32, "step": 8, "seed": 0, "layout": "mixed",
        "calibration_fraction": CALIBRATION_FRACTION,
    })  # fmt: skip
    model_dir = out / ("model-scratch" if args.from_scratch else "model")
    model = model_dir / "model.onnx"
    step("train", model, cmd_train, {
        "canvases": out / "canvases", "out": model_dir, "profile": args.profile,
        "init": None, "steps": args.steps, "depth": None, "width": None, "batch_size": None,
        "device": None, "seed": args.seed, "calibrate": True, "from_scratch": args.from_scratch,
        "set": args.set,
    })  # fmt: skip
    meta = read_metadata(model)
    if not meta["thresholds"]:
        calibrate_model_file(model, CanvasSet.load(out / "canvases"))
        meta = read_metadata(model)
    scenes = {"mona_lisa": "mona_lisa.jpg", "rocket": "rocket.jpg"}
    results: dict[str, dict] = {}
    for name, target in scenes.items():
        picture = out / f"collage-{name}.png"
        if not picture.exists():
            started = time.perf_counter()
            collage = demo_collage(
                data, cols=args.cols, progress=terminal_progress(f"collage {name}"), target=target
            )
            collage.save(picture, picture.with_suffix(".json"))
            timings[f"collage {name}"] = time.perf_counter() - started
        grid_path = out / f"grid-{name}.npz"
        step(f"score {name}", grid_path, cmd_score, {
            "model": model, "scene": picture, "out": grid_path, "step": 16,
            "batch_size": 1024, "parquet": None, "object_size": None,
            "precision": "fp32",  # the reference figures, the same on every CPU
        })  # fmt: skip
        grid, truth = ScoreGrid.load(grid_path), load_ground_truth(picture.with_suffix(".json"))
        results[name] = {
            "calibrated": evaluate_grid(grid, truth, meta["thresholds"], None, "negative"),
            "published": evaluate_grid(grid, truth, 0.9, None, "negative", coco=False),
            "ceiling": ceiling(truth, 16),
        }
    started = time.perf_counter()
    test = load_dataset(data / "cifar10-jpg.zip", split="test")
    aligned = aligned_accuracy(load_scorer(model), test, ClassMapping.cifar_default())
    timings["aligned accuracy"] = time.perf_counter() - started
    train_info = json.loads((model_dir / "train.json").read_text())
    main, heldout = results["mona_lisa"], results["rocket"]
    summary = {
        "scene": "mona_lisa",
        "object": main["calibrated"]["object"],
        "coco": main["calibrated"]["coco"],
        "window": main["calibrated"]["window"],
        "thresholds": meta["thresholds"],
        "calibration": meta.get("calibration"),
        "int8": meta.get("int8_check"),  # the int8 copy's check (figures here are fp32's)
        "published_threshold": {"threshold": 0.9, "object": _overall(main["published"])},
        "aligned_accuracy": aligned["balanced_accuracy"],
        "aligned": aligned,
        "ceiling": _overall(main["ceiling"]),
        "heldout": {
            "scene": "rocket",
            "object": heldout["calibrated"]["object"],
            "coco": heldout["calibrated"]["coco"],
            "published_threshold": {"threshold": 0.9, "object": _overall(heldout["published"])},
            "ceiling": _overall(heldout["ceiling"]),
        },
        "train_seconds": train_info["train_seconds"],
        "started_from": train_info.get("started_from"),
        "train": train_info,
        "nms_iou": main["calibrated"]["nms_iou"],
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    rows = {"started from": (train_info.get("started_from") or {}).get("name", "-"),
            "thresholds (calibrated)": meta["thresholds"]}  # fmt: skip
    for name, res in results.items():
        for kind in ("calibrated", "published"):
            o = res[kind]["object"]["overall"]
            rows[f"{name} object ({kind})"] = (
                f"P {o['precision']:.3f}  R {o['recall']:.3f}  F1 {o['f1']:.3f}"
            )
        coco = res["calibrated"]["coco"]
        rows[f"{name} COCO AP@0.5 / AP@[.5:.95]"] = f"{coco['ap50']:.3f} / {coco['ap']:.3f}"
        rows[f"{name} ceiling (oracle)"] = f"F1 {res['ceiling']['object']['overall']['f1']:.3f}"
    rows["aligned balanced accuracy"] = f"{aligned['balanced_accuracy']:.3f}"
    rows["trucks called car"] = aligned["called_as"].get("truck", {}).get("car", "-")
    rows["airplanes called boat"] = aligned["called_as"].get("airplane", {}).get("boat", "-")
    rows["train seconds"] = f"{train_info['train_seconds']:.0f}"
    rows.update({f"{k} seconds": f"{v:.1f}" for k, v in timings.items()})
    rows["metrics file"] = out / "metrics.json"
    return rows


# -- argument parsing --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mlcore", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("import-dataset", help="load labelled images into a .npz")
    p.add_argument("source", help="CIFAR-10 python archive or folder, image folder or zip")
    p.add_argument("out", help="output .npz")
    p.add_argument("--split", default=None, help="train, test (default: all)")
    p.add_argument("--map", help="source:project classes, e.g. automobile:car,ship:boat")
    p.add_argument("--negative", default="negative", help="class for every unmapped source class")
    p.add_argument("--keep-classes", action="store_true", help="keep the source classes")
    p.set_defaults(func=cmd_import_dataset)

    p = sub.add_parser("build-canvases", help="scatter each class's images on canvases")
    p.add_argument("dataset", help=".npz from import-dataset")
    p.add_argument("out", help="output folder (canvases + manifest.json)")
    p.add_argument("--canvas-size", type=int, default=1024)
    p.add_argument("--windows", type=int, default=None, help="total windows to provide")
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--step", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--layout",
        default="mixed",
        choices=["mixed", "scatter"],
        help="mixed: scene-like (default); scatter: one class per canvas",
    )
    p.add_argument(
        "--calibration-fraction",
        type=float,
        default=CALIBRATION_FRACTION,
        help="share of each class held out for the calibration scene",
    )
    p.set_defaults(func=cmd_build_canvases)

    p = sub.add_parser("collage", help="a photomosaic of TARGET from a tile library")
    p.add_argument("target", help="target picture, e.g. mona_lisa.jpg")
    p.add_argument("tiles", help="tile library: .npz, or a CIFAR-10 zip/archive (test split)")
    p.add_argument("out", help="output picture (.png)")
    p.add_argument("--ground-truth", help="ground truth JSON (default: OUT with .json)")
    p.add_argument("--cols", type=int, default=80)
    p.add_argument("--map", help="source:project classes of the tiles (default automobile:car,"
                   "ship:boat)")  # fmt: skip
    p.add_argument("--negative", default="negative", help="class for every unmapped tile class")
    p.add_argument("--mode", default="collage", choices=["collage", "grid"])
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_collage)

    p = sub.add_parser("train", help="train the window classifier on canvases")
    p.add_argument("canvases", help="canvas folder from build-canvases")
    p.add_argument("out", help="output folder (checkpoint.pt, model.onnx)")
    p.add_argument("--profile", default="quick", help="tiny, quick (CPU) or full (GPU)")
    p.add_argument("--init", help="fine-tune from this checkpoint")
    p.add_argument("--from-scratch", action="store_true",
                   help="random weights instead of the shipped starting model")  # fmt: skip
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a training option (TrainConfig field), e.g. lr=0.05")  # fmt: skip
    p.add_argument("--steps", type=int)
    p.add_argument("--depth", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", help="auto, cpu, cuda")
    p.add_argument("--seed", type=int, help="default: the profile's (0)")
    p.add_argument(
        "--no-calibrate",
        dest="calibrate",
        action="store_false",
        help="keep the published 0.9 (no thresholds stored in the model)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("score", help="score every window of a scene")
    p.add_argument("model", help="model.onnx")
    p.add_argument("scene", help="picture or .npy scene")
    p.add_argument("out", help="output probability grid .npz")
    p.add_argument("--step", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--parquet", help="also write the scores as Parquet")
    p.add_argument("--object-size", type=int, default=None,
                   help="the objects' size on the scene in pixels (default: the model's window); "
                   "windows of that size are resized to the model's")  # fmt: skip
    p.add_argument("--precision", choices=("auto", "fp32", "int8"), default=None,
                   help="auto (default, or $MLCORE_SCORING_PRECISION): the file's int8 copy on a "
                   "CPU with int8 units (VNNI, AMX), else fp32")  # fmt: skip
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("evaluate", help="precision/recall/F1 of a grid against ground truth")
    p.add_argument("grid")
    p.add_argument("ground_truth")
    p.add_argument(
        "--threshold", default=None,
        help="a number (0.9 = the published pipeline) or 'calibrated' (default: the --model's "
        "calibrated thresholds, else 0.9)",
    )  # fmt: skip
    p.add_argument("--model", help="model.onnx whose calibrated thresholds to use")
    p.add_argument("--iou", type=float, default=None, help="NMS IoU (default: from window/step)")
    p.add_argument("--negative", default="negative")
    p.add_argument("--json", help="write the metrics as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "ceiling", help="object P/R/F1 and COCO AP of perfect window classifiers (three oracles)"
    )
    p.add_argument("ground_truth", help="ground truth JSON of a scene (e.g. a collage's)")
    p.add_argument("--step", type=int, default=16)
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--classes", default="car,boat", help="positive classes, comma-separated")
    p.add_argument("--negative", default="negative")
    p.add_argument("--iou", type=float, default=None, help="NMS IoU (default: from window/step)")
    p.add_argument("--json", help="write the metrics as JSON")
    p.set_defaults(func=cmd_ceiling)

    p = sub.add_parser("upload", help="ingress: a local file into storage (local or abfss://)")
    p.add_argument("storage_url")
    p.add_argument("local")
    p.add_argument("key")
    p.set_defaults(func=cmd_upload)

    p = sub.add_parser("download", help="egress: a key from storage to a local file")
    p.add_argument("storage_url")
    p.add_argument("key")
    p.add_argument("local")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("pretrain", help="train the starting model (CIFAR-10 train split)")
    p.add_argument("--data", help="CIFAR-10 zip/archive (default: ../shared/data)")
    p.add_argument("--out", default="var/pretrain", help="folder for the model and its card")
    p.add_argument("--profile", default="pretrain", help="pretrain, or tiny for a smoke run")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", help="auto, cpu, cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit-per-class", type=int, help="use only N train images a class")
    p.add_argument(
        "--checkpoint-every", type=int, default=250,
        help="write OUT/resume.pt every N steps (0: never); default 250",
    )  # fmt: skip
    p.add_argument(
        "--resume", action="store_true",
        help="continue the run in OUT from its last checkpoint (same options)",
    )  # fmt: skip
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("demo", help="the whole pipeline on ../shared/data, with metrics")
    p.add_argument("--data", help="folder with cifar10-jpg.zip and mona_lisa.jpg")
    p.add_argument("--out", default="var/mlcore-demo")
    p.add_argument("--profile", default="quick")
    p.add_argument("--steps", type=int)
    p.add_argument("--windows", type=int, default=None, help="training windows on the canvases")
    p.add_argument("--cols", type=int, default=80, help="collage width in tiles")
    p.add_argument("--seed", type=int, help="training seed (default: the profile's, 0)")
    p.add_argument("--from-scratch", action="store_true",
                   help="first model from random weights, not the starting model")  # fmt: skip
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a training option of the first model, e.g. lr=0.05")  # fmt: skip
    p.add_argument("--json", help="also write the demo's figures to this JSON file")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from mlcore.storage import StorageError

    args = build_parser().parse_args(argv)
    expected = (CliError, StorageError, FileNotFoundError, ValueError, PermissionError)
    try:
        rows = args.func(args)
    except expected as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    _summary(args.command, rows)
    return 0

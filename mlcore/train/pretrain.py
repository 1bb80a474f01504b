"""Train the starting model once: ``python -m mlcore pretrain`` (``make pretrain``).

A scene model on the CIFAR-10 *train* split, one output head per CIFAR-10 class, on mixed
(scene-like) canvases, so that any project whose classes are unions of CIFAR-10 classes maps onto
it. 5% of the train images are held out as the calibration scene; the test split (what the demo
collages are made of) is never trained on, only measured on, as aligned tiles. Writes the
checkpoint, the ONNX file and the model card (``card.json`` and ``CARD.md``: data, command,
seed, commit, steps, wall time, device, figures, sha256 of each file).
"""

from __future__ import annotations

import json
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from mlcore.model.starting_model import (
    CARD_FILE,
    CARD_MARKDOWN,
    CHECKPOINT_FILE,
    ONNX_FILE,
    as_project_model,
    sha256_of,
)

NAME = "cifar10-scene-resnet20"
# The demo's question, for the card's 3-way figures: car = automobile, boat = ship, the rest
# negative. The model itself knows nothing of it.
DEMO_CLASSES = ["car", "boat", "negative"]
DEMO_HEADS = {"automobile": "car", "ship": "boat"}


def git_commit() -> str:
    """The commit the command ran at, with ``-dirty`` when the tree had changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def pretrain(
    source,
    out_dir,
    config: dict,
    work_dir=None,
    seed: int = 0,
    limit_per_class: int | None = None,
    command: str | None = None,
    progress_for=None,
    log=print,
    checkpoint_every: int = 0,
    resume: bool = False,
) -> dict:
    """Pretrain on ``source`` (a CIFAR-10 zip, archive or image folder with train/ and test/)
    and write the starting model's files and card into ``out_dir``. Returns the card.

    ``checkpoint_every`` steps the training state goes to ``out_dir/resume.pt``; ``resume``
    continues from it (same weights as one uninterrupted run), so a run of hours can be done in
    pieces. The file is removed once the card is written."""
    from mlcore.data.canvases import CALIBRATION_FRACTION, build_canvas_set
    from mlcore.data.datasets import ClassMapping, load_dataset
    from mlcore.eval.aligned_tiles import aligned_accuracy
    from mlcore.inference.calibration import calibrate_model_file
    from mlcore.inference.scoring import OnnxScorer
    from mlcore.model.export import export_onnx
    from mlcore.progress import null_progress
    from mlcore.train.training import (
        RESUME_FILE,
        TrainConfig,
        read_checkpoint,
        resolve_device,
        train,
    )

    progress_for = progress_for or (lambda desc: null_progress)
    out_dir, started = Path(out_dir), time.perf_counter()
    commit = git_commit()  # the code that runs: read now, the tree may move on meanwhile
    config = TrainConfig.from_dict(dict(config) | {"seed": seed})
    if resume and not (out_dir / RESUME_FILE).is_file():  # say so before the long part
        raise FileNotFoundError(
            f"nothing to resume: {out_dir} has no {RESUME_FILE}; start again without --resume"
        )
    images = load_dataset(source, split="train", progress=progress_for("loading train split"))
    if limit_per_class:
        images = _first_per_class(images, limit_per_class)
    classes = list(images.class_names)
    missing = sorted(set(DEMO_HEADS) - set(classes))
    if missing:
        raise ValueError(f"{source} has no class(es) {missing}: the starting model is CIFAR-10's")
    cset = build_canvas_set(
        images, classes, layout="mixed", calibration_fraction=CALIBRATION_FRACTION, seed=seed,
        progress=progress_for("canvases"),
    )  # fmt: skip
    log(f"pretrain: {len(images)} train images, {len(cset.canvases)} canvases, classes {classes}")
    out_dir.mkdir(parents=True, exist_ok=True)
    result = train(
        cset, classes, config, progress=progress_for("pretraining"), log=log,
        checkpoint_dir=out_dir, checkpoint_every=checkpoint_every, resume=resume,
    )  # fmt: skip
    # With a resume: this process's time plus the earlier pieces' training time.
    train_seconds = time.perf_counter() - started + result.earlier_seconds
    checkpoint = result.save_checkpoint(out_dir / CHECKPOINT_FILE)
    onnx_path = export_onnx(result.model, out_dir / ONNX_FILE, classes, config.window,
                            {"starting_model": NAME})  # fmt: skip

    test = load_dataset(source, split="test", progress=progress_for("loading test split"))
    identity = ClassMapping({c: c for c in classes}, negative=None)
    ten_way = aligned_accuracy(OnnxScorer(onnx_path), test, identity)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        demo_path = Path(tmp) / "demo-classes.onnx"
        demo_model = as_project_model(read_checkpoint(checkpoint), DEMO_CLASSES, DEMO_HEADS)
        export_onnx(demo_model, demo_path, DEMO_CLASSES, config.window)
        three_way = aligned_accuracy(OnnxScorer(demo_path), test, ClassMapping.cifar_default())
        calibration = None
        if cset.calibration is not None:
            image, truth = cset.calibration
            mapped = [b | {"label": DEMO_HEADS.get(b["label"], "negative")} for b in truth]
            calibration = calibrate_model_file(  # a figure for the card: no int8 copy
                demo_path, SimpleNamespace(calibration=(image, mapped)), int8=False
            )

    card = {
        "name": NAME,
        "what": "CIFAR-style ResNet, one output head per CIFAR-10 class, trained on mixed "
        "(scene-like) canvases: a window's class is the tile under its centre",
        "data": {
            "source": Path(str(source)).name,
            "split": "train",
            "train_images": len(images) - (len(cset.calibration[1]) if cset.calibration else 0),
            "calibration_images": len(cset.calibration[1]) if cset.calibration else 0,
            "test_split": "never trained on or calibrated on: only the aligned-tile figures",
            "classes": classes,
            "canvases": len(cset.canvases),
            "limit_per_class": limit_per_class,
        },
        "command": command or "python -m mlcore pretrain",
        "seed": seed,
        "git_commit": commit,
        "steps": config.total_steps(1),
        "batch_size": config.batch_size,
        "windows_seen": config.total_steps(1) * config.batch_size,
        "train_seconds": round(train_seconds, 1),
        "windows_per_s": round(result.windows_per_s, 1),
        "device": device_name(str(resolve_device(config.device))),
        "precision": result.precision,
        "resumed_from_step": result.resumed_from_step,
        "software": {"python": sys.version.split()[0], "torch": _torch_version()},
        "config": result.config.to_dict(),
        "val_accuracy_10way": result.val_accuracy,
        "figures": {
            "aligned_10way": _brief(ten_way),
            "aligned_3way_car_boat_negative": _brief(three_way),
            "calibration_scene_car_boat": calibration,
            "summary": {
                "aligned_10way_accuracy": round(ten_way["accuracy"], 4),
                "aligned_3way_balanced_accuracy": round(three_way["balanced_accuracy"], 4),
                "calibration_f1": (calibration or {}).get("f1"),
            },
        },
        "files": {
            p.name: {"sha256": sha256_of(p), "bytes": p.stat().st_size}
            for p in (checkpoint, onnx_path)
        },
    }
    (out_dir / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    (out_dir / CARD_MARKDOWN).write_text(card_markdown(card))
    (out_dir / RESUME_FILE).unlink(missing_ok=True)  # the finished files supersede it
    return card


def _first_per_class(images, n: int):
    """The first ``n`` images of every class (a tiny pretrain for tests)."""
    import numpy as np

    keep = np.concatenate([np.flatnonzero(images.labels == k)[:n]
                           for k in range(len(images.class_names))])  # fmt: skip
    return images.subset(np.sort(keep))


def _brief(aligned: dict) -> dict:
    keys = ("accuracy", "balanced_accuracy", "recall", "images")
    return {k: aligned[k] for k in keys} | {"called_as": aligned["called_as"]}


def _torch_version() -> str:
    import torch

    return torch.__version__


def card_markdown(card: dict) -> str:
    """The short human card beside card.json."""
    fig, data = card["figures"], card["data"]
    ten, three = fig["aligned_10way"], fig["aligned_3way_car_boat_negative"]
    calibration = fig.get("calibration_scene_car_boat") or {}
    per_class = ", ".join(f"{c} {r:.3f}" for c, r in ten["recall"].items())
    chosen = card.get("precision")  # cards from before the choice was recorded have none
    precision = f", {chosen['dtype']} ({chosen['reason']})" if chosen else ""
    lines = [
        f"# Starting model `{card['name']}`",
        "",
        card["what"] + ".",
        "",
        f"- **Data**: {data['source']}, split `train` only ({data['train_images']:,} images on "
        f"{data['canvases']} canvases; {data['calibration_images']:,} held out as the "
        "calibration scene). The test split, which the demo collages are made of, was never "
        "trained or calibrated on.",
        f"- **Command**: `{card['command']}` (seed {card['seed']}, commit {card['git_commit']})",
        f"- **Training**: {card['steps']:,} steps of {card['batch_size']} windows "
        f"({card['windows_seen']:,} windows), {card['train_seconds'] / 60:.1f} min on "
        f"{card['device']}, {card['windows_per_s']:,.0f} windows/s{precision}",
        f"- **Aligned tiles, CIFAR-10 test split, 10-way**: accuracy {ten['accuracy']:.3f}; "
        f"recall {per_class}",
        f"- **Aligned tiles, 3-way car / boat / negative** (heads summed, no fine-tune): "
        f"balanced accuracy {three['balanced_accuracy']:.3f}, recall "
        + ", ".join(f"{c} {r:.3f}" for c, r in three["recall"].items()),
        f"- **Calibration scene** (held-out train images, car / boat, heads summed): object F1 "
        f"{calibration.get('f1')} at thresholds {calibration.get('thresholds')}",
    ]
    if card.get("note"):
        lines.append(f"- **Note**: {card['note']}")
    lines += [
        "",
        "| file | sha256 | bytes |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {n} | `{f['sha256']}` | {f['bytes']:,} |" for n, f in card["files"].items()]
    return "\n".join(lines) + "\n"


def command_line(argv: list[str]) -> str:
    return "python -m mlcore " + " ".join(shlex.quote(a) for a in argv)

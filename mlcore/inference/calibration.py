"""Per-class detection thresholds chosen on data the reported figures never see.

The published pipeline used one threshold, 0.9. A model trained with label smoothing 0.1 rarely
goes that high (a certain example's optimum is p = 0.933), and every model measured had its
F1-maximising threshold between 0.5 and 0.7. So thresholds are data: for each positive class,
the threshold that maximises that class's object F1 on the canvas set's calibration scene (a
collage-like picture of held-out training images, see ``canvases.calibration_scene``), through
the shipped post-processing and metrics. They are stored in the model file's metadata
(``thresholds``, ``calibration``), so the grid, ``mlcore evaluate``, the viewer's slider and the
queue use them by default; 0.9 stays a choice.
"""

from __future__ import annotations

import numpy as np

from mlcore.eval.metrics import object_metrics
from mlcore.inference.postprocess import default_negative, default_nms_iou, detections

CANDIDATES = tuple(float(t) for t in np.round(np.arange(0.30, 0.975, 0.025), 3))


def calibrate_thresholds(
    grid, truth: list[dict], negative: str | None = "auto", candidates=CANDIDATES
) -> dict:
    """Per positive class, the candidate threshold with the best object F1 on ``grid`` (ties:
    the higher threshold, fewer boxes to review). Returns ``{"thresholds": {c: t}, "f1": {c:
    F1 at t}, "objects": {c: n}, "curve": {c: [[t, P, R, F1], ...]}}``."""
    negative = default_negative(grid.classes) if negative == "auto" else negative
    iou = default_nms_iou(grid.window, grid.step)
    positives = [c for c in grid.classes if c != negative]
    curve: dict[str, list] = {c: [] for c in positives}
    for t in candidates:
        dets = detections(grid, thresholds=float(t), negative=negative, iou=iou)
        per_class = object_metrics(dets, truth, grid.classes, negative=negative)["per_class"]
        for c in positives:
            m = per_class[c]
            curve[c].append([float(t), m["precision"], m["recall"], m["f1"]])
    best = {c: max(curve[c], key=lambda row: (row[3], row[0])) for c in positives}
    objects = {
        c: sum(1 for b in truth if b["label"] == c and b["visible"] >= 0.5) for c in positives
    }
    return {
        "thresholds": {c: best[c][0] for c in positives},
        "f1": {c: round(best[c][3], 4) for c in positives},
        # At the chosen threshold: what the app's per-scene "still wrong" estimate reads.
        "precision": {c: round(best[c][1], 4) for c in positives},
        "recall": {c: round(best[c][2], 4) for c in positives},
        "objects": objects,
        "curve": {c: [[round(v, 4) for v in row] for row in rows] for c, rows in curve.items()},
    }


# A box the model keeps at or above its class's accept score is right this often on the
# calibration scene: what a reviewer may accept unreviewed (bench/bench_review_time.py).
ACCEPT_PRECISION = 0.99


def accept_scores(grid, truth: list[dict], thresholds, precision: float = ACCEPT_PRECISION,
                  negative: str | None = "auto") -> dict:  # fmt: skip
    """Per positive class, the lowest detection score from which the boxes kept at
    ``thresholds`` are right at least ``precision`` of the time on ``grid`` against ``truth``
    (counted from the top score down: the deepest such prefix); None where no prefix reaches it.
    Choose it on the calibration scene, never on the scene it is used on."""
    negative = default_negative(grid.classes) if negative == "auto" else negative
    dets = detections(grid, thresholds=thresholds, negative=negative)
    right = {i for i, _ in object_metrics(dets, truth, grid.classes, negative=negative)["matches"]}
    out: dict = {}
    for c in (c for c in grid.classes if c != negative):
        mine = sorted((i for i, d in enumerate(dets) if d.label == c), key=lambda i: -dets[i].score)
        out[c], hits = None, 0
        for n, i in enumerate(mine, 1):
            hits += i in right
            if hits >= precision * n:
                out[c] = float(dets[i].score)
    return out


def calibrate_model_file(model_path, canvas_set, step: int = 16, batch_size: int = 1024,
                         int8: bool = True) -> dict:  # fmt: skip
    """Score the canvas set's calibration scene with the model file, choose the thresholds and
    write them into the file's metadata; then (``int8``) give it the int8 copy a CPU with int8
    units scores, if that copy holds up on the same scene (mlcore.inference.int8_sibling).
    Returns the calibration summary (without the curve; ``int8``: the copy's check)."""
    from mlcore.inference.int8_sibling import write_int8_sibling
    from mlcore.model.onnx_file import write_metadata

    result, grid = _calibrated(model_path, canvas_set, step, batch_size)
    summary = {k: v for k, v in result.items() if k != "thresholds"}
    write_metadata(model_path, {"thresholds": result["thresholds"], "calibration": summary})
    if int8 and str(model_path).endswith(".onnx"):  # the fp32 grid is not scored again
        result["int8"] = write_int8_sibling(model_path, canvas_set, step, fp32_grid=grid)
    return result


def held_out_f1(summary: dict) -> float:
    """One held-out figure of a calibration summary: the mean over the positive classes of the
    object F1 at each class's calibrated threshold (what promotion compares)."""
    f1 = list((summary.get("f1") or {}).values())
    return round(float(np.mean(f1)), 4) if f1 else 0.0


def calibration_summary(model_path, canvas_set, step: int = 16, batch_size: int = 1024) -> dict:
    """The calibration of a model file on the canvas set's calibration scene, the file left
    as it is: ``{"thresholds", "method", "step", "scene", "f1", "precision", "recall",
    "objects"}``."""
    return _calibrated(model_path, canvas_set, step, batch_size)[0]


def _calibrated(model_path, canvas_set, step: int, batch_size: int):
    """(:func:`calibration_summary`, the calibration scene's grid it was chosen on)."""
    from mlcore.inference.model_file_scoring import score_with_model_file
    from mlcore.ingest.scenes import ArrayScene

    if canvas_set.calibration is None:
        raise ValueError(
            "the canvas set has no calibration scene (too few images to hold some out): "
            "thresholds stay at the published 0.9"
        )
    image, truth = canvas_set.calibration
    # Calibrated as the file is scored: densely when it says it can be.
    grid, dense = score_with_model_file(model_path, ArrayScene(np.asarray(image)), step,
                                        batch_size=batch_size)  # fmt: skip
    result = calibrate_thresholds(grid, truth)
    summary = {
        "method": "per-class object F1 maximum on the calibration scene (held-out images)",
        "step": int(step),
        "scoring": "dense" if dense is not None else "per window",
        "scene": f"{image.shape[1]}x{image.shape[0]}",
        "f1": result["f1"],
        "precision": result["precision"],
        "recall": result["recall"],
        "objects": result["objects"],
    }
    return {"thresholds": result["thresholds"]} | summary, grid

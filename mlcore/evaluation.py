"""How good a probability grid is against ground truth, and how good the design can be at all.

``evaluate_grid`` is the one evaluation every caller uses (the CLI, the demo, the benchmarks):
object-level precision/recall/F1 after the shipped post-processing is the headline, window-level
metrics are a diagnostic. The window truth always comes from *all* ground-truth boxes (a negative
tile pasted over a car hides it: see :func:`mlcore.metrics.window_truth`).

``oracle_grid`` is a perfect window classifier: each window gets, one-hot, the class of the
top-most tile under its centre. Pushed through the same post-processing and metrics it measures
the ceiling of the design (what no model can beat), see ``python -m mlcore ceiling``.
numpy only.
"""

from __future__ import annotations

import numpy as np

from mlcore.coco_eval import coco_ap
from mlcore.metrics import grid_window_metrics, object_metrics, window_truth
from mlcore.postprocess import default_negative, default_nms_iou, detections, ranked_detections
from mlcore.windows import grid_positions


def evaluate_grid(
    grid,
    truth: list[dict],
    thresholds=None,
    negative: str | None = "auto",
    iou: float | None = None,
    min_visible: float = 0.5,
    coco: bool = True,
) -> dict:
    """Object metrics (headline), COCO AP (with ``coco``: it ranks every box down to a score of
    0.05, the costly part) and window metrics (diagnostic) of ``grid`` against all the
    ground-truth boxes ``truth``. ``thresholds``: a number, {class: number} or None (0.9)."""
    negative = default_negative(grid.classes) if negative == "auto" else negative
    if negative is not None and negative not in grid.classes:
        raise ValueError(f"negative class {negative!r} is not one of the model's {grid.classes}")
    iou = default_nms_iou(grid.window, grid.step) if iou is None else float(iou)
    window = grid_window_metrics(grid, truth, negative=negative, thresholds=thresholds)
    dets = detections(grid, thresholds=thresholds, negative=negative, iou=iou)
    objects = object_metrics(dets, truth, grid.classes, negative=negative, min_visible=min_visible)
    objects.pop("matches", None)
    result = {"object": objects}
    if coco:
        ranked = ranked_detections(grid, negative, iou).to_detections("merged")
        ap = coco_ap(ranked, truth, grid.classes, negative=negative, min_visible=min_visible)
        result["coco"] = {k: ap[k] for k in ("ap50", "ap", "per_class")}
    return result | {
        "window": window,
        "detections": len(dets),
        "nms_iou": iou,
        "thresholds": thresholds,
    }


def scene_size(truth: list[dict]) -> tuple[int, int]:
    """(height, width) covered by the ground-truth boxes (a collage is covered edge to edge)."""
    if not truth:
        raise ValueError("the ground truth has no boxes: cannot tell the scene size")
    height = max(int(b["y"]) + int(b["h"]) for b in truth)
    width = max(int(b["x"]) + int(b["w"]) for b in truth)
    return height, width


def oracle_grid(
    truth: list[dict],
    classes,
    negative: str | None,
    step: int,
    window: int = 32,
    size: tuple[int, int] | None = None,
):
    """A ScoreGrid whose every window is the one-hot of its true class (centre rule)."""
    from mlcore.scoring import ScoreGrid

    classes = list(classes)
    height, width = size if size is not None else scene_size(truth)
    ys, xs = grid_positions(height, window, step), grid_positions(width, window, step)
    label = window_truth(ys, xs, window, truth, classes, negative)
    if (label < 0).any():
        raise ValueError("an oracle needs a negative class for windows on no box")
    probs = np.eye(len(classes), dtype=np.float32)[label]
    return ScoreGrid(ys, xs, probs, classes, window, step)


def ceiling(
    truth: list[dict],
    step: int,
    classes=("car", "boat", "negative"),
    negative: str = "negative",
    window: int = 32,
    iou: float | None = None,
    size: tuple[int, int] | None = None,
) -> dict:
    """Metrics of the oracle window classifier through the shipped post-processing.

    Its COCO AP shows what the window grid's boxes allow: a box on the step grid often overlaps
    its randomly placed tile by IoU under 0.5 (object F1 matches at 0.3), and every oracle score
    ties at 1, so the oracle's AP@0.5 is low although its F1 is near 1."""
    grid = oracle_grid(truth, classes, negative, step, window, size)
    result = evaluate_grid(grid, truth, thresholds=0.5, negative=negative, iou=iou)
    result["step"] = step
    result["windows"] = int(grid.probs.shape[0] * grid.probs.shape[1])
    return result

"""How good a probability grid is against ground truth, and how good the design can be at all.

``evaluate_grid`` is the one evaluation every caller uses (the CLI, the demo, the benchmarks):
object-level precision/recall/F1 after the shipped post-processing is the headline, window-level
metrics are a diagnostic. The window truth always comes from *all* ground-truth boxes (a negative
tile pasted over a car hides it: see :func:`mlcore.eval.metrics.window_truth`).

``oracle_grid`` is a perfect window classifier: each window gets, one-hot, the class of the
top-most tile under its centre. Pushed through the same post-processing and metrics it measures
the ceiling of the design (what no model can beat), see ``python -m mlcore ceiling``, in three
flavours (``ORACLES``):

- ``one_hot``: probabilities only. Every window holding a tile's centre ties at 1, so NMS keeps
  the first one in raster order, rarely the best-centred one: its COCO AP is an artefact of the
  tie, not a bound;
- ``ranked``: also a centredness, the window's IoU with the tile under its centre, so NMS keeps
  the best-centred window (what a model's centredness output can reach);
- ``regressed``: ranked, and each window's box is its tile's true box (perfect box regression,
  what a box head can reach at best).
numpy only.
"""

from __future__ import annotations

import numpy as np

from mlcore.data.windows import grid_positions
from mlcore.eval.coco_eval import coco_ap
from mlcore.eval.metrics import centre_tiles, grid_window_metrics, object_metrics, window_truth
from mlcore.inference.postprocess import (
    default_negative,
    default_nms_iou,
    detections,
    ranked_detections,
)


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


ORACLES = {
    "one_hot": "one-hot classifier (ties at 1: NMS keeps the first window in raster order)",
    "ranked": "ranked by centring (centredness = the window's IoU with its tile)",
    "regressed": "ranked by centring + perfect box regression (box = the true tile)",
}


def oracle_grid(
    truth: list[dict],
    classes,
    negative: str | None,
    step: int,
    window: int = 32,
    size: tuple[int, int] | None = None,
    oracle: str = "one_hot",
):
    """A ScoreGrid whose every window is the one-hot of its true class (centre rule); with
    ``oracle`` "ranked" also its centredness, with "regressed" also its tile's box (ORACLES)."""
    from mlcore.inference.scoring import ScoreGrid

    if oracle not in ORACLES:
        raise ValueError(f"oracle must be one of {', '.join(ORACLES)}, got {oracle!r}")
    classes = list(classes)
    height, width = size if size is not None else scene_size(truth)
    ys, xs = grid_positions(height, window, step), grid_positions(width, window, step)
    label = window_truth(ys, xs, window, truth, classes, negative)
    if (label < 0).any():
        raise ValueError("an oracle needs a negative class for windows on no box")
    probs = np.eye(len(classes), dtype=np.float32)[label]
    if oracle == "one_hot":
        return ScoreGrid(ys, xs, probs, classes, window, step)
    boxes = _tile_boxes(ys, xs, window, truth)
    inter = np.clip(np.minimum(boxes[..., 2:], window) - np.maximum(boxes[..., :2], 0), 0, None)
    inter = inter.prod(-1)
    area = (boxes[..., 2:] - boxes[..., :2]).prod(-1)
    centredness = inter / (window * window + area - inter)
    refined = boxes if oracle == "regressed" else None
    return ScoreGrid(ys, xs, probs, classes, window, step, refined, centredness)


def _tile_boxes(ys, xs, window: int, truth: list[dict]) -> np.ndarray:
    """(R, K, 4) x0, y0, x1, y1 of the tile under each window's centre, from the window's
    origin; the window itself where no tile is."""
    tiles = centre_tiles(ys, xs, window, truth)
    table = np.array(
        [[b["x"], b["y"], b["x"] + b["w"], b["y"] + b["h"]] for b in truth], dtype=np.float64
    ).reshape(-1, 4)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    origin = np.stack([xx, yy, xx, yy], -1).astype(np.float64)
    on_tile = tiles >= 0
    boxes = np.tile(np.array([0.0, 0.0, window, window]), (*tiles.shape, 1))
    boxes[on_tile] = table[tiles[on_tile]] - origin[on_tile]
    return boxes


def ceiling(
    truth: list[dict],
    step: int,
    classes=("car", "boat", "negative"),
    negative: str = "negative",
    window: int = 32,
    iou: float | None = None,
    size: tuple[int, int] | None = None,
) -> dict:
    """Metrics of the oracle window classifier through the shipped post-processing: the one-hot
    oracle's full metrics (as always), and under ``oracles`` each of ORACLES' object metrics and
    COCO AP. The one-hot oracle's AP is low although its F1 is near 1: its scores tie, so NMS
    keeps the first window of an object, not the best-centred one; the ranked oracles show what
    a centredness and a box head can reach."""
    result: dict = {}
    oracles: dict = {}
    for name, description in ORACLES.items():
        grid = oracle_grid(truth, classes, negative, step, window, size, oracle=name)
        metrics = evaluate_grid(grid, truth, thresholds=0.5, negative=negative, iou=iou)
        oracles[name] = {
            "description": description,
            "object": metrics["object"],
            "coco": metrics["coco"],
            "detections": metrics["detections"],
        }
        if name == "one_hot":
            result = metrics
    result["oracles"] = oracles
    result["step"] = step
    result["windows"] = int(grid.probs.shape[0] * grid.probs.shape[1])
    return result

"""COCO average precision of a scene's detections, computed by a maintained COCO evaluation
library, not by a copy of it: faster-coco-eval (a C++ implementation of pycocotools' algorithm,
numpy its only dependency) by default, pycocotools (the reference) on request; both give the same
figures (tests/core/test_coco_eval.py). A scene is one huge COCO image with thousands of boxes,
where
pycocotools' per-image Python loop takes seconds to minutes (6.4 s vs 0.1 s for 2,000
detections on 800 objects here).

The scene is one COCO image (id 1 here; ``coco_results`` takes the id of the exported
annotations). Categories are the positive classes, ids 1..n in the order given.

**Ground truth.** Boxes of ARCHITECTURE.md (``{id, label, x, y, w, h, order, visible}``). A box
whose label is not a positive class is not an object (negative tiles are not annotated in COCO).
A positive box with ``visible < min_visible`` (mostly covered by later pastes) is "don't care",
as in ``mlcore.eval.metrics.object_metrics``. COCO has exactly one mechanism for that:
``iscrowd=1``. COCOeval sets a ground-truth box's ``ignore`` flag from ``iscrowd`` alone (an
``ignore`` key is
overwritten), and for such a box

- it is never counted as a miss (its recall slot is dropped),
- a detection matched to it is ignored, neither true nor false positive; the match is made when
  the detection's intersection with it over the *detection's own area* reaches the IoU threshold
  (crowd IoU), several detections may match one crowd box, and a detection prefers a regular box
  of its class when both qualify.

So a detection lying mostly on a covered object costs nothing, while a detection that only grazes
one is still a false positive. Visible boxes get ``iscrowd=0``.

**Detections.** Dicts or objects with ``x, y, w, h, label, score`` in scene pixels; detections
of a class that is not positive are dropped. COCO's default cap of 100 detections per image is
lifted (a scene holds thousands of objects): every detection is evaluated.

**Figures.** ``ap`` is AP@[.5:.95] (mean over IoU 0.50, 0.55, ..., 0.95 and 101 recall points),
``ap50`` the same at IoU 0.5, both for the area range "all"; overall = mean over the classes that
have at least one counted box (COCO's convention); a class without any counted box has ``None``.
"""

from __future__ import annotations

import contextlib
import functools
import io

import numpy as np

IMAGE_ID = 1


def _as_det(d) -> dict:
    if isinstance(d, dict):
        return d
    return {k: getattr(d, k) for k in ("x", "y", "w", "h", "label", "score")}


def category_ids(classes, negative: str | None = "negative") -> dict[str, int]:
    """Positive class -> COCO category id (1-based, in the order given)."""
    positives = [c for c in classes if c != negative]
    return {c: i + 1 for i, c in enumerate(positives)}


def coco_results(detections, image_id: int, category_ids: dict[str, int]) -> list[dict]:
    """Detections as the COCO results format (what ``COCO.loadRes`` reads): one
    ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` per detection of a class in
    ``category_ids``, highest score first."""
    out = []
    for d in map(_as_det, detections):
        cat = category_ids.get(d["label"])
        if cat is None:
            continue
        out.append(
            {
                "image_id": int(image_id),
                "category_id": int(cat),
                "bbox": [round(float(d[k]), 2) for k in ("x", "y", "w", "h")],
                "score": round(float(d["score"]), 5),
            }
        )
    out.sort(key=lambda r: -r["score"])
    return out


def _ground_truth(gt_boxes, cats: dict[str, int], min_visible: float, width, height) -> dict:
    annotations = []
    for box in gt_boxes:
        cat = cats.get(box.get("label"))
        if cat is None:
            continue  # a negative tile (or any non-class label) is not an object
        w, h = float(box["w"]), float(box["h"])
        annotations.append(
            {
                "id": len(annotations) + 1,  # COCOeval treats id 0 as "unmatched"
                "image_id": IMAGE_ID,
                "category_id": cat,
                "bbox": [float(box["x"]), float(box["y"]), w, h],
                "area": w * h,
                "iscrowd": int(float(box.get("visible", 1.0)) < min_visible),
            }
        )
    return {
        "images": [{"id": IMAGE_ID, "width": width, "height": height}],
        "categories": [{"id": i, "name": c} for c, i in cats.items()],
        "annotations": annotations,
    }


def _detections(results: list[dict]) -> list[dict]:
    """What COCO.loadRes adds to bbox results (area, id, iscrowd), done here so that an empty
    result list works too (loadRes fails on one)."""
    return [
        r | {"id": i + 1, "area": r["bbox"][2] * r["bbox"][3], "iscrowd": 0}
        for i, r in enumerate(results)
    ]


LIBRARIES = ("faster-coco-eval", "pycocotools")


def _library(name: str):
    """(COCO, COCOeval) classes of the chosen library."""
    if name == "faster-coco-eval":
        from faster_coco_eval import COCO, COCOeval_faster

        def quiet(*args, **kwargs):
            return None

        return (
            functools.partial(COCO, print_function=quiet),
            functools.partial(COCOeval_faster, print_function=quiet),
        )
    if name == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    raise ValueError(f"library must be one of {', '.join(LIBRARIES)}, got {name!r}")


def _ap(precision: np.ndarray) -> float | None:
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else None


def coco_ap(
    detections,
    gt_boxes,
    classes,
    negative: str | None = "negative",
    min_visible: float = 0.5,
    library: str = "faster-coco-eval",
) -> dict:
    """``{"ap50", "ap", "per_class": {class: {"ap50", "ap"}}, "counted", "ignored", "detections"}``
    of a scene's detections against its ground truth (see the module docstring)."""
    COCO, COCOeval = _library(library)
    cats = category_ids(classes, negative)
    dets = [_as_det(d) for d in detections]
    boxes = list(gt_boxes)
    right = max([float(b["x"]) + float(b["w"]) for b in boxes] + [1.0])
    bottom = max([float(b["y"]) + float(b["h"]) for b in boxes] + [1.0])
    truth = _ground_truth(boxes, cats, min_visible, int(np.ceil(right)), int(np.ceil(bottom)))
    results = _detections(coco_results(dets, IMAGE_ID, cats))
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):  # the libraries print their progress
        gt = COCO()
        gt.dataset = truth
        gt.createIndex()
        dt = COCO()
        dt.dataset = {
            "images": truth["images"],
            "categories": truth["categories"],
            "annotations": results,
        }
        dt.createIndex()
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.params.imgIds = [IMAGE_ID]
        evaluator.params.catIds = list(cats.values())
        evaluator.params.maxDets = [max(1, len(results))]
        evaluator.evaluate()
        evaluator.accumulate()
    # precision: [T iou thresholds, R recall points, K classes, A area ranges, M maxDets]
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    iou50 = int(np.argmin(np.abs(evaluator.params.iouThrs - 0.5)))
    per_class = {}
    for k, cls in enumerate(cats):
        per_class[cls] = {"ap50": _ap(precision[iou50, :, k]), "ap": _ap(precision[:, :, k])}
    scored = [v for v in per_class.values() if v["ap"] is not None]
    ignored = sum(a["iscrowd"] for a in truth["annotations"])
    return {
        "ap50": float(np.mean([v["ap50"] for v in scored])) if scored else 0.0,
        "ap": float(np.mean([v["ap"] for v in scored])) if scored else 0.0,
        "per_class": per_class,
        "counted": len(truth["annotations"]) - ignored,
        "ignored": ignored,
        "detections": len(results),
        "library": library,
    }

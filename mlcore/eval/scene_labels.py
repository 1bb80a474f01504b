"""The scene's labels' rule, without the app: which reviewed boxes and which model boxes make a
scene's labels. labeling.review.scene_labels (the exports) and bench/bench_review_time.py (the
reviewer-time bench) both call :func:`merge_labels`, so the bench scores the labels the app exports.

- every effective review naming a positive class is a label (``source = "reviewed"``): a box a
  reviewer confirmed, corrected or added, or a queue answer naming a positive class;
- every model box (a merged detection above threshold) that no review covers is a label
  (``source = "model"``).

A review covers the detection it points at (``detection``) and every detection whose centre its
box holds (the object matcher's rule). A covering review naming the negative class rejects the
detection; one naming a positive class replaces it by the reviewer's box and class. pure Python."""

from __future__ import annotations

from collections import defaultdict

REVIEWED, MODEL = "reviewed", "model"
CELL = 64  # pixels per cell of the centre index


def _holds_centre(box: dict, d: dict) -> bool:
    cx, cy = d["x"] + d["w"] / 2.0, d["y"] + d["h"] / 2.0
    return box["x"] <= cx < box["x"] + box["w"] and box["y"] <= cy < box["y"] + box["h"]


def _centre_index(detections: list[dict]) -> dict:
    """Detections by the cell their centre falls in: a review looks only at the cells its box
    overlaps (a scene of 10,000 answers and 200,000 boxes stays linear, not their product)."""
    index = defaultdict(list)
    for i, d in enumerate(detections):
        cell = (int((d["x"] + d["w"] / 2.0) // CELL), int((d["y"] + d["h"] / 2.0) // CELL))
        index[cell].append(i)
    return index


def _centres_in(box: dict, detections: list[dict], index: dict) -> list[dict]:
    """The detections whose centre ``box`` holds, in the detections' order."""
    hits = [
        i
        for gy in range(int(box["y"] // CELL), int((box["y"] + box["h"]) // CELL) + 1)
        for gx in range(int(box["x"] // CELL), int((box["x"] + box["w"]) // CELL) + 1)
        for i in index.get((gx, gy), ())
        if _holds_centre(box, detections[i])
    ]
    return [detections[i] for i in sorted(hits)]


def merge_labels(detections: list[dict], reviews: list[dict], negative: str | None) -> list[dict]:
    """The scene's labels from ``detections`` (the model's boxes above threshold: dicts with
    ``id, x, y, w, h, label``) and ``reviews`` (the effective reviews in the order they count:
    dicts with ``x, y, w, h, label`` (the class the reviewer says is there; ``negative`` rejects)
    and ``detection``, the id of the detection it points at or None).

    Returns the labels, reviewed first in the reviews' order, then the uncovered detections in
    theirs: ``{"source": "reviewed", "review": index into reviews, "model": the first detection
    it covers or None}`` and ``{"source": "model", "review": None, "model": detection}``."""
    by_id = {d["id"]: d for d in detections}
    index = _centre_index(detections)
    covered: set = set()
    out = []
    for i, r in enumerate(reviews):
        pointed = r.get("detection")
        linked = [by_id[pointed]] if pointed in by_id else []
        linked += [d for d in _centres_in(r, detections, index) if d["id"] != pointed]
        covered.update(d["id"] for d in linked)
        if r["label"] == negative:
            continue  # a rejection: neither the detection nor the reviewer's box is a label
        out.append({"source": REVIEWED, "review": i, "model": linked[0] if linked else None})
    for d in detections:
        if d["id"] in covered or d["label"] == negative:
            continue
        out.append({"source": MODEL, "review": None, "model": d})
    return out

"""Ground-truth files (CSV label,x,y,w,h; COCO JSON; our own JSON list) -> a BoxTable, checked:
at most GROUND_TRUTH_MAX_BOXES boxes, labels that are project classes, boxes inside the image.

A CSV is read a line at a time from the file; a JSON document is parsed whole (it is at most
GROUND_TRUTH_MAX_BYTES), but each object keeps only the keys a box needs as it is built, so a
COCO file's segmentation polygons are dropped one annotation at a time, and parsing stops at the
first box past the limit."""

from __future__ import annotations

import csv
import io
import json

from django.conf import settings

from labeling.ground_truth.boxes import BoxTable


class GroundTruthError(ValueError):
    """A ground-truth file that cannot be used; the message names the file and the problem."""


# COCO: images, categories, annotations (id, category_id, bbox); our own list: label, x, y, w, h.
KEPT_KEYS = frozenset({"images", "categories", "annotations", "id", "name", "category_id",
                       "bbox", "label", "x", "y", "w", "h"})  # fmt: skip
COLUMNS = ("label", "x", "y", "w", "h")


def max_boxes() -> int:
    return int(settings.GROUND_TRUTH_MAX_BOXES)


def too_many(name: str, limit: int) -> GroundTruthError:
    return GroundTruthError(
        f"{name} has more than {limit:,} boxes, the limit of one ground-truth file "
        "(GROUND_TRUTH_MAX_BOXES); split the scene or raise the limit."
    )


def parse_ground_truth(source, name: str, class_names=None, aliases=None, size=None) -> BoxTable:
    """``source``: bytes or a binary file. `aliases` maps source class names to project classes
    (a CSV may say 'airplane' for the project's 'plane'). Labels outside `class_names` (when
    given) are refused: a typo would silently count as a miss. `size` (width, height): boxes
    must lie inside the image."""
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    text = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")
    try:
        first = _first_character(text)
        if not first:
            raise GroundTruthError(f"{name}: the ground-truth file is empty.")
        table = _json_boxes(text.read(), name) if first in "[{" else _csv_boxes(text, name)
    except UnicodeDecodeError as exc:
        raise GroundTruthError(
            f"{name}: not a text file ({exc}); upload a CSV (label,x,y,w,h) or COCO JSON."
        ) from None
    finally:
        text.detach()  # the caller's file stays open
    if not len(table):
        raise GroundTruthError(f"{name}: no boxes found; the file has a header but no rows.")
    table.rename(aliases or {})
    if class_names is not None:
        unknown = sorted(set(table.labels) - set(class_names))
        if unknown:
            raise GroundTruthError(
                f"{name}: labels {unknown} are not classes of this project "
                f"({sorted(class_names)}); rename them or add the classes to the project."
            )
    if size is not None and size[0] and size[1]:
        _check_inside(table, name, *size)
    return table


def _first_character(text: io.TextIOWrapper) -> str:
    """The first non-blank character; the stream is left at the start of the file."""
    while chunk := text.read(4096):
        if stripped := chunk.lstrip():
            text.seek(0)
            return stripped[0]
    return ""


def _check_inside(table: BoxTable, name: str, width: int, height: int) -> None:
    for i in range(len(table)):
        if table.x[i] + table.w[i] > width or table.y[i] + table.h[i] > height:
            box = table.box(i)
            raise GroundTruthError(
                f"{name}: box {i + 1} ({box['label']} at x={box['x']}, y={box['y']}, "
                f"{box['w']}x{box['h']}) reaches outside the {width}x{height} image; is the "
                "file meant for another image?"
            )


def _add(table: BoxTable, label, x, y, w, h, where: str) -> None:
    try:
        x, y, w, h = (int(round(float(v))) for v in (x, y, w, h))
    except (TypeError, ValueError, OverflowError):
        raise GroundTruthError(
            f"{where}: x, y, w, h must be numbers (got {x!r}, {y!r}, {w!r}, {h!r})."
        ) from None
    if w <= 0 or h <= 0 or x < 0 or y < 0:
        raise GroundTruthError(f"{where}: need x, y >= 0 and w, h > 0 (got {x}, {y}, {w}, {h}).")
    if max(x, y, w, h) >= 2**62:  # the table's columns hold 64-bit integers
        raise GroundTruthError(f"{where}: x, y, w, h are beyond any image ({x}, {y}, {w}, {h}).")
    label = "" if label is None else str(label).strip()
    if not label:
        raise GroundTruthError(f"{where}: the label is empty.")
    table.add(label, x, y, w, h)


def _csv_boxes(text: io.TextIOWrapper, name: str) -> BoxTable:
    reader = csv.reader(text)
    header = next((row for row in reader if row), [])
    columns = [c.strip().lower() for c in header]
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise GroundTruthError(
            f"{name}: CSV lacks columns {missing}; the header must be label,x,y,w,h."
        )
    at = [columns.index(c) for c in COLUMNS]
    table, limit = BoxTable(), max_boxes()
    for row in reader:
        if not row:
            continue
        if len(table) == limit:
            raise too_many(name, limit)
        values = [row[i] if i < len(row) else None for i in at]
        _add(table, *values, f"{name} line {reader.line_num}")
    return table


class _BoxCollector:
    """json.loads' object_pairs_hook: a box object (a COCO annotation with a bbox, or one of our
    own {label, x, y, w, h}) goes straight into a table as it is parsed and leaves a marker in
    the document, so no dict per box is ever held; other objects keep only the keys a box needs
    (a COCO file's segmentation polygons are dropped one annotation at a time)."""

    COCO, OWN = object(), object()  # what a box leaves in the document

    def __init__(self, name: str, limit: int):
        self.name, self.limit = name, limit
        self.coco, self.own = BoxTable(), BoxTable()  # COCO's labels: category ids until resolved

    def __call__(self, pairs):
        obj = {k: v for k, v in pairs if k in KEPT_KEYS}
        if "bbox" in obj:
            self._count()
            where = f"{self.name} annotation {len(self.coco)}"
            bbox, category = obj["bbox"], obj.get("category_id")
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise GroundTruthError(f"{where}: bbox must be [x, y, w, h].")
            if not isinstance(category, (int, str)) or isinstance(category, bool):
                raise GroundTruthError(f"{where}: category_id {category!r} is not listed.")
            _add(self.coco, category, *bbox, where)
            return self.COCO
        if "label" in obj:
            self._count()
            where = f"{self.name} box {len(self.own)}"
            _add(self.own, obj["label"], obj.get("x"), obj.get("y"), obj.get("w"), obj.get("h"),
                 where)  # fmt: skip
            return self.OWN
        return obj

    def _count(self):
        if len(self.coco) + len(self.own) >= self.limit:
            raise too_many(self.name, self.limit)


def _json_boxes(text: str, name: str) -> BoxTable:
    collector = _BoxCollector(name, max_boxes())
    try:
        doc = json.loads(text, object_pairs_hook=collector)
    except json.JSONDecodeError as exc:
        raise GroundTruthError(f"{name}: not valid JSON ({exc}).") from None
    except RecursionError:
        raise GroundTruthError(f"{name}: not valid JSON (nested too deeply).") from None
    if isinstance(doc, list):  # already our own format
        for i, item in enumerate(doc):
            if item is not collector.OWN:
                raise GroundTruthError(
                    f"{name} box {i}: expected an object with label, x, y, w, h."
                )
        return collector.own
    if not isinstance(doc, dict) or not isinstance(doc.get("annotations"), list):
        raise GroundTruthError(f"{name}: expected COCO JSON with 'annotations' and 'categories'.")
    images = doc.get("images") or []
    if isinstance(images, list) and len(images) > 1:
        raise GroundTruthError(
            f"{name}: the COCO file describes {len(images)} images; upload one whose "
            "'images' lists only this scene."
        )
    for i, item in enumerate(doc["annotations"]):
        if item is not collector.COCO:
            where = f"{name} annotation {i}"
            if not isinstance(item, dict) and item is not collector.OWN:
                raise GroundTruthError(f"{where}: expected an object with bbox and category_id.")
            raise GroundTruthError(f"{where}: bbox must be [x, y, w, h].")
    categories = doc.get("categories", [])
    categories = {
        str(c.get("id")): c.get("name")  # as the table holds them (labels are text)
        for c in (categories if isinstance(categories, list) else [])
        if isinstance(c, dict) and isinstance(c.get("id"), (int, str))
    }
    table = collector.coco
    for code, category in enumerate(table.labels):
        if categories.get(category) is None:
            first = table.codes.index(code)
            raise GroundTruthError(
                f"{name} annotation {first}: category_id {category} is not listed."
            )
    table.rename({category: str(categories[category]) for category in table.labels})
    return table

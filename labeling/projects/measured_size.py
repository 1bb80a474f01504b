"""A project's object size measured from the boxes its reviewers drew (issue 34.3): the median
of their longer sides, offered on the edit page and in GET /api/projects/<id> as "use N px
(median of K boxes)" for Project.object_size (which stays the reviewer's choice).

Only boxes a person sized count: shift-drag boxes, and a model's box a reviewer corrected to
another size. Left out: click boxes (a square of the window or the object size, placed by the
viewer), review-queue answers (grid windows), the model's own boxes confirmed as they were,
background marks and regions: none of those measures an object."""

from __future__ import annotations

import statistics

from labeling.loop.cycle import effective_annotations
from labeling.loop.regions import marks_object
from labeling.models import OBJECT_SIZE_MAX, Annotation

# Fewer boxes than this say too little about a typical size (one odd box moves the median).
MIN_BOXES = 5


def median_side(boxes) -> tuple[int | None, int]:
    """(median of the boxes' longer sides rounded to a whole pixel, number of boxes) for boxes
    ``(w, h)``; the size is None with fewer than MIN_BOXES boxes. The longer side: the square
    window has to hold the object."""
    sides = [max(int(w), int(h)) for w, h in boxes]
    if len(sides) < MIN_BOXES:
        return None, len(sides)
    return min(int(round(statistics.median(sides))), OBJECT_SIZE_MAX), len(sides)


def _click_sizes(project) -> set[int]:
    return {int(project.window_size), int(project.scene_window)}


def drawn_boxes(project) -> list[tuple[int, int]]:
    """(w, h) of the effective object boxes the project's reviewers sized themselves."""
    rows = Annotation.objects.filter(project=project).select_related("detection").only(
        "id", "scene_id", "created_at", "kind", "label", "undoes_id", "x", "y", "w", "h",
        "source", "detection__x", "detection__y", "detection__w", "detection__h",
    )  # fmt: skip
    clicks = _click_sizes(project)
    out = []
    for a in effective_annotations(rows):
        if not marks_object(a, project) or a.source == "queue":
            continue
        d = a.detection
        if d is not None:
            if (a.x, a.y, a.w, a.h) == (d.x, d.y, d.w, d.h):
                continue  # the model's box, confirmed as it was
        elif a.w == a.h and a.w in clicks:
            continue  # a click box: the viewer sized it
        out.append((a.w, a.h))
    return out


def measured_object_size(project) -> dict:
    """{"size": N or None, "boxes": K, "needed": MIN_BOXES, "text": in words}."""
    size, count = median_side(drawn_boxes(project))
    if size is None:
        text = (
            f"Measured from the reviewers' boxes: needs at least {MIN_BOXES} boxes drawn with "
            f"shift + drag in the viewer ({count} so far; click boxes do not count)."
        )
    else:
        text = f"use {size} px (median of {count} boxes)"
    return {"size": size, "boxes": count, "needed": MIN_BOXES, "text": text}

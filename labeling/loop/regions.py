"""Background regions in the loop: an annotation of kind ``region`` (label: the project's negative
class, box: the region) says a whole rectangle of a scene holds no object of any class. It
becomes the training samples mlcore.data.regions.background_windows picks: the windows of the
project's object size on its scoring grid inside the region, none overlapping a box any
effective annotation of the scene marks as an object (objects win), at most REGION_SAMPLE_CAP.

The first model's count of background marks (labeling.loop.first_model.scene_marks) and the
cycle's training samples (workers.loop_jobs.feed_corrections) both come from here."""

from __future__ import annotations

from collections import defaultdict

from mlcore.data.regions import background_windows

REGION = "region"
# A region's longest side, in object sizes (Project.scene_window): about what a screen shows at a
# zoom where objects can still be seen, so a reviewer has looked at what the region claims.
REGION_MAX_WINDOWS = 32


def is_region(annotation) -> bool:
    return annotation.kind == REGION


def marks_object(annotation, project) -> bool:
    """Does the annotation say an object is there (the rule of cycle.training_label)?"""
    if annotation.kind in (REGION, "undo", "false_positive"):
        return False
    return annotation.label != project.negative_class


def object_boxes(effective, project) -> dict[int, list[tuple[int, int, int, int]]]:
    """Scene id -> the boxes of ``effective`` annotations that mark an object."""
    boxes = defaultdict(list)
    for a in effective:
        if marks_object(a, project):
            boxes[a.scene_id].append((a.x, a.y, a.w, a.h))
    return boxes


def region_windows(project, region, objects) -> list[tuple[int, int, int, int]]:
    """The boxes ``(x, y, w, h)`` of the training samples a region annotation yields, given the
    object boxes of its scene."""
    size = project.scene_window
    origins = background_windows(
        (region.x, region.y, region.w, region.h), objects, size, project.scene_score_step
    )
    return [(x, y, size, size) for x, y in origins]

"""Annotation exports: COCO detection JSON and CSV, the effective labels or the whole history."""

from __future__ import annotations

import csv
import io

from django.utils import timezone

from labeling.loop.cycle import effective_annotations, training_label
from labeling.models import Annotation
from labeling.review.scene_labels import file_names


def project_annotations(project, history: bool = False) -> list[Annotation]:
    rows = list(
        Annotation.objects.filter(project=project)
        .select_related("user", "consumed_by", "scene")
        .order_by("-created_at", "-id")
    )
    return rows if history else effective_annotations(rows)


def export_coco(project, history: bool = False) -> dict:
    """COCO detection JSON: one image per scene, categories = the project's classes (negative
    last), one annotation per effective label (or the whole history with ``history``). The
    category is the class the annotation teaches (a false positive teaches the negative class);
    the review details are under ``attributes``."""
    rows = project_annotations(project, history)
    classes = project.class_names
    category = {c: i + 1 for i, c in enumerate(classes)}
    scenes = list(project.scenes.all().order_by("id"))
    names = file_names(scenes)  # a real file name, as the scene labels' export gives it
    images = [
        {"id": s.pk, "file_name": names[s.pk], "width": s.width, "height": s.height,
         "scene_name": s.name}
        for s in scenes
    ]  # fmt: skip
    annotations = []
    for a in sorted(rows, key=lambda a: a.pk):
        annotations.append(
            {
                "id": a.pk,
                "image_id": a.scene_id,
                "category_id": category.get(training_label(a, project), 0),
                "bbox": [a.x, a.y, a.w, a.h],
                "area": a.w * a.h,
                "iscrowd": 0,
                "attributes": {
                    "kind": a.kind,
                    "label": a.label,
                    "user": a.user.username if a.user else None,
                    "created_at": a.created_at.isoformat(),
                    "source": a.source,
                    "detection": a.detection_id,
                    "undoes": a.undoes_id,
                    "consumed_by": a.consumed_by.number if a.consumed_by else None,
                },
            }
        )
    return {
        "info": {
            "description": f"annotations of project {project.name}",
            "date_created": timezone.now().isoformat(),
            "history": history,
        },
        "images": images,
        "categories": [
            {
                "id": category[c],
                "name": c,
                "supercategory": "negative" if c == project.negative_class else "object",
            }
            for c in classes
        ],  # fmt: skip
        "annotations": annotations,
    }


CSV_COLUMNS = [
    "id", "scene", "scene_name", "kind", "label", "training_label", "x", "y", "w", "h", "user",
    "created_at", "source", "client_id", "detection", "undoes", "consumed_by", "effective",
]  # fmt: skip


def export_csv(project, history: bool = False) -> str:
    rows = project_annotations(project, True)
    effective = {a.pk for a in effective_annotations(rows)}
    if not history:
        rows = [a for a in rows if a.pk in effective]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for a in sorted(rows, key=lambda a: a.pk):
        writer.writerow(
            [
                a.pk, a.scene_id, a.scene.name, a.kind, a.label, training_label(a, project),
                a.x, a.y, a.w, a.h, a.user.username if a.user else "",
                a.created_at.isoformat(), a.source, a.client_id or "", a.detection_id or "",
                a.undoes_id or "", a.consumed_by.number if a.consumed_by else "",
                int(a.pk in effective),
            ]
        )  # fmt: skip
    return out.getvalue()

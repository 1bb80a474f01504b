"""A scene's detections and reviewed annotations as GeoJSON in the scene's coordinate system
(mlcore.georef): GIS users open them beside the GeoTIFF; a scene without georeferencing exports
scene pixels."""

from __future__ import annotations

from labeling.loop.cycle import effective_annotations, training_label
from labeling.models import Annotation, Detection
from mlcore.georef import feature_collection


def scene_geojson(scene, run=None) -> dict:
    """The merged detections of ``run`` (None: none) and the scene's effective annotations."""
    project = scene.project
    boxes = []
    if run is not None:
        rows = Detection.objects.filter(run=run, kind="merged").order_by("id")
        for d in rows.values("id", "x", "y", "w", "h", "label", "score"):
            boxes.append({**d, "source": "detection", "run": run.pk})
    reviewed = Annotation.objects.filter(scene=scene).select_related("user")
    for a in sorted(effective_annotations(list(reviewed)), key=lambda a: a.pk):
        boxes.append(
            {
                "id": a.pk, "x": a.x, "y": a.y, "w": a.w, "h": a.h,
                "label": training_label(a, project), "source": "annotation", "kind": a.kind,
                "user": a.user.username if a.user else None,
                "created_at": a.created_at.isoformat(),
            }
        )  # fmt: skip
    out = feature_collection(boxes, scene.georef, name=scene.name)
    out["scene"] = {"id": scene.pk, "width": scene.width, "height": scene.height}
    out["run"] = run.pk if run is not None else None
    return out

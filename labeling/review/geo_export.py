"""A scene's detections and reviewed annotations as GeoJSON (mlcore.ingest.georef): RFC 7946 WGS84
longitude/latitude by default, the scene's own CRS or scene pixels on request; boxes clipped to
the image. A scene without usable georeferencing exports pixels only when asked (GeorefError)."""

from __future__ import annotations

from labeling.loop.cycle import effective_annotations, training_label
from labeling.models import Annotation, Detection
from mlcore.ingest.georef import feature_collection


def scene_geojson(scene, run=None, crs: str = "wgs84") -> dict:
    """The merged detections of ``run`` (None: none) and the scene's effective annotations, in
    ``crs`` (mlcore.ingest.georef.CRS_MODES)."""
    project = scene.project
    boxes = []
    if run is not None:
        rows = Detection.objects.filter(run=run, kind="merged").order_by("id")
        for d in rows.values("id", "x", "y", "w", "h", "label", "score"):
            boxes.append({**d, "source": "detection", "run": run.pk, "scene": scene.pk})
    reviewed = Annotation.objects.filter(scene=scene).select_related("user")
    for a in sorted(effective_annotations(list(reviewed)), key=lambda a: a.pk):
        boxes.append(
            {
                "id": a.pk, "x": a.x, "y": a.y, "w": a.w, "h": a.h,
                "label": training_label(a, project), "source": "annotation", "kind": a.kind,
                "scene": scene.pk,
                "user": a.user.username if a.user else None,
                "created_at": a.created_at.isoformat(),
            }
        )  # fmt: skip
    return feature_collection(boxes, scene.georef, scene.width, scene.height, crs=crs)

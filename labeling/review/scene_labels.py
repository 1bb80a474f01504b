"""The scene's labels: what the loop delivers, one box list per scene at any moment.

A scene's labels are

- every box a reviewer confirmed, corrected (wrong class) or added (missed object, or a queue
  answer naming a positive class): ``source = "reviewed"``, with who reviewed it and when;
- every merged detection of the scene's run (stored at the run's thresholds, so above them) that
  no effective annotation covers: ``source = "model"``.

A detection is covered by an effective annotation that points at it (``Annotation.detection``)
or whose box holds the detection's centre (the object matcher's rule). A covering annotation
that names the negative class (a false positive, or a queue answer "negative") rejects it; one
naming a positive class replaces it by the reviewer's box and class (the rule is
mlcore.eval.scene_labels.merge_labels, which the reviewer-time bench scores). Every box carries one
``probability``: the class probability the model gave the detection (the number the viewer's
feed shows as its score); a reviewed box that replaced a detection keeps that detection's
probability, an added box has none (null).

Exports (COCO ground truth without a negative category, YOLO text files, CSV, GeoJSON) read this
list and nothing else, so all of them hold the same boxes with the same probabilities."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from pathlib import PurePosixPath

from django.utils import timezone

from labeling.loop.cycle import effective_annotations, training_label
from labeling.models import Annotation, Detection, ScoringRun
from labeling.review.common import ReviewError
from mlcore.eval.scene_labels import MODEL, REVIEWED, merge_labels

FORMATS = ("json", "coco", "yolo", "csv", "geojson")
PROBABILITY_DIGITS = 3  # as the viewer's feed rounds its scores: one box reads one number


def labels_run(scene) -> ScoringRun | None:
    """The run whose detections the labels start from: the run people see for the scene (the
    current model version's, labeling.models.shown_runs), so the labels hold the boxes and
    probabilities the viewer shows; None (reviewed boxes only) without one."""
    return scene.shown_run()


def _probability(value) -> float | None:
    return None if value is None else round(float(value), PROBABILITY_DIGITS)


def scene_labels(scene, run=None) -> list[dict]:
    """The scene's labels now (see the module docstring), reviewed boxes first, each as
    ``{id, scene, label, x, y, w, h, source, probability, model_label, detection, kind,
    reviewer, reviewed_at, run}``. ``run`` None: :func:`labels_run`."""
    project = scene.project
    negative = project.negative_class
    run = labels_run(scene) if run is None else run
    detections = []
    if run is not None:
        detections = list(
            Detection.objects.filter(run=run, kind="merged")
            .order_by("-score", "id")
            .values("id", "x", "y", "w", "h", "label", "score")
        )
    rows = Annotation.objects.filter(scene=scene).select_related("user")
    effective = sorted(effective_annotations(list(rows)), key=lambda a: a.pk)
    reviews = [{"x": a.x, "y": a.y, "w": a.w, "h": a.h, "label": training_label(a, project),
                "detection": a.detection_id} for a in effective]  # fmt: skip
    out = []
    for entry in merge_labels(detections, reviews, negative):
        model = entry["model"]
        if entry["source"] == REVIEWED:
            a = effective[entry["review"]]
            out.append(
                {
                    "id": f"a{a.pk}",
                    "scene": scene.pk,
                    "label": reviews[entry["review"]]["label"],
                    "x": a.x, "y": a.y, "w": a.w, "h": a.h,
                    "source": REVIEWED,
                    "probability": _probability(model["score"]) if model else None,
                    "model_label": model["label"] if model else None,
                    "detection": model["id"] if model else None,
                    "kind": a.kind,
                    "reviewer": a.user.username if a.user else None,
                    "reviewed_at": a.created_at.isoformat(),
                    "run": run.pk if run is not None else None,
                }
            )  # fmt: skip
            continue
        out.append(
            {
                "id": f"d{model['id']}",
                "scene": scene.pk,
                "label": model["label"],
                "x": model["x"], "y": model["y"], "w": model["w"], "h": model["h"],
                "source": MODEL,
                "probability": _probability(model["score"]),
                "model_label": model["label"],
                "detection": model["id"],
                "kind": None,
                "reviewer": None,
                "reviewed_at": None,
                "run": run.pk,
            }
        )  # fmt: skip
    return out


# -- file names -------------------------------------------------------------------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")


def image_file_name(scene) -> str:
    """A real file name for the scene's image (what COCO's ``file_name`` and YOLO's label file
    stem name): the scene's name made file-safe, with the original image's extension (the name
    itself when it already ends in one), and the scene id when the name gives nothing usable.
    Put the original image under this name beside the export and the loaders find it."""
    suffix = PurePosixPath(scene.image_key or "").suffix.lower()
    suffix = suffix if suffix in IMAGE_SUFFIXES else ".png"
    name = PurePosixPath(scene.name.replace("\\", "/")).name
    if PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES:
        name, suffix = PurePosixPath(name).stem, PurePosixPath(name).suffix.lower()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")[:100]
    return f"{stem or f'scene-{scene.pk}'}{suffix}"


def file_names(scenes) -> dict[int, str]:
    """Per scene id a distinct file name (two scenes named alike get their ids appended)."""
    names: dict[int, str] = {}
    taken: set[str] = set()
    for scene in scenes:
        name = image_file_name(scene)
        if name.lower() in taken:
            path = PurePosixPath(name)
            name = f"{path.stem}-{scene.pk}{path.suffix}"
        taken.add(name.lower())
        names[scene.pk] = name
    return names


# -- exports ----------------------------------------------------------------------------------


def project_scenes(project, scene=None) -> list:
    if scene is not None:
        return [scene]
    return list(project.scenes.all().order_by("id"))


def positive_categories(project) -> dict[str, int]:
    """Class -> COCO category id, numbered as every other export of the project numbers them
    (labeling.scoring.coco_results.category_ids), the negative class left out: it is no object."""
    return {
        c: i + 1 for i, c in enumerate(project.class_names) if c != project.negative_class
    }  # fmt: skip


def labels_coco(project, scene=None) -> dict:
    """COCO detection JSON of the labels, loadable as ground truth (pycocotools ``COCO``): the
    positive classes as categories, one annotation per label with ``score`` (= probability; the
    loaders ignore it on ground truth) and the label's provenance under ``attributes``."""
    scenes = project_scenes(project, scene)
    names = file_names(scenes)
    categories = positive_categories(project)
    images, annotations = [], []
    for s in scenes:
        images.append({"id": s.pk, "file_name": names[s.pk], "width": s.width,
                       "height": s.height, "scene_name": s.name})  # fmt: skip
        for box in scene_labels(s):
            annotations.append(
                {
                    "id": len(annotations) + 1,  # COCOeval reads id 0 as "unmatched"
                    "image_id": s.pk,
                    "category_id": categories[box["label"]],
                    "bbox": [box["x"], box["y"], box["w"], box["h"]],
                    "area": box["w"] * box["h"],
                    "iscrowd": 0,
                    "score": box["probability"],
                    "attributes": {k: box[k] for k in ("id", "source", "probability",
                                   "model_label", "kind", "reviewer", "reviewed_at")},
                }
            )  # fmt: skip
    return {
        "info": {
            "description": f"scene labels of project {project.name}: reviewed boxes and the "
            "model's boxes above threshold that no reviewer rejected",
            "date_created": timezone.now().isoformat(),
        },
        "images": images,
        "categories": [
            {"id": i, "name": c, "supercategory": "object"} for c, i in categories.items()
        ],
        "annotations": annotations,
    }


CSV_COLUMNS = [
    "scene", "scene_name", "file_name", "id", "label", "x", "y", "w", "h", "source",
    "probability", "model_label", "detection", "kind", "reviewer", "reviewed_at", "run",
]  # fmt: skip


def labels_csv(project, scene=None) -> str:
    scenes = project_scenes(project, scene)
    names = file_names(scenes)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for s in scenes:
        for box in scene_labels(s):
            row = box | {"scene_name": s.name, "file_name": names[s.pk]}
            writer.writerow(["" if row[c] is None else row[c] for c in CSV_COLUMNS])
    return out.getvalue()


def yolo_lines(scene, labels, classes: list[str]) -> str:
    """YOLO detection labels: ``class x_centre y_centre width height`` normalised to [0, 1] by
    the scene's size, one line per box (the probability is not part of the format)."""
    index = {c: i for i, c in enumerate(classes)}
    lines = []
    for box in labels:
        cx = (box["x"] + box["w"] / 2.0) / scene.width
        cy = (box["y"] + box["h"] / 2.0) / scene.height
        w, h = box["w"] / scene.width, box["h"] / scene.height
        lines.append(f"{index[box['label']]} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return "".join(line + "\n" for line in lines)


def labels_yolo(project, scene=None) -> bytes:
    """A zip: ``classes.txt`` (the positive classes, line i = class id i), ``data.yaml`` (the
    same as Ultralytics reads it) and ``labels/<image stem>.txt`` per scene."""
    scenes = project_scenes(project, scene)
    names = file_names(scenes)
    classes = list(positive_categories(project))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("classes.txt", "".join(c + "\n" for c in classes))
        yaml_names = "".join(f"  {i}: {c}\n" for i, c in enumerate(classes))
        zf.writestr("data.yaml", f"path: .\ntrain: images\nval: images\nnames:\n{yaml_names}")
        for s in scenes:
            stem = PurePosixPath(names[s.pk]).stem
            zf.writestr(f"labels/{stem}.txt", yolo_lines(s, scene_labels(s), classes))
    return buffer.getvalue()


def labels_geojson(scene, crs: str = "wgs84") -> dict:
    """The scene's labels as GeoJSON, in ``crs`` as the detections' GeoJSON
    (mlcore.ingest.georef.feature_collection: RFC 7946 WGS84 by default, "native" or "pixels");
    GeorefError when the scene's georeferencing cannot give it."""
    from mlcore.ingest.georef import feature_collection

    return feature_collection(scene_labels(scene), scene.georef, scene.width, scene.height,
                              crs=crs)  # fmt: skip


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ReviewError(f"format must be one of {', '.join(FORMATS)}, got {str(fmt)[:40]!r}")
    return fmt


# -- how far a scene is from right ---------------------------------------------------------------


def labels_summary(scene, labels=None, run=None) -> dict:
    """Per scene: how many labels, how many reviewed, and an ESTIMATE of the share still wrong
    from the calibration precision P and recall R (per class, at its calibrated threshold) of
    the version whose boxes the labels hold. Reviewed boxes count as right; of the n unreviewed
    model boxes of a class, n (1 - P) are expected false and n P (1 - R) / R objects expected
    missed; the share is (expected false + expected missed) / (labels + expected missed).
    ``estimate`` None when the version has no calibration figures (no calibration scene)."""
    run = labels_run(scene) if run is None else run
    labels = scene_labels(scene, run) if labels is None else labels
    reviewed = sum(1 for b in labels if b["source"] == REVIEWED)
    out = {"labels": len(labels), "reviewed": reviewed, "model": len(labels) - reviewed,
           "estimate": None}  # fmt: skip
    calibration = (run.model_version.metrics or {}).get("calibration") if run else None
    precision = (calibration or {}).get("precision") or {}
    recall = (calibration or {}).get("recall") or {}
    if not precision or not recall:
        return out
    false, missed = 0.0, 0.0
    for box in labels:
        if box["source"] != MODEL:
            continue
        p, r = precision.get(box["label"]), recall.get(box["label"])
        if p is None or not r:
            return out  # a class the calibration did not measure: no honest estimate
        false += 1.0 - p
        missed += p * (1.0 - r) / r
    total = len(labels) + missed
    out["estimate"] = {
        "false_boxes": round(false, 1),
        "missed_objects": round(missed, 1),
        "wrong_share": round((false + missed) / total, 3) if total else 0.0,
        "from": f"calibration precision / recall of v{run.model_version.number}",
    }
    return out

"""What the metrics page and the dashboard show of model quality: per model version (one active-
learning cycle each) the labels it learnt from, the thresholds its detections used (calibrated
ones travel with the version: labeling.scoring.thresholds), object-level precision / recall / F1
(the headline) and COCO AP@0.5 / AP@[.5:.95] over the scenes it scored, window-level figures as a
diagnostic, and a window confusion matrix of one scoring run.

Scenes with ground truth are measured against it (the run's stored metrics, from
labeling.scoring.results.compute_metrics); scenes without are measured against the reviewers'
effective annotations (window level only: the window nearest each annotated box, its training
label as truth). No HTTP here; labeling/views/pages.py renders it."""

from __future__ import annotations

import threading
from collections import OrderedDict, defaultdict

import numpy as np
from django.db.models import Count

from labeling.loop.cycle import effective_annotations, rounded_prf, training_label
from labeling.loop.regions import is_region, object_boxes, region_windows
from labeling.loop.trained_on import trained_on
from labeling.models import Annotation, ScoringRun
from labeling.scoring.results import load_grid, load_scene_ground_truth, project_thresholds
from labeling.scoring.thresholds import run_threshold_source, run_thresholds
from mlcore.eval.metrics import window_metrics, window_truth
from mlcore.inference.postprocess import decided_labels

_CACHE_SIZE = 32
_cache: OrderedDict = OrderedDict()
_lock = threading.Lock()


def predicted_labels(grid, project, thresholds=None) -> np.ndarray:
    """Class index per window (R, K) by the hit rule: the best class whose probability reaches its
    threshold (the run's, labeling.scoring.thresholds.run_thresholds; default the project's), else
    the negative class (as labeling.scoring.results stores detections)."""
    if thresholds is None:
        thresholds = project_thresholds(project, grid.classes)
    return decided_labels(grid.probs, grid.classes, thresholds, project.negative_class)


def annotation_truth(grid, project, annotations) -> np.ndarray:
    """Window truth (R, K) from reviewers' annotations: the grid window whose centre is nearest
    each annotated box's centre (within half a window) gets the annotation's training label;
    every other window is -1 (unknown). A background region gives each window it teaches
    (labeling.loop.regions: objects win, capped) the negative class, as training saw it."""
    classes = list(grid.classes)
    truth = np.full((len(grid.ys), len(grid.xs)), -1, dtype=np.int64)
    if not len(grid.ys) or not len(grid.xs):
        return truth
    half = grid.window / 2.0
    cy, cx = np.asarray(grid.ys) + half, np.asarray(grid.xs) + half
    annotations = list(annotations)
    objects = object_boxes(annotations, project)
    for a in sorted(annotations, key=lambda a: (a.created_at, a.pk)):  # newest written last
        label = training_label(a, project)
        if label not in classes:
            continue
        boxes = [(a.x, a.y, a.w, a.h)]
        if is_region(a):
            boxes = region_windows(project, a, objects[a.scene_id])
        for x, y, w, h in boxes:
            ay, ax = y + h / 2.0, x + w / 2.0
            r, c = int(np.abs(cy - ay).argmin()), int(np.abs(cx - ax).argmin())
            if abs(cy[r] - ay) <= half and abs(cx[c] - ax) <= half:
                truth[r, c] = classes.index(label)
    return truth


def _scene_annotations(scene) -> list[Annotation]:
    rows = Annotation.objects.filter(scene=scene).only(
        "id", "scene_id", "kind", "label", "undoes_id", "created_at", "x", "y", "w", "h"
    )
    return effective_annotations(rows)


def _last_annotation_id(scene) -> int:
    last = Annotation.objects.filter(scene=scene).order_by("-id").values_list("id", flat=True)
    return last.first() or 0


def run_confusion(run) -> dict:
    """Window confusion matrix of a done run (rows: truth, columns: prediction), against the
    scene's ground truth, else against its annotations. Cached per run (and annotation count)."""
    scene, project = run.scene, run.scene.project
    truth_boxes = load_scene_ground_truth(scene)
    stamp = None if truth_boxes is not None else _last_annotation_id(scene)
    thresholds = run_thresholds(run)
    key = (run.pk, str(run.finished_at), stamp, str(sorted(thresholds.items())))
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    grid = load_grid(run)
    classes = list(grid.classes)
    negative = project.negative_class if project.negative_class in classes else None
    if truth_boxes is not None:  # every box, negative tiles too (as labeling.scoring.results)
        truth = window_truth(grid.ys, grid.xs, grid.window, truth_boxes, classes, negative)
        against = "ground_truth"
    else:
        truth = annotation_truth(grid, project, _scene_annotations(scene))
        against = "annotations"
    result = window_metrics(truth, predicted_labels(grid, project, thresholds), classes)
    out = {
        "run": run.pk,
        "thresholds": thresholds,
        "scene": scene.name,
        "model_version": run.model_version.number,
        "against": against,
        "classes": classes,
        "matrix": result["confusion"],
        "windows": result["windows"],
        "accuracy": round(result["accuracy"], 4),
        "per_class": result["per_class"],
    }
    with _lock:
        _cache[key] = out
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return out


def _window_counts(metrics: dict, negative: str) -> tuple[int, int, int]:
    per = (metrics.get("window") or {}).get("per_class") or {}
    rows = [v for c, v in per.items() if c != negative]
    return tuple(sum(int(v[k]) for v in rows) for k in ("tp", "fp", "fn"))  # type: ignore


def _object_counts(metrics: dict) -> tuple[int, int, int] | None:
    overall = (metrics.get("object") or {}).get("overall")
    if not overall:
        return None
    return int(overall["tp"]), int(overall["fp"]), int(overall["fn"])


def mean_ap(coco_rows: list[dict]) -> dict | None:
    """COCO AP@0.5 and AP@[.5:.95] of a version: the mean over the scenes with ground truth it
    scored (each computed once, when its run was stored:
    labeling.scoring.results.compute_metrics)."""
    if not coco_rows:
        return None
    return {
        k: round(float(np.mean([float(c.get(k) or 0.0) for c in coco_rows])), 4)
        for k in ("ap50", "ap")
    }


def latest_runs_by_version(project, version=None) -> dict[int, list[ScoringRun]]:
    """Per model version id (only ``version``'s when given): its latest done run of each scene."""
    runs = ScoringRun.objects.filter(scene__project=project, status="done")
    if version is not None:
        runs = runs.filter(model_version=version)
    runs = runs.select_related("scene", "model_version").order_by("finished_at", "id")
    per: dict[int, dict[int, ScoringRun]] = defaultdict(dict)
    for run in runs:
        per[run.model_version_id][run.scene_id] = run
    return {v: list(scenes.values()) for v, scenes in per.items()}


def version_rows(project, with_annotations: bool = True) -> list[dict]:
    """One row per model version, oldest first: labels used (effective annotations the version
    learnt from) and the total learnt so far (the learning curve's x), window- and object-level
    precision/recall/F1 micro-averaged over the positive classes of the scenes it scored, and
    corrections stick (the share of the answers it learnt from that it decides as answered)."""
    negative = project.negative_class
    runs_of = latest_runs_by_version(project)
    consumed = defaultdict(int)
    counted = (
        Annotation.objects.filter(project=project, consumed_by__isnull=False)
        .values("consumed_by_id")
        .annotate(n=Count("id"))
    )
    for row in counted:
        consumed[row["consumed_by_id"]] = row["n"]
    rows, cumulative = [], 0
    for version in project.model_versions.order_by("number"):
        data = version.data_counts or {}
        labels_used = int(data.get("annotations_used", 0) or 0)
        labels_known = "annotations_used" in data or version.status == "ready"
        # Effective labels only (what the cycle learnt from: labeling.loop.cycle.
        # pending_annotations): the consumed rows also hold undone and superseded answers and
        # the undo rows. A version learnt its labels once it was promoted (ready), so the total
        # is the sum over those.
        if version.status == "ready":
            cumulative += labels_used
        window_gt = [0, 0, 0]
        object_gt = [0, 0, 0]
        window_ann = [0, 0, 0]
        scenes_gt, scenes_ann, has_object = [], [], False
        coco, used = [], {}
        for run in runs_of.get(version.pk, []):
            metrics = run.metrics or {}
            used = {"thresholds": run_thresholds(run), "source": run_threshold_source(run)}
            if metrics.get("coco"):
                coco.append(metrics["coco"])
            if metrics.get("window"):
                for i, n in enumerate(_window_counts(metrics, negative)):
                    window_gt[i] += n
                scenes_gt.append(run.scene.name)
                counts = _object_counts(metrics)
                if counts is not None:
                    has_object = True
                    for i, n in enumerate(counts):
                        object_gt[i] += n
            elif with_annotations and Annotation.objects.filter(scene=run.scene).exists():
                conf = run_confusion(run)
                for c, v in conf["per_class"].items():
                    if c != negative:
                        window_ann[0] += v["tp"]
                        window_ann[1] += v["fp"]
                        window_ann[2] += v["fn"]
                scenes_ann.append(run.scene.name)
        rows.append(
            {
                "number": version.number,
                "engine": version.engine,
                "status": version.status,
                "is_current": version.is_current,
                "parent": version.parent.number if version.parent_id else None,
                "labels_used": labels_used,
                # False while a cycle has not fed its corrections yet (labels used not known).
                "labels_known": labels_known,
                # Dataset images and reviewed labels apart, in words (the dashboard's row).
                "trained_on": trained_on(version, labels_used, labels_known),
                "labels_consumed": consumed[version.pk],
                "labels_cumulative": cumulative,
                "val_accuracy": (version.metrics or {}).get("val_accuracy"),
                "created_at": version.created_at.isoformat(),
                "scored_scenes": len(runs_of.get(version.pk, [])),
                "scenes_ground_truth": scenes_gt,
                "scenes_annotations": scenes_ann,
                "window": rounded_prf(*window_gt) if scenes_gt else None,
                "object": rounded_prf(*object_gt) if has_object else None,
                "window_annotations": rounded_prf(*window_ann) if scenes_ann else None,
                "coco": mean_ap(coco),
                # labeling.loop.corrections: the answers it learnt from that it now keeps.
                "corrections_stick": (version.metrics or {}).get("corrections_stick"),
                "calibrated_thresholds": dict(version.thresholds or {}),
                "thresholds_used": used.get("thresholds"),
                "threshold_source": used.get("source"),
            }
        )
    return rows

"""Which score threshold decides a detection, per positive class: one rule for the scoring run,
the viewer's slider, the detections feed, the metrics page and the review queue.

A model version carries the thresholds calibrated on held-out data when it was made (the ONNX
file's ``thresholds`` metadata, copied to ``ModelVersion.thresholds`` when the file is
registered). A scoring run uses them when the project says so (``use_calibrated_thresholds``,
the default); a class the version has no threshold for, a version without any, or a project that
chose fixed thresholds, uses the project's ``threshold`` / ``class_thresholds`` (0.9 by default:
the published pipeline's value). The thresholds a run used are stored with its metrics, so
everything shown about a run reads the same numbers later, whatever the settings say by then."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

CALIBRATED = "calibrated"
PROJECT = "project"


def model_file_thresholds(path) -> dict[str, float]:
    """Calibrated thresholds stored in a model file's metadata; {} for a file without them (or
    one that is not ONNX, e.g. an MXNet symbol file)."""
    if not str(path).endswith(".onnx"):
        return {}
    from mlcore.model.onnx_file import read_metadata

    try:
        meta = read_metadata(path)
    except Exception as exc:  # a model we can score but whose metadata we cannot read
        log.warning("no calibrated thresholds read from %s: %s", path, exc)
        return {}
    return {str(c): float(t) for c, t in (meta.get("thresholds") or {}).items()}


def version_thresholds(project, version, classes) -> tuple[dict[str, float], str]:
    """(threshold per positive class, source) for a new scoring run of ``version``; source is
    "calibrated" when at least one class uses the version's calibrated value, else "project"."""
    positives = [c for c in classes if c != project.negative_class]
    calibrated = dict(getattr(version, "thresholds", None) or {})
    use = project.use_calibrated_thresholds and any(c in calibrated for c in positives)
    out = {
        c: float(calibrated[c]) if use and c in calibrated else project.threshold_for(c)
        for c in positives
    }
    return out, CALIBRATED if use else PROJECT


def run_thresholds(run) -> dict[str, float]:
    """The thresholds a done run's detections were made with (stored in its metrics); for a run
    stored before they were recorded, what the project and version give now."""
    stored = (run.metrics or {}).get("thresholds")
    if stored:
        return {c: float(t) for c, t in stored.items()}
    project = run.scene.project
    return version_thresholds(project, run.model_version, project.class_names)[0]


def run_threshold_source(run) -> str:
    return (run.metrics or {}).get("threshold_source") or PROJECT


def slider_start(thresholds: dict[str, float], default: float) -> float:
    """Where a single threshold slider starts: the calibrated threshold (the lowest, when the
    classes differ, so that no class's detections are hidden at the start)."""
    return round(min(thresholds.values()), 2) if thresholds else float(default)


def viewer_thresholds(project, run, requested=None) -> dict:
    """What the scene viewer's slider starts from: the run's thresholds per class (calibrated
    ones when the model version has them), the slider at the lowest of them, or at ``requested``
    (``?threshold=`` in the page URL, e.g. the published 0.9) when it is a number in [0, 1]."""
    per_class = run_thresholds(run) if run is not None else {
        c: project.threshold_for(c) for c in project.class_names if c != project.negative_class
    }  # fmt: skip
    out = {
        "threshold": slider_start(per_class, project.threshold),
        "class_thresholds": per_class,
        "threshold_source": run_threshold_source(run) if run is not None else PROJECT,
        "published_threshold": float(project.threshold),
        "threshold_from_url": False,
    }
    try:
        value = float(requested) if requested not in (None, "") else None
    except (TypeError, ValueError):
        value = None
    if value is not None and 0.0 <= value <= 1.0:
        out["threshold"], out["threshold_from_url"] = round(value, 2), True
    return out


def hit_class(classes, probs, thresholds: dict[str, float], negative: str | None) -> int:
    """Index of the class a window is detected as (mlcore.inference.postprocess.window_hits' rule,
    so the review queue's guess agrees with the boxes): the most probable positive class whose
    probability reaches its threshold, else the negative class; the argmax without one."""
    classes = list(classes)
    if negative not in classes:
        return int(max(range(len(classes)), key=lambda i: probs[i]))
    passing = [
        i
        for i, c in enumerate(classes)
        if c != negative and float(probs[i]) >= thresholds.get(c, float("inf"))
    ]
    if not passing:
        return classes.index(negative)
    return max(passing, key=lambda i: probs[i])

"""A scoring run's detections as a COCO results file (the list ``COCO.loadRes`` reads), so that
pycocotools, faster-coco-eval or FiftyOne can load them beside the annotations export.

Ids match ``labeling.review.exports.export_coco``: the image id is the scene's id, category ids are
1-based over ``Project.class_names`` (the positive classes, then the negative class; the
negative class never appears among detections).

Every row's ``score`` is the box's class probability, the number the viewer, the detections
API and every other export show for it. The ranked list also carries ``rank_score``
(probability x centredness from a model with a box head; equal to the probability without one),
the order the run's COCO AP was computed in: copy it into ``score`` to reproduce that AP.

Two sets of boxes: ``ranked`` (default) holds every merged box scoring at least
``labeling.scoring.results.AP_FLOOR``, the ranked list the run's COCO AP was computed on (AP needs
the low scores too); ``merged`` holds the run's detections as stored (at the run's thresholds)."""

from __future__ import annotations

from labeling.models import Detection, ScoringRun
from labeling.web.input_parsing import parse_fraction
from mlcore.eval.coco_eval import coco_results

BOXES = ("ranked", "merged")


class ExportError(ValueError):
    """Bad export parameters; the message says what to send."""


def category_ids(project) -> dict[str, int]:
    """Class name -> COCO category id, as the annotations export numbers them."""
    return {c: i + 1 for i, c in enumerate(project.class_names)}


def run_detections(run: ScoringRun, boxes: str = "ranked") -> list[dict]:
    if boxes == "merged":
        rows = Detection.objects.filter(run=run, kind="merged").values_list(
            "x", "y", "w", "h", "label", "score"
        )
        return [dict(zip(("x", "y", "w", "h", "label", "score"), r, strict=True)) for r in rows]
    from labeling.scoring.results import load_grid, ranked_detections

    if not run.grid_key:
        raise ExportError(f"run {run.pk} has no probability grid: export boxes=merged instead")
    hits = ranked_detections(run.scene.project, load_grid(run))
    return [
        {"x": x, "y": y, "w": w, "h": h, "label": hits.classes[int(c)], "score": p,
         "rank_score": s}
        for x, y, w, h, c, s, p in zip(hits.x, hits.y, hits.w, hits.h, hits.label, hits.score,
                                       hits.probability(), strict=True)
    ]  # fmt: skip


def export_run_results(run: ScoringRun, boxes: str = "ranked", min_score=None) -> list[dict]:
    """The run's detections in the COCO results format, highest rank score first."""
    if boxes not in BOXES:
        raise ExportError(f"boxes must be one of {', '.join(BOXES)}, got {boxes!r}")
    if run.status != "done":
        raise ExportError(f"run {run.pk} is {run.status}: only a finished run has detections")
    floor = parse_fraction(min_score, "min_score", ExportError)
    project = run.scene.project
    detections = run_detections(run, boxes)
    if floor is not None:
        detections = [d for d in detections if d["score"] >= floor]
    positives = {c: i for c, i in category_ids(project).items() if c != project.negative_class}
    # COCO AP ranks by the rank score (what the run's AP used); "score" is the probability.
    rows = []
    for d in sorted(detections, key=lambda d: -float(d.get("rank_score", d["score"]))):
        for row in coco_results([d], run.scene_id, positives):
            if "rank_score" in d:
                row["rank_score"] = round(float(d["rank_score"]), 5)
            rows.append(row)
    return rows

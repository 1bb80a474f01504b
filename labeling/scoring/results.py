"""What a finished scoring run leaves behind: the probability grid in storage, its detections in
the database (raw windows and NMS-merged boxes, at the model version's calibrated thresholds:
labeling.scoring.thresholds) and its metrics. Called by the `score` job after
the Spark driver returns the grid; one transaction, so a run is either done with all of it or
not done at all.

From a model with a box head (mlcore.inference.postprocess) a merged detection's box is the refined
box of the window NMS kept; its stored score stays the class probability, the number the thresholds,
the viewer's slider and its "class score" label compare (the ranking score, probability x
centredness, orders the detections and COCO AP). Raw window rows are the windows themselves."""

from __future__ import annotations

import json
import tempfile
from itertools import islice
from pathlib import Path

import numpy as np
from django.db import connection, transaction
from django.utils import timezone

from labeling.jobs.enqueue import JobAbandoned
from labeling.models import Detection, ScoringRun
from labeling.projects.storage_keys import get_storage, run_prefix
from labeling.scoring.thresholds import PROJECT, version_thresholds
from mlcore.eval.coco_eval import coco_ap
from mlcore.eval.metrics import grid_window_metrics, object_metrics
from mlcore.inference.postprocess import AP_FLOOR, AP_MAX_WINDOWS, Hits, nms, window_hits
from mlcore.inference.postprocess import ranked_detections as mlcore_ranked_detections
from mlcore.inference.scoring import ScoreGrid

# Raw windows below this score are not stored as rows (the grid keeps every window anyway);
# the viewer's threshold slider can still go down to it.
WINDOW_FLOOR = 0.5
DETECTION_BATCH = 2000  # rows per INSERT where COPY is not available (SQLite)
DETECTION_COLUMNS = ("run_id", "kind", "label", "score", "x", "y", "w", "h", "probs")
# COCO AP ranks every box down to this score (the usual floor of COCO submissions), from at most
# this many windows per class (COCO's maxDets in spirit: NMS is quadratic in the windows, and a
# 10x scene at a timid model would otherwise hand it hundreds of thousands).


def grid_key(run) -> str:
    return f"{run_prefix(run)}/grid.npz"


def save_grid(run, grid: ScoreGrid) -> str:
    """The grid in ScoreGrid's own .npz format, so mlcore reads it back unchanged."""
    key = grid_key(run)
    with tempfile.TemporaryDirectory() as tmp:
        path = grid.save(Path(tmp) / "grid.npz")
        with open(path, "rb") as handle:
            get_storage().write(key, handle)
    return key


def load_grid(run) -> ScoreGrid:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "grid.npz"
        path.write_bytes(get_storage().read(run.grid_key))
        return ScoreGrid.load(path)


def project_thresholds(project, classes) -> dict[str, float]:
    return {c: project.threshold_for(c) for c in classes if c != project.negative_class}


def load_scene_ground_truth(scene) -> list[dict] | None:
    if not scene.ground_truth_key:
        return None
    return json.loads(get_storage().read(scene.ground_truth_key))


def ranked_detections(project, grid: ScoreGrid):
    """The ranked boxes COCO AP is computed on and the COCO results export holds
    (mlcore.inference.postprocess.ranked_detections with the project's negative class and NMS
    IoU)."""
    iou = project.nms_iou_for(grid.window, grid.step)
    return mlcore_ranked_detections(grid, project.negative_class, iou, AP_FLOOR, AP_MAX_WINDOWS)


def compute_metrics(
    project, scene, grid: ScoreGrid, merged, thresholds=None, threshold_source=PROJECT
) -> dict:
    """Detection counts per class and the thresholds used, and against the scene's ground truth
    (when it has one): object-level precision/recall/F1 of the merged boxes (the headline), COCO
    AP@0.5 and AP@[.5:.95] of the ranked boxes (mlcore.eval.coco_eval on ranked_detections) and
    window-level metrics (a diagnostic). The window truth is mlcore.eval.metrics.window_truth given
    ALL ground-truth boxes (negative tiles too: one pasted over a car's centre makes that window
    negative)."""
    negative = project.negative_class
    if thresholds is None:
        thresholds = project_thresholds(project, grid.classes)
    counts = {
        c: int((merged.label == i).sum()) for i, c in enumerate(grid.classes) if c != negative
    }
    out: dict = {
        "detections": counts,
        "thresholds": {c: round(float(t), 4) for c, t in thresholds.items()},
        "threshold_source": threshold_source,
    }
    truth = load_scene_ground_truth(scene)
    if truth is None:
        return out
    detections = merged.to_detections("merged")
    window = grid_window_metrics(grid, truth, negative=negative, thresholds=thresholds)
    objects = object_metrics(detections, truth, grid.classes, negative=negative)
    objects.pop("matches", None)
    ranked = ranked_detections(project, grid).to_detections("merged")
    coco = coco_ap(ranked, truth, grid.classes, negative=negative)
    coco |= {"score_floor": AP_FLOOR, "max_windows": AP_MAX_WINDOWS}
    out.update({"against": "ground_truth", "window": window, "object": objects, "coco": coco})
    return out


def refresh_metrics(run: ScoringRun) -> dict:
    """Recompute a done run's metrics from its stored grid and merged detections (leaving the
    detections alone), at the thresholds the run used: for runs stored before a metric existed
    (COCO AP) or before the window truth counted every tile. Returns the new metrics."""
    scene = run.scene
    project = scene.project
    grid = load_grid(run)
    rows = list(Detection.objects.filter(run=run, kind="merged").values_list(
        "x", "y", "w", "h", "label", "score"))  # fmt: skip
    index = {c: i for i, c in enumerate(grid.classes)}
    cols = np.array([(x, y, w, h, index.get(lab, -1), s) for x, y, w, h, lab, s in rows],
                    dtype=np.float64).reshape(-1, 6)  # fmt: skip
    merged = Hits(cols[:, 0], cols[:, 1], cols[:, 2], cols[:, 3], cols[:, 4].astype(np.int64),
                  cols[:, 5], list(grid.classes))  # fmt: skip
    from labeling.scoring.thresholds import run_threshold_source, run_thresholds

    metrics = compute_metrics(
        project, scene, grid, merged, run_thresholds(run), run_threshold_source(run)
    )
    run.metrics = metrics
    run.save(update_fields=["metrics"])
    return metrics


def insert_detections(rows) -> None:
    """Rows (tuples in DETECTION_COLUMNS order) into the detections table as they are made, never
    all in memory at once: COPY on PostgreSQL, batched INSERTs elsewhere (SQLite)."""
    if connection.vendor == "postgresql":
        copy_detections(rows)
    else:
        insert_detections_in_batches(rows)


def copy_detections(rows) -> None:
    """One COPY (bulk_create took 258 s for the gigapixel bench's 131k boxes and 845k windows)."""
    columns = ", ".join(DETECTION_COLUMNS)
    with connection.cursor() as cursor:
        with cursor.cursor.copy(f"COPY {Detection._meta.db_table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def insert_detections_in_batches(rows) -> None:
    while batch := list(islice(rows, DETECTION_BATCH)):
        Detection.objects.bulk_create(
            Detection(
                **dict(zip(DETECTION_COLUMNS[:-1], row[:-1], strict=True)),
                probs=json.loads(row[-1]),
            )
            for row in batch
        )


def store_scoring_result(run: ScoringRun, grid: ScoreGrid, timings: dict | None = None) -> None:
    """Grid to storage, detections and metrics to the database, the run marked done; a run
    failed meanwhile raises JobAbandoned and stores nothing in the database."""
    scene = run.scene
    project = scene.project
    negative = project.negative_class
    key = save_grid(run, grid)
    thresholds, source = version_thresholds(project, run.model_version, grid.classes)
    merged = nms(
        window_hits(grid, thresholds, negative), iou=project.nms_iou_for(grid.window, grid.step)
    )
    floor = {c: min(WINDOW_FLOOR, t) for c, t in thresholds.items()}
    raw = window_hits(grid, floor, negative)
    metrics = compute_metrics(project, scene, grid, merged, thresholds, source)

    # Probabilities of each raw window, looked up in one vectorised step (ys, xs are sorted).
    windows = raw.window_boxes()
    wx, wy = windows[:, 0], windows[:, 1]
    at = np.round(grid.probs[np.searchsorted(grid.ys, wy), np.searchsorted(grid.xs, wx)], 4)

    def window_rows():
        for i, (x, y, w, h, lab, score) in enumerate(
            zip(wx, wy, windows[:, 2], windows[:, 3], raw.label, raw.probability(), strict=True)
        ):
            probs = dict(zip(grid.classes, at[i].tolist(), strict=True))
            yield (run.pk, "window", raw.classes[int(lab)], float(score), int(x), int(y), int(w),
                   int(h), json.dumps(probs))  # fmt: skip

    def merged_rows():
        for x, y, w, h, lab, score in zip(
            merged.x, merged.y, merged.w, merged.h, merged.label, merged.probability(), strict=True
        ):
            yield (run.pk, "merged", merged.classes[int(lab)], float(score), int(round(x)),
                   int(round(y)), int(round(w)), int(round(h)), "{}")  # fmt: skip

    with transaction.atomic():
        # The row lock orders this against a failure written meanwhile (the job declared dead
        # or lost, its cycle cancelled: labeling.jobs.enqueue.fail_run_of): a failed run stays
        # failed.
        now = ScoringRun.objects.select_for_update().filter(pk=run.pk)
        status, error = now.values_list("status", "error").first() or ("deleted", "")
        if status in ("failed", "deleted"):
            raise JobAbandoned(f"scoring run {run.pk} is {status} ({error}): result not stored")
        run.detections.all().delete()  # a retried run replaces its own rows, nothing else
        insert_detections(window_rows())
        insert_detections(merged_rows())
        run.grid_key = key
        run.metrics = metrics
        run.timings = dict(run.timings) | dict(timings or {})
        run.n_windows = int(grid.probs.shape[0] * grid.probs.shape[1])
        run.status, run.error, run.finished_at = "done", "", timezone.now()
        run.save(
            update_fields=[
                "grid_key", "metrics", "timings", "n_windows", "status", "error", "finished_at"
            ]
        )  # fmt: skip

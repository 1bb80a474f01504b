"""RQ job of the `score` queue: score one scene with one model version on Spark.

The Spark driver (workers.spark_score) computes the probability grid; this job writes the Parquet
egress next to the scene, hands the grid to labeling.scoring.results.store_scoring_result (grid
file, detections, metrics; marks the run done), records the per-partition timings and the Spark UI
URL, and, when the run belongs to a retrain cycle, lets the cycle promote or fail its version
and measures how many of the answers it learnt from it keeps (labeling.loop.corrections).
A failure marks only this run failed, with the reason; earlier runs are never touched."""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.utils import timezone

from labeling.jobs.db_cuts import retry_on_cut
from labeling.jobs.enqueue import JobAbandoned
from labeling.loop import cycle
from labeling.loop.corrections import record_corrections_stick
from labeling.models import ScoringRun
from labeling.projects.storage_keys import get_storage, scores_parquet_key

log = logging.getLogger(__name__)


def score_scene(ctx, run_id: int, version_id: int | None = None, partitions: int | None = None):
    from labeling.scoring.results import store_scoring_result
    from workers.spark_score import score_scene_on_spark, write_scores_parquet

    run = ScoringRun.objects.select_related("scene__project", "model_version").get(pk=run_id)
    scene, version = run.scene, run.model_version
    project = scene.project
    if run.status == "done":
        ctx.log(f"run {run.pk} is done already: nothing to do")
        return {"run": run.pk, "skipped": True}
    run.status, run.started_at, run.error = "running", timezone.now(), ""
    run.spark_master = str(settings.SPARK_MASTER)
    # A run failed before its job's turn (its cycle's version failed) is never scored.
    if not ScoringRun.objects.filter(pk=run.pk, status__in=("queued", "running")).update(
        status="running", started_at=run.started_at, error="", spark_master=run.spark_master
    ):
        run.refresh_from_db()
        raise JobAbandoned(f"scoring run {run.pk} is {run.status} ({run.error}): not scored")
    try:
        if not scene.pixels_key:
            raise ValueError(f"scene {scene.name!r} has no pixels yet: import it first")
        if not version.model_key:
            raise ValueError(f"model v{version.number} has no model file: export it first")
        started = time.perf_counter()
        grid, info = score_scene_on_spark(
            str(settings.STORAGE_URL),
            scene.pixels_key,
            version.model_key,
            step=project.score_step,
            object_size=project.object_size,
            master=str(settings.SPARK_MASTER),
            partitions=partitions,
            progress=ctx,
            app_name=f"score-{project.pk}-{scene.pk}",
        )
        spark_s = time.perf_counter() - started
        parquet_started = time.perf_counter()
        run.parquet_key = scores_parquet_key(run)
        write_scores_parquet(grid, get_storage(), run.parquet_key)
        timings = {
            "spark_s": round(spark_s, 3),
            "spark_wall_s": round(info.wall_s, 3),
            "parquet_s": round(time.perf_counter() - parquet_started, 3),
        }
        run.spark_master = info.master or run.spark_master
        run.spark_ui_url = info.spark_ui_url or ""
        run.n_partitions = info.n_partitions
        run.n_windows = int(grid.probs.shape[0] * grid.probs.shape[1])
        run.partitions = info.partition_timings
        run.timings = dict(run.timings) | timings
        run.save(
            update_fields=[
                "parquet_key", "spark_master", "spark_ui_url", "n_partitions", "n_windows",
                "partitions", "timings",
            ]
        )  # fmt: skip
        store_started = time.perf_counter()
        # One transaction (a cut connection rolls it back: it runs again on a new one).
        retry_on_cut(store_scoring_result, run, grid, timings)
        run.refresh_from_db()
        run.timings = dict(run.timings) | {"store_s": round(time.perf_counter() - store_started, 3)}
        run.save(update_fields=["timings"])
        ctx.log(
            f"scored {run.n_windows} windows of {scene.name!r} with v{version.number} in "
            f"{spark_s:.1f}s on {run.spark_master} ({run.n_partitions} partitions, "
            f"{info.scoring})"
        )
    except BaseException as exc:
        # A run failed meanwhile (its job declared dead, its cycle cancelled) keeps its reason.
        ScoringRun.objects.filter(pk=run.pk, status__in=("queued", "running")).update(
            status="failed", error=f"{type(exc).__name__}: {exc}"[:5000], finished_at=timezone.now()
        )
        retry_on_cut(cycle.after_scoring, version)  # fails the cycle's version, if any
        raise
    state = retry_on_cut(cycle.after_scoring, version)
    try:
        record_corrections_stick(version)
    except Exception:  # a figure on the metrics page must not fail a finished scoring run
        log.exception("corrections stick of version %s could not be measured", version.pk)
    version.refresh_from_db()
    return {"run": run.pk, "windows": run.n_windows, "version_status": state,
            "current": version.is_current}  # fmt: skip

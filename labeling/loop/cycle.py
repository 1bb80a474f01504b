"""The active-learning cycle as the pages see it: start one, know whether one runs, promote or
roll back a model version, and which annotations the next cycle will learn from.

A retrain cycle is one chain (see workers/loop_jobs.py and workers/score_jobs.py):

    feed corrections -> train -> export -> rescore every scene (queue `score`) -> metrics
    -> promote the new version to current (only when every step succeeded)

Promotion is one transaction: the current flag moves and the annotations the cycle learnt from
are marked consumed together, so a failed or killed cycle leaves the previous model current and
every annotation pending (and a retry learns from them again)."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from labeling.jobs.enqueue import ACTIVE, QueueUnavailable, cancel, enqueue, fail_run_of, reconcile
from labeling.jobs.kinds import CYCLE_KIND
from labeling.loop.cycle_lock import cycle_process_running
from labeling.loop.first_model import check_first_model
from labeling.models import Annotation, JobRecord, ModelVersion, Project, Scene, ScoringRun
from mlcore.model import starting_model
from mlcore.train.profiles import TRAIN_PROFILES, profile_config, profile_start

IN_FLIGHT = ("pending", "training", "scoring")

# Training profiles (tiny / quick / full) live in mlcore so the CLI and benchmarks share them.


class VersionNotInFlight(RuntimeError):
    """The version a cycle works on was failed (or finished) meanwhile: the cycle stops."""


class CycleAlreadyRunning(Exception):
    """A second cycle was asked for while one runs; the message says which and how far it is."""

    def __init__(self, project, record=None, version=None, process_only=False):
        self.record, self.version = record, version
        if process_only:
            super().__init__(
                f"A process of an earlier retrain cycle of project {project.name!r} is still "
                "running (its job was stopped or failed, and the process has not ended yet). "
                "Try again in a minute."
            )
            return
        what = f"model v{version.number}" if version is not None else "a model"
        where = ""
        if record is not None and record.progress_total:
            where = f" ({record.progress_done}/{record.progress_total} {record.message})".rstrip()
        super().__init__(
            f"A retrain cycle is already running for project {project.name!r}: {what} is "
            f"{version.status if version is not None else 'queued'}{where}. Wait for it to "
            "finish (or fail) before starting another."
        )


# -- annotations -------------------------------------------------------------------------------


def place_of(annotation) -> tuple:
    return (annotation.scene_id, annotation.x, annotation.y, annotation.w, annotation.h)


def effective_annotations(annotations) -> list[Annotation]:
    """The annotations that decide a label: per place (scene, box) the newest one, after undo
    annotations cancelled what they undo (an undone undo restores its target). Undo rows are
    never effective themselves. Newest first."""
    rows = sorted(annotations, key=lambda a: (a.created_at, a.pk), reverse=True)
    cancelled: set[int] = set()
    for a in rows:  # newest first: an undo of an undo is seen before the undo it cancels
        if a.kind == "undo" and a.pk not in cancelled and a.undoes_id:
            cancelled.add(a.undoes_id)
    seen_places: set[tuple] = set()
    effective = []
    for a in rows:
        if a.kind == "undo" or a.pk in cancelled:
            continue
        place = place_of(a)
        if place in seen_places:
            continue
        seen_places.add(place)
        effective.append(a)
    return effective


def unconsumed(project):
    return Annotation.objects.filter(project=project, consumed_by__isnull=True)


def pending_annotations(project) -> list[Annotation]:
    """Annotations the next cycle will learn from: effective and not yet consumed by a model.

    The effective label is computed over all of the project's history (a new annotation may
    override one a model already learnt from), then only unconsumed ones are kept."""
    history = Annotation.objects.filter(project=project).order_by("-created_at", "-id")
    return [a for a in effective_annotations(history) if a.consumed_by_id is None]


def training_label(annotation, project) -> str:
    """The class whose canvases a correction joins: a false positive (or anything labelled as
    the negative class) teaches the negative class; everything else teaches its label."""
    if annotation.kind == "false_positive":
        return project.negative_class
    return annotation.label


# -- cycle state --------------------------------------------------------------------------------


def reconcile_job(record: JobRecord) -> JobRecord:
    """labeling.jobs.enqueue.reconcile: a job whose worker process is dead (SIGKILL, out of memory)
    is failed at once instead of after RQ's heartbeat timeout."""
    return reconcile(record)


def jobs_of_version(version) -> list[JobRecord]:
    return list(JobRecord.objects.filter(project=version.project, params__version_id=version.pk))


def fail_version(version, reason: str) -> None:
    """Mark an in-flight version failed (never touches the current model or annotations). Its
    other jobs are cancelled (a queued scoring job never runs, a running one is stopped: their
    work could not be used) and its scoring runs not done are failed with it, so none stays
    queued or running forever."""
    # One transaction: whoever reads the version failed reads its jobs and runs failed too (RQ is
    # told to drop or stop the jobs once it commits).
    with transaction.atomic():
        updated = ModelVersion.objects.filter(pk=version.pk, status__in=IN_FLIGHT).update(
            status="failed", error=reason[:5000], finished_at=timezone.now(), is_current=False
        )
        if updated:
            version.status, version.error = "failed", reason[:5000]
            why = f"model v{version.number} failed: {reason}"[:5000]
            cancel_jobs_of(version, f"Cancelled: {why}")
            ScoringRun.objects.filter(model_version_id=version.pk, status__in=ACTIVE).update(
                status="failed", error=why, finished_at=timezone.now()
            )


def cancel_jobs_of(version, reason: str) -> None:
    """Cancel the version's queued and running jobs, except the one calling (a scoring job that
    failed its own run is ending anyway; stopping it would kill it mid-report)."""
    from rq import get_current_job

    calling = getattr(get_current_job(), "id", None)
    for record in JobRecord.objects.filter(
        project_id=version.project_id, params__version_id=version.pk, status__in=ACTIVE
    ):
        if not calling or record.rq_job_id != calling:
            cancel(record, reason)


def advance(version, to: str, allowed=IN_FLIGHT) -> None:
    """Move an in-flight version to status ``to`` in one conditional UPDATE, or raise
    VersionNotInFlight: a version already failed (its job was declared dead) or finished is
    never brought back (a surviving process once moved failed -> scoring -> ready)."""
    if not ModelVersion.objects.filter(pk=version.pk, status__in=allowed).update(status=to):
        status = ModelVersion.objects.filter(pk=version.pk).values_list("status", flat=True)
        raise VersionNotInFlight(
            f"model v{version.number} is {status.first()}, no longer in flight: this cycle stops"
        )
    version.status = to


def fail_killed(rq_job_id: str, reason: str) -> None:
    """Called by the worker (workers.rq_worker) the moment it sees its horse killed: the job's
    record and, for a cycle, its model version read failed at once, not at the next page view."""
    record = JobRecord.objects.filter(rq_job_id=rq_job_id, status__in=ACTIVE).first()
    if record is None:
        return
    error = f"The worker stopped before the job finished: {reason}."[:5000]
    updated = JobRecord.objects.filter(pk=record.pk, status__in=ACTIVE).update(
        status="failed", error=error, finished_at=timezone.now()
    )
    if updated:
        record.status, record.error = "failed", error
        fail_run_of(record)  # its scoring run reads failed, not running forever
        if record.project is not None:
            reconcile_versions(record.project)


def reconcile_versions(project) -> None:
    """Make in-flight model versions follow their jobs: a version one of whose jobs failed is
    marked failed with the first failure's reason at once (its other jobs are cancelled:
    fail_version), not after its other scoring jobs ran to no purpose. Then scoring runs
    whose job has ended without finishing them are failed (reconcile_runs)."""
    for version in ModelVersion.objects.filter(project=project, status__in=IN_FLIGHT):
        records = [reconcile_job(r) for r in jobs_of_version(version)]
        failed = [r for r in records if r.status == "failed"]
        if failed:
            first = min(failed, key=lambda r: (r.finished_at is None, r.finished_at, r.pk))
            fail_version(version, f"{first.kind} job failed: {first.error}")
        elif not records and version.status != "pending":
            fail_version(version, "no job is running this version (lost)")
    reconcile_runs(project)


def reconcile_runs(project) -> None:
    """A scoring run still queued or running whose job has ended (killed, lost, failed; also a
    plain rescore outside any cycle) is failed with the job's reason."""
    for run in ScoringRun.objects.filter(scene__project=project, status__in=ACTIVE):
        record = (
            JobRecord.objects.filter(project=project, kind="score", params__run_id=run.pk)
            .order_by("-created_at", "-id")
            .first()
        )
        if record is not None and reconcile_job(record).status not in ACTIVE:
            fail_run_of(record)


def running_cycle(project):
    """(JobRecord or None, ModelVersion) of the cycle in flight, or None."""
    reconcile_versions(project)
    version = (
        ModelVersion.objects.filter(project=project, status__in=IN_FLIGHT).order_by("-number")
    ).first()
    if version is None:
        return None
    records = [r for r in jobs_of_version(version) if r.status in ACTIVE]
    return (records[0] if records else None), version


def train_config_for(
    project, profile: str = "quick", overrides=None, finetune=False, start=False
) -> dict:
    """The training options of a version: the profile's (its fine-tune overrides for a
    fine-tune, its ``from_start`` ones for a first model from the starting model), the
    project's window and step, then ``overrides``."""
    if profile not in TRAIN_PROFILES:
        raise ValueError(f"unknown training profile {profile!r}; use one of {list(TRAIN_PROFILES)}")
    config = profile_config(profile, finetune=finetune, start=start)
    config.update({"window": project.window_size, "step": project.train_step})
    config.update(overrides or {})
    return config


def first_model_start(project, profile: str, from_scratch: bool = False) -> dict:
    """What a project's new first model starts from: the starting model (its name, card
    figures and sha256, recorded on the version) or scratch. MXNet projects, the tiny profile,
    the project's "start from scratch" setting and ``from_scratch`` train from random weights.
    A missing or corrupt starting model raises StartingModelError (the cycle is refused)."""
    scratch = from_scratch or project.start_from_scratch or project.engine != "torch"
    if profile_start(profile, scratch) == "scratch":
        return dict(starting_model.SCRATCH)
    starting_model.starting_checkpoint(project.window_size)  # refuse a bad file now, not later
    return starting_model.describe()


def start_cycle(
    project,
    user=None,
    profile: str = "quick",
    config: dict | None = None,
    new_model: bool = False,
    from_scratch: bool = False,
) -> JobRecord:
    """Start a retrain cycle: a new model version (pending) and its job on the `train` queue.

    Raises CycleAlreadyRunning while another cycle of the project is in flight. Without a
    current model (or with ``new_model``) a new first model is trained, from the starting
    model or (``from_scratch``, or the project's setting) from random weights (see
    :func:`first_model_start`); else the current one is fine-tuned."""
    try:
        with transaction.atomic():
            # The project row lock serialises two clicks arriving together.
            Project.objects.select_for_update().get(pk=project.pk)
            running = running_cycle(project)
            if running is not None:
                raise CycleAlreadyRunning(project, *running)
            if cycle_process_running(project.pk):  # e.g. a horse that outlived its worker
                raise CycleAlreadyRunning(project, process_only=True)
            parent = project.current_model()
            finetune = parent is not None and not new_model
            if not finetune:  # refused with the reason, no failed version left behind
                check_first_model(project, pending_annotations(project))
            start = None if finetune else first_model_start(project, profile, from_scratch)
            from_start = start is not None and start["kind"] == "starting-model"
            config = train_config_for(project, profile, config, finetune, from_start)
            if finetune:
                started_from = {"kind": "fine-tune", "name": f"v{parent.number}"}
            else:
                started_from = start
            number = (project.model_versions.aggregate(n=Max("number"))["n"] or 0) + 1
            version = ModelVersion.objects.create(
                project=project,
                number=number,
                engine=project.engine,
                parent=parent,
                status="pending",
                classes=project.class_names,
                train_config=config
                | {
                    "profile": profile,
                    "finetune_from": parent.number if finetune else None,
                    "started_from": started_from,
                },  # fmt: skip
            )
            # The job is pushed to Redis when this block commits (labeling.jobs.enqueue.enqueue).
            record = enqueue(
                CYCLE_KIND,
                "workers.loop_jobs.retrain_cycle",
                project=project,
                version_id=version.pk,
                user_id=getattr(user, "pk", None),
            )
    except QueueUnavailable as exc:
        # Committed, but Redis refused the job: the version fails now, so nothing stays
        # pending and the next retrain is not refused with 409.
        fail_version(version, str(exc))
        raise
    return record


# -- promotion and rollback -----------------------------------------------------------------------


def enqueue_scoring(version, scenes=None) -> list[ScoringRun]:
    """One ScoringRun per scene (all of the project's by default) and its job on the `score`
    queue (the Spark driver, workers.score_jobs.score_scene)."""
    runs = []
    for scene in scenes if scenes is not None else Scene.objects.filter(project=version.project):
        if not scene.pixels_key:
            continue
        run = ScoringRun.objects.create(scene=scene, model_version=version, status="queued")
        enqueue("score", "workers.score_jobs.score_scene", project=version.project,
                queue="score", run_id=run.pk, version_id=version.pk)  # fmt: skip
        runs.append(run)
    return runs


def set_current(project, version) -> ModelVersion:
    """Make ``version`` the project's current model (rollback or promotion), in one transaction
    so the one-current-per-project constraint never sees two."""
    if version.project_id != project.pk:
        raise ValueError(f"model v{version.number} belongs to another project")
    if version.status != "ready" or not version.model_key:
        raise ValueError(
            f"model v{version.number} is {version.status}: only a ready model (trained, exported "
            "and scored) can be made current"
        )
    with transaction.atomic():
        Project.objects.select_for_update().get(pk=project.pk)
        ModelVersion.objects.filter(project=project, is_current=True).exclude(pk=version.pk).update(
            is_current=False
        )
        ModelVersion.objects.filter(pk=version.pk).update(is_current=True)
    version.is_current = True
    return version


def promotion_decision(version) -> dict:
    """Whether a finished cycle's ``version`` may become current: not when its held-out figure
    (``metrics["held_out"]``, the calibration scene, recorded at export) is below the current
    model's by more than ``settings.PROMOTION_MARGIN``. ``{"promoted", "reason", "figure",
    "new", "current", "current_version", "margin"}``; promoted when there is nothing to compare
    (no current model, no calibration scene)."""
    held = (version.metrics or {}).get("held_out") or {}
    margin = float(settings.PROMOTION_MARGIN)
    current = (
        ModelVersion.objects.filter(project_id=version.project_id, is_current=True)
        .exclude(pk=version.pk)
        .first()
    )
    figure = (
        held.get("current") if current and held.get("current_version") == current.number else None
    )
    if current is not None and figure is None:  # the current model changed since the export
        recorded = (current.metrics or {}).get("calibration") or {}
        if held.get("scene") and recorded.get("scene_id") == held.get("scene"):
            from mlcore.inference.calibration import held_out_f1

            figure = held_out_f1(recorded)
    out = {"figure": held.get("figure"), "new": held.get("new"), "current": figure,
           "current_version": current.number if current else None, "margin": margin}  # fmt: skip
    if current is None or figure is None or held.get("new") is None:
        return out | {"promoted": True, "reason": "no held-out figure to compare with"}
    if held["new"] < figure - margin:
        return out | {
            "promoted": False,
            "reason": f"held-out F1 {held['new']:.3f} is below the current v{current.number}'s "
            f"{figure:.3f} by more than the margin {margin:g} (PROMOTION_MARGIN): kept, not "
            "made current",
        }
    return out | {"promoted": True, "reason": "held-out F1 within the margin or better"}


def consume_learnt(version) -> None:
    """Mark the annotations ``version`` learnt from consumed by it (those not consumed yet)."""
    seen = (version.data_counts or {}).get("seen_annotation_ids", [])
    Annotation.objects.filter(pk__in=seen, consumed_by__isnull=True).update(consumed_by=version)


def make_current_by_hand(project, version, user=None) -> list[ScoringRun]:
    """A person makes ``version`` current (rollback, or a version a cycle kept back): what it
    learnt from is consumed now, who did it is recorded with the promotion, and the scenes it
    never scored (imported after it was current) are scored by it, so none shows nothing.
    Returns those scoring runs (queued)."""
    with transaction.atomic():
        set_current(project, version)
        version = ModelVersion.objects.select_for_update().get(pk=version.pk)
        consume_learnt(version)
        decision = (version.metrics or {}).get("promotion")
        if decision and not decision.get("promoted"):
            version.metrics = dict(version.metrics) | {
                "promotion": decision
                | {
                    "promoted": True,
                    "by_hand": getattr(user, "username", None),
                    "at": timezone.now().isoformat(),
                }
            }
            version.save(update_fields=["metrics"])
    return score_scenes_it_has_not_scored(version)


def promote(version) -> bool:
    """Mark ``version`` ready and current and its annotations consumed, all in one transaction;
    a version worse on held-out data than the current one (:func:`promotion_decision`) is marked
    ready but stays aside, its annotations pending. Returns False when the version is no longer
    in flight (failed meanwhile, or promoted)."""
    with transaction.atomic():
        Project.objects.select_for_update().get(pk=version.project_id)
        version = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if version.status not in IN_FLIGHT:
            return False
        decision = promotion_decision(version)
        version.metrics = dict(version.metrics or {}) | {"promotion": decision}
        if not decision["promoted"]:
            version.status, version.finished_at = "ready", timezone.now()
            version.save(update_fields=["status", "finished_at", "metrics"])
            return True
        ModelVersion.objects.filter(project_id=version.project_id, is_current=True).update(
            is_current=False
        )
        version.status, version.is_current, version.finished_at = "ready", True, timezone.now()
        version.save(update_fields=["status", "is_current", "finished_at", "metrics"])
        consume_learnt(version)
    score_scenes_it_has_not_scored(version)
    return True


def score_scenes_it_has_not_scored(version) -> list[ScoringRun]:
    """Score with the version just made current every scene it has not scored: a scene whose
    import ended while the cycle ran was skipped by its scoring step (no pixels yet) and
    scored by the model current then, or by none before a first model; after a rollback, a
    scene imported while a later version was current. Each scene's row lock,
    also taken by the import's follow-up (workers.data_jobs.queue_follow_up), makes sure one of
    the two scores it, never both."""
    runs = []
    scenes = Scene.objects.filter(project_id=version.project_id).exclude(pixels_key="")
    for scene in scenes.exclude(scoring_runs__model_version=version).order_by("pk"):
        with transaction.atomic():
            Scene.objects.select_for_update().get(pk=scene.pk)
            if not ScoringRun.objects.filter(scene=scene, model_version=version).exists():
                runs += enqueue_scoring(version, [scene])
    return runs


def version_metrics(version) -> dict:
    """Per-scene metrics of the version's latest done runs, keyed by scene name."""
    out = {}
    runs = ScoringRun.objects.filter(model_version=version, status="done").select_related("scene")
    for run in runs.order_by("finished_at"):
        out[run.scene.name] = run.metrics
    return out


def after_scoring(version) -> str:
    """Called when one of a cycle's scoring runs ends: fail the version if a run failed, promote
    it when every run is done. Returns the version's status afterwards."""
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().get(pk=version.pk)
        if version.status != "scoring":
            return version.status
        runs = list(ScoringRun.objects.filter(model_version=version))
        failed = [r for r in runs if r.status == "failed"]
        if failed:
            fail_version(
                version, f"scoring scene {failed[0].scene.name!r} failed: {failed[0].error}"
            )
            return "failed"
        if any(r.status != "done" for r in runs):
            return version.status
        version.metrics = dict(version.metrics) | {"scenes": version_metrics(version)}
        version.save(update_fields=["metrics"])
    return "ready" if promote(version) else ModelVersion.objects.get(pk=version.pk).status


# -- metrics summary ------------------------------------------------------------------------------


def rounded_prf(tp: int, fp: int, fn: int) -> dict:
    """Precision, recall and F1 as the pages show them (4 decimals; 0 when undefined)."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": round(precision, 4),
            "recall": round(recall, 4), "f1": round(f1, 4)}  # fmt: skip


def f1_summary(metrics: dict, negative: str = "negative") -> dict:
    """Window- and object-level precision/recall/F1 over the positive classes (micro-averaged)
    of a run's metrics (labeling.scoring.results.compute_metrics); {} without ground truth."""
    out = {}
    window = (metrics or {}).get("window")
    if window:
        per = {c: v for c, v in window["per_class"].items() if c != negative}
        totals = [sum(v[k] for v in per.values()) for k in ("tp", "fp", "fn")]
        out["window"] = rounded_prf(*totals) | {
            "per_class": {c: round(v["f1"], 4) for c, v in per.items()},
            "accuracy": round(window.get("accuracy", 0.0), 4),
        }
    obj = (metrics or {}).get("object")
    if obj:
        overall = obj["overall"]
        out["object"] = rounded_prf(overall["tp"], overall["fp"], overall["fn"]) | {
            "per_class": {c: round(v["f1"], 4) for c, v in obj["per_class"].items()}
        }
    coco = (metrics or {}).get("coco")
    if coco:  # COCO AP@0.5 and AP@[.5:.95] (labeling.scoring.results.compute_metrics)
        out["coco"] = {"ap50": round(coco["ap50"], 4), "ap": round(coco["ap"], 4)}
    if out and (metrics or {}).get("thresholds"):
        out["thresholds"] = dict(metrics["thresholds"])
        out["threshold_source"] = metrics.get("threshold_source", "project")
    return out

"""manage.py simulate_review: a reviewer without a person. It answers the project's review queue
from the scene's ground truth (an oracle), through the same service functions as the review UI
(labeling.review.next_queue_window and record_annotation), then runs a real retrain cycle through
the RQ queues, and reports per cycle: labels used so far, window- and object-level
precision/recall/F1 on the scene (from the new model's scoring run) and the time it took."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from django.core.management.base import CommandError

from labeling.jobs.follow import follow_cycle
from labeling.jobs.local_services import workers_for
from labeling.management.command_support import LabelingCommand, get_project
from labeling.web.formatting import share3


def strategies() -> tuple[tuple[str, ...], str]:
    """(the review queue's strategy names, its default): one list for the UI, the API and the
    simulated reviewer (labeling.review, from mlcore.sampling)."""
    from labeling.review.queue import DEFAULT_STRATEGY, STRATEGIES

    return STRATEGIES, DEFAULT_STRATEGY


def review_service():
    """labeling.review's two functions (the review UI's code path)."""
    try:
        from labeling.review.annotations import record_annotation
        from labeling.review.queue import next_queue_window
    except ImportError as exc:
        raise CommandError(
            f"labeling.review is not available ({exc}): the simulated reviewer answers through "
            "the review API's service functions next_queue_window and record_annotation."
        ) from None
    return next_queue_window, record_annotation


def run_summary(run, negative: str) -> dict:
    from labeling.loop.cycle import f1_summary

    summary = f1_summary(run.metrics, negative)
    if not summary:
        raise CommandError(f"scene {run.scene.name!r} has no ground truth: nothing to measure")
    return summary


def latest_run(scene, version):
    run = scene.shown_run(version)
    if run is None:
        raise CommandError(
            f"model v{version.number} has no finished scoring of {scene.name!r}: score it first "
            "(manage.py score)"
        )
    return run


def get_scene(project, ref: str | None):
    from labeling.models import Scene

    scenes = Scene.objects.filter(project=project).exclude(ground_truth_key="")
    if ref:
        scene = scenes.filter(name=ref).first()
        if scene is None and ref.isdigit():
            scene = scenes.filter(pk=int(ref)).first()
        if scene is None:
            raise CommandError(f"Project {project.name!r} has no scene {ref!r} with ground truth.")
        return scene
    scene = scenes.exclude(pixels_key="").order_by("pk").first()
    if scene is None:
        raise CommandError(
            f"Project {project.name!r} has no scene with ground truth: the oracle needs one "
            "(the demo's collage has it)."
        )
    return scene


def simulate(
    project,
    scene,
    user,
    *,
    cycles: int,
    per_cycle: int,
    strategy: str,
    profile: str,
    redis=None,
    quiet: bool = False,
    report=print,
    timeout: float | None = None,
    record_for=None,
    record_config: dict | None = None,
) -> dict:
    """Run ``cycles`` rounds of (answer ``per_cycle`` queue windows, retrain, rescore) and return
    {"cycles": [...]} with cycle 0 = the current model before any label.

    Each cycle is also recorded as a ``SimulationRun`` of ``record_for`` (default ``project``; a
    benchmark simulating on a copy passes the original) so the metrics page can draw the curve
    beside the project's own; ``record_config`` (seed, tag, ...) is stored with it."""
    from labeling.models import Annotation
    from labeling.scoring.results import load_scene_ground_truth
    from mlcore.eval.oracle import Oracle
    from mlcore.progress import terminal_progress

    next_queue_window, record_annotation = review_service()
    oracle = Oracle(load_scene_ground_truth(scene), project.negative_class, project.class_names)
    queue_strategy = strategy
    current = project.current_model()
    if current is None:
        raise CommandError(f"Project {project.name!r} has no current model: run the demo first.")
    rows = [
        {
            "cycle": 0,
            "version": current.number,
            "labels_this_cycle": 0,
            "labels_used": 0,
            **run_summary(latest_run(scene, current), project.negative_class),
            "seconds": {},
        }
    ]
    report(format_row(rows[0], strategy))
    simulation = record_simulation(
        record_for or project, project, scene, strategy, per_cycle, profile, record_config, rows
    )
    labels_used = 0
    for c in range(1, cycles + 1):
        started = time.perf_counter()
        answered, agreed = 0, 0
        bar = terminal_progress(f"cycle {c}: oracle answers ({strategy})", quiet=quiet)
        while answered < per_cycle:
            item = next_queue_window(project, user, strategy=queue_strategy, scene=scene,
                                     redis=redis)  # fmt: skip
            if not item or item.get("done"):
                break
            x, y, w, h = int(item["x"]), int(item["y"]), int(item["w"]), int(item["h"])
            truth = oracle.label(x, y, w, h)
            agreed += int(item.get("guess") == truth)
            _annotation, created = record_annotation(
                project, scene, user, kind="review", label=truth, x=x, y=y, w=w, h=h,
                client_id=str(uuid.uuid4()), source="simulated",
            )  # fmt: skip
            answered += int(created)
            bar(answered, per_cycle)
        bar.close()
        annotate_s = time.perf_counter() - started
        if answered == 0:
            report(f"cycle {c}: the review queue is empty; stopping")
            break
        labels_used += answered
        from labeling.loop.cycle import start_cycle

        record = start_cycle(project, user, profile=profile)
        version = follow_cycle(record, quiet=quiet, timeout=timeout)
        record.refresh_from_db()
        run = latest_run(scene, version)
        train_s = (
            (record.finished_at - record.started_at).total_seconds() if record.started_at else None
        )
        row = {
            "cycle": c,
            "version": version.number,
            "labels_this_cycle": answered,
            "labels_used": labels_used,
            "model_agreed_with_oracle": round(agreed / answered, 4),
            "pending_consumed": Annotation.objects.filter(
                project=project, consumed_by=version
            ).count(),
            **run_summary(run, project.negative_class),
            "val_accuracy": version.metrics.get("val_accuracy"),
            # Of every answer so far (the version learnt them all), the share it now keeps.
            "corrections_stick": stick_of(version),
            "seconds": {
                "annotate": round(annotate_s, 2),
                "train_job": round(train_s, 2) if train_s is not None else None,
                "score": run.timings.get("spark_s"),
                "cycle": round(time.perf_counter() - started, 2),
            },
        }
        rows.append(row)
        report(format_row(row, strategy))
        record_simulation_cycles(simulation, rows)
    record_simulation_cycles(simulation, rows, finished=True)
    return {
        "project": project.name,
        "scene": scene.name,
        "strategy": strategy,
        "per_cycle": per_cycle,
        "profile": profile,
        "cycles": rows,
    }


def stick_of(version) -> dict | None:
    """The version's corrections stick: the score job stores it right after promoting the
    version, which the cycle's follower may see first; then it is measured here (the same)."""
    from labeling.loop.corrections import record_corrections_stick

    version.refresh_from_db()
    return version.metrics.get("corrections_stick") or record_corrections_stick(version)


def simulation_point(row: dict) -> dict:
    """What a SimulationRun keeps of one cycle's row (the metrics page's learning curve)."""
    return {
        "cycle": row["cycle"],
        "version": row.get("version"),
        "labels_used": row["labels_used"],
        "object_f1": (row.get("object") or {}).get("f1"),
        "window_f1": (row.get("window") or {}).get("f1"),
        "corrections_stick": (row.get("corrections_stick") or {}).get("share"),
    }


def record_simulation(owner, project, scene, strategy, per_cycle, profile, config, rows):
    from labeling.models import SimulationRun

    return SimulationRun.objects.create(
        project=owner,
        strategy=strategy,
        per_cycle=per_cycle,
        profile=profile or "",
        scene_name=scene.name,
        simulated_project=project.name if project.pk != owner.pk else "",
        config=dict(config or {}),
        cycles=[simulation_point(r) for r in rows],
    )


def record_simulation_cycles(record, rows, finished: bool = False) -> None:
    record.cycles = [simulation_point(r) for r in rows]
    record.finished = finished
    record.save(update_fields=["cycles", "finished"])


def format_row(row: dict, strategy: str) -> str:
    w, o = row["window"], row["object"]
    secs = row["seconds"].get("cycle")
    stick = row.get("corrections_stick")
    return (
        f"[{strategy}] cycle {row['cycle']} v{row['version']}: labels {row['labels_used']:>4}  "
        f"window P {w['precision']:.3f} R {w['recall']:.3f} F1 {w['f1']:.3f}  "
        f"object P {o['precision']:.3f} R {o['recall']:.3f} F1 {o['f1']:.3f}"
        + (f"  AP@0.5 {row['coco']['ap50']:.3f}" if row.get("coco") else "")
        + (f"  stick {share3(stick['share'])}" if stick else "")
        + (f"  {secs:.0f}s" if secs is not None else "")
    )


class Command(LabelingCommand):
    help = (
        "Simulated reviewer: answer the review queue from the scene's ground truth, retrain "
        "through the RQ queues, and report precision/recall/F1 per cycle."
    )

    def add_arguments(self, parser):
        parser.add_argument("project", help="Project name or id")
        parser.add_argument("--cycles", type=int, default=3)
        parser.add_argument("--per-cycle", type=int, default=200, help="Labels per cycle")
        names, default = strategies()
        parser.add_argument("--strategy", choices=names, default=default,
                            help=f"Queue strategy (default {default})")  # fmt: skip
        parser.add_argument("--scene", help="Scene name or id (default: the first with truth)")
        parser.add_argument("--profile", choices=["tiny", "quick", "full"], default=None,
                            help="Training profile (default: the current model's)")  # fmt: skip
        parser.add_argument("--user", default="demo", help="Username the answers are made by")
        parser.add_argument("--json", dest="json_out", help="Write the per-cycle results here")
        parser.add_argument("--start-workers", action="store_true",
                            help="Start RQ workers for the queues when none runs")  # fmt: skip
        parser.add_argument("--step-timeout", type=float, default=None)

    def handle(self, *args, **opts):
        from django.contrib.auth import get_user_model

        if opts["cycles"] < 1 or opts["per_cycle"] < 1:
            raise CommandError("--cycles and --per-cycle must be at least 1.")
        project = get_project(opts["project"])
        scene = get_scene(project, opts["scene"])
        user = get_user_model().objects.filter(username=opts["user"]).first()
        if user is None:
            raise CommandError(f"No user {opts['user']!r}: name a member with --user.")
        if not project.members.filter(pk=user.pk).exists() and not user.is_superuser:
            raise CommandError(f"User {user.username!r} is not a member of {project.name!r}.")
        current = project.current_model()
        profile = opts["profile"] or (current.train_config.get("profile") if current else None)
        profile = profile or "quick"
        with workers_for(("train", "score"), opts, self.stdout, logs="simulate"):
            result = simulate(
                project, scene, user, cycles=opts["cycles"], per_cycle=opts["per_cycle"],
                strategy=opts["strategy"], profile=profile, report=self.stdout.write,
                timeout=opts["step_timeout"],
            )  # fmt: skip
        if opts["json_out"]:
            Path(opts["json_out"]).write_text(json.dumps(result, indent=2))
            self.stdout.write(f"wrote {opts['json_out']}")

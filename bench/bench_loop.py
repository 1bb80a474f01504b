"""The measured loop: simulated review (oracle answers) with each strategy against the same
budget, from the same first model, on the demo's Mona Lisa collage.

For every strategy the demo project is cloned (same training canvases, same model v1 and its
scoring, same scene files; nothing is retrained for the copy), then `simulate_review`'s loop runs
there: answer --per-cycle windows of the review queue from the ground truth, retrain (fine-tune)
through the RQ `train` queue, rescore on Spark through the `score` queue, measure. Results go to
docs/loop_results.json and the chart to docs/loop_f1.png.

    # after `make demo` (or `manage.py demo --no-serve`):
    .venv/bin/python bench/bench_loop.py --cycles 3 --per-cycle 200 \
        --strategies uncertainty random
    .venv/bin/python bench/bench_loop.py --chart-only     # redraw the chart from the JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "collage_app.settings")


def setup_django():
    import django

    django.setup()


def clone_project(src, name: str, correction_weight: float | None = None):
    """A fresh copy of ``src`` for one strategy: its original canvases, its current model (files
    shared, read-only), its scene with ground truth and that model's scoring of it."""
    from labeling.models import ModelVersion, Project, Scene, ScoringRun
    from labeling.results import load_grid, store_scoring_result
    from labeling.storage import get_storage, project_prefix
    from workers.loop_jobs import CanvasDir, sync_canvas_rows

    old = Project.objects.filter(name=name).first()
    if old is not None:
        prefix = project_prefix(old)
        local = get_storage().local_path(prefix)
        old.delete()
        if local is not None:
            shutil.rmtree(local, ignore_errors=True)
    fields = ("classes", "negative_class", "window_size", "train_step", "score_step", "threshold",
              "class_thresholds", "nms_iou", "engine", "correction_weight")  # fmt: skip
    dst = Project.objects.create(
        name=name,
        description=f"bench_loop copy of {src.name!r}",
        **{f: getattr(src, f) for f in fields},
    )
    if correction_weight is not None:
        dst.correction_weight = correction_weight
        dst.save(update_fields=["correction_weight"])
    dst.members.set(src.members.all())
    cset = CanvasDir(src).load()
    cset.canvases = [c for c in cset.canvases if c.kind == "original"]
    cdir = CanvasDir(dst)
    cdir.save(cset)
    sync_canvas_rows(dst, cdir, cdir.load())
    v = src.current_model()
    v1 = ModelVersion.objects.create(
        project=dst, number=1, engine=v.engine, status="ready", is_current=True,
        classes=v.classes, checkpoint_key=v.checkpoint_key, model_key=v.model_key,
        train_config=v.train_config, data_counts=v.data_counts, metrics=v.metrics,
        log=f"copied from {src.name!r} v{v.number}", finished_at=v.finished_at,
    )  # fmt: skip
    scenes = Scene.objects.filter(project=src).exclude(ground_truth_key="").exclude(pixels_key="")
    for s in scenes:
        scene = Scene.objects.create(
            project=dst, name=s.name, image_key=s.image_key, pixels_key=s.pixels_key,
            width=s.width, height=s.height, sha256=s.sha256,
            ground_truth_key=s.ground_truth_key, dzi_key=s.dzi_key,
        )  # fmt: skip
        src_run = s.scoring_runs.filter(model_version=v, status="done").latest("finished_at")
        run = ScoringRun.objects.create(
            scene=scene, model_version=v1, status="running", spark_master=src_run.spark_master,
            n_windows=src_run.n_windows, n_partitions=src_run.n_partitions,
            partitions=src_run.partitions,
        )  # fmt: skip
        store_scoring_result(run, load_grid(src_run), src_run.timings)
    return dst


def machine() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        gpu = None
    return {"cpus": os.cpu_count(), "cpu": cpu, "gpu": gpu, "python": platform.python_version()}


def all_runs(results: dict) -> list[dict]:
    """The main runs, then those of merged configurations (each with its correction weight)."""
    runs = [dict(r, correction_weight=r.get("correction_weight",
                                            results["config"].get("correction_weight")))
            for r in results["runs"]]  # fmt: skip
    for variant in results.get("variants", []):
        weight = variant["config"].get("correction_weight")
        runs += [dict(r, correction_weight=weight) for r in variant["runs"]]
    return runs


def draw_chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    colours = {"uncertainty": "#d62728", "random": "#7f7f7f", "margin": "#1f77b4",
               "entropy": "#9467bd", "top-score": "#2ca02c"}  # fmt: skip
    default_weight = results["config"].get("correction_weight")
    for run in all_runs(results):
        xs = [c["labels_used"] for c in run["cycles"]]
        weight = run.get("correction_weight", default_weight)
        other = weight != default_weight
        for ax, level in zip(axes, ("object", "window"), strict=True):
            ys = [c[level]["f1"] for c in run["cycles"]]
            ax.plot(xs, ys, marker="s" if other else "o", linestyle="--" if other else "-",
                    label=f"{run['strategy']}, correction weight {weight}",
                    color=colours.get(run["strategy"]))  # fmt: skip
    for ax, level in zip(axes, ("object", "window"), strict=True):
        ax.set_title(f"{level}-level F1 (cars + boats, micro)")
        ax.set_xlabel("labels used (oracle answers)")
        ax.set_ylabel("F1")
        top = max(c[level]["f1"] for run in all_runs(results) for c in run["cycles"])
        ax.set_ylim(0, max(0.1, top * 1.3))  # from 0: small changes look small
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    cfg = results["config"]
    fig.suptitle(
        f"Active-learning loop on the Mona Lisa collage: {cfg['cycles']} cycles x "
        f"{cfg['per_cycle']} labels, profile {cfg['profile']}, correction weight "
        f"{cfg.get('correction_weight')}, {results['machine']['cpus']} CPUs",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"chart: {path}")


def table(results: dict) -> str:
    lines = ["| strategy | corr. weight | cycle | labels | window P | window R | window F1 | "
             "object P | object R | object F1 | cycle s |", "|---" * 11 + "|"]  # fmt: skip
    for run in all_runs(results):
        for c in run["cycles"]:
            w, o = c["window"], c["object"]
            secs = c["seconds"].get("cycle")
            lines.append(
                f"| {run['strategy']} | {run['correction_weight']} | {c['cycle']} | "
                f"{c['labels_used']} | {w['precision']:.3f} | {w['recall']:.3f} | "
                f"{w['f1']:.3f} | {o['precision']:.3f} | "
                f"{o['recall']:.3f} | {o['f1']:.3f} | {secs if secs is not None else '-'} |"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", default="Mona Lisa cars and boats", help="source project")
    parser.add_argument("--strategies", nargs="+", default=["uncertainty", "random"])
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--per-cycle", type=int, default=200)
    parser.add_argument("--profile", default=None, help="default: the source model's profile")
    parser.add_argument("--user", default="demo")
    parser.add_argument("--correction-weight", type=float, default=None,
                        help="sampling weight of correction canvases in the copies "
                        "(default: the source project's)")  # fmt: skip
    parser.add_argument("--out", default=str(REPO / "docs" / "loop_results.json"))
    parser.add_argument("--chart", default=str(REPO / "docs" / "loop_f1.png"))
    parser.add_argument("--tag", default="", help="suffix of the copies' project names")
    parser.add_argument("--chart-only", action="store_true", help="redraw from --out")
    parser.add_argument("--merge", nargs="+", default=[],
                        help="with --chart-only: add these results to --out")  # fmt: skip
    args = parser.parse_args(argv)
    out, chart = Path(args.out), Path(args.chart)
    if args.chart_only:
        results = json.loads(out.read_text())
        for extra in args.merge:
            variant = json.loads(Path(extra).read_text())
            results.setdefault("variants", [])
            results["variants"] = [v for v in results["variants"]
                                   if v["config"] != variant["config"]] + [variant]  # fmt: skip
            out.write_text(json.dumps(results, indent=2))
        draw_chart(results, chart)
        print(table(results))
        return 0

    setup_django()
    from django.conf import settings
    from django.contrib.auth import get_user_model

    from labeling.management.commands.demo import QUEUES, Services
    from labeling.management.commands.simulate_review import get_scene, simulate
    from labeling.models import Project

    src = Project.objects.filter(name=args.project).first()
    if src is None or src.current_model() is None:
        print(f"bench_loop: project {args.project!r} with a current model is needed: run "
              "`manage.py demo --no-serve` first", file=sys.stderr)  # fmt: skip
        return 2
    user = get_user_model().objects.get(username=args.user)
    profile = args.profile or src.current_model().train_config.get("profile", "quick")
    results = {
        "config": {"source_project": src.name, "cycles": args.cycles,
                   "per_cycle": args.per_cycle, "profile": profile,
                   "correction_weight": args.correction_weight or src.correction_weight,
                   "tag": args.tag,
                   "strategies": args.strategies, "spark_master": str(settings.SPARK_MASTER),
                   "command": "bench/bench_loop.py " + " ".join(argv or sys.argv[1:])},
        "machine": machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "runs": [],
    }  # fmt: skip
    services = Services(Path(settings.VAR_DIR) / "bench_loop" / "logs", sys.stdout)
    try:
        for line in services.ensure_workers(QUEUES):
            print(line)
        for strategy in args.strategies:
            started = time.perf_counter()
            project = clone_project(src, f"{src.name} [bench {strategy}{args.tag}]",
                                    args.correction_weight)  # fmt: skip
            scene = get_scene(project, None)
            print(f"== {strategy}: project {project.name!r} #{project.pk}, scene {scene.name!r}")
            run = simulate(project, scene, user, cycles=args.cycles, per_cycle=args.per_cycle,
                           strategy=strategy, profile=profile)  # fmt: skip
            run["seconds_total"] = round(time.perf_counter() - started, 1)
            results["runs"].append(run)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=2))  # partial results survive a crash
    finally:
        services.stop()
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")
    draw_chart(results, chart)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

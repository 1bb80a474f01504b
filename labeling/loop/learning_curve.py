"""The metrics page's learning curve: object F1 (against the ground truth) of each of the
project's cycles against the labels learnt so far, and beside it the runs of the simulated
reviewer (manage.py simulate_review, kept as SimulationRun rows) per strategy, the random strategy
being the baseline the review queue has to beat. No HTTP here; labeling/views/pages.py renders it.
"""

from __future__ import annotations

from collections import defaultdict

from labeling.models import SimulationRun

BASELINE = "random"


def project_points(rows: list[dict]) -> list[dict]:
    """The project's own cycles from labeling.loop.metrics_view.version_rows: one point per model
    version with object-level figures, oldest first."""
    return [
        {
            "version": r["number"],
            "labels": int(r.get("labels_cumulative") or 0),
            "object_f1": r["object"]["f1"],
            "is_current": bool(r.get("is_current")),
        }
        for r in rows
        if r.get("object")
    ]


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 4)


def simulation_series(project) -> list[dict]:
    """The project's simulated runs grouped by (strategy, labels per cycle); per cycle the mean,
    lowest and highest object F1 over the runs that reached it. The baseline comes first."""
    groups: dict[tuple[str, int], list[SimulationRun]] = defaultdict(list)
    for run in SimulationRun.objects.filter(project=project).order_by("created_at", "id"):
        if run.cycles:
            groups[(run.strategy, run.per_cycle)].append(run)
    series = []
    for (strategy, per_cycle), runs in groups.items():
        by_cycle: dict[int, list[dict]] = defaultdict(list)
        for run in runs:
            for point in run.cycles:
                if point.get("object_f1") is not None:
                    by_cycle[int(point["cycle"])].append(point)
        points = []
        for cycle in sorted(by_cycle):
            got = by_cycle[cycle]
            f1 = [float(p["object_f1"]) for p in got]
            points.append(
                {
                    "cycle": cycle,
                    "labels": int(round(sum(p["labels_used"] for p in got) / len(got))),
                    "object_f1": _mean(f1),
                    "low": round(min(f1), 4),
                    "high": round(max(f1), 4),
                    "runs": len(got),
                }
            )
        if points:
            series.append(
                {
                    "strategy": strategy,
                    "per_cycle": per_cycle,
                    "runs": len(runs),
                    "baseline": strategy == BASELINE,
                    "points": points,
                }
            )
    series.sort(key=lambda s: (not s["baseline"], s["strategy"], s["per_cycle"]))
    return series


def learning_curve(project, rows: list[dict]) -> dict:
    """{"project": [points], "simulations": [series], "has_baseline": bool} for the page."""
    simulations = simulation_series(project)
    return {
        "project": project_points(rows),
        "simulations": simulations,
        "has_baseline": any(s["baseline"] for s in simulations),
    }

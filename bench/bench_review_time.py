"""Reviewer time to a correct scene: what a labelled scene costs a person, mode by mode.

A labelling tool delivers a scene's labels (mlcore.eval.scene_labels.merge_labels, the rule the
app exports: reviewed boxes plus the model's boxes above threshold that no reviewer rejected).
This bench has a simulated reviewer build them on a collage with ground truth, counts every
action, costs it in seconds from the literature (``COSTS``; docs/loop.md "Reviewer time to a
correct scene" gives the sources) and scores the labels against the truth (object F1, as
mlcore.eval.metrics.object_metrics) after every change. Modes:

- ``a``: boxing every object by hand (a drawn box each; also read at the extreme-clicking cost);
- ``b``: the first model's boxes, then the final pass below, no retrain;
- ``c``: the loop (bench/bench_loop.py's ``run_one``: strategy picks, the simulated reviewer's
  answers, fine-tune, calibrate, rescore) with the default strategy, ``--per-cycle`` queue
  answers a cycle, then the final pass on the last version's labels;
- ``d``: the same loop with random picks.

**The final pass** (b, c, d) makes the labels correct: (1) verify the model's boxes below their
class's *accept score* (mlcore.inference.calibration.accept_scores: the score from which boxes
are right >= 99% of the time on the calibration scene), least sure first, rejecting the wrong
ones; (2) click each missed object (the viewer's click: a window-sized box at the click, then its
class); the reviewer who accepts the confident boxes unreviewed stops here ("accepted"); (3)
verify everything not verified yet (the confident model boxes, and the reviewed boxes the labels
count false, e.g. two queue answers on one object) and click what that uncovers, until the
labels match the truth. The reviewer answers as the metric counts: a box is right when the
object matcher matches it.

**When to stop the loop** (c, d): after each cycle the reviewer estimates the final pass from
the calibration (the boxes below the accept score to verify, and the objects the calibration's
recall says are missed to click, as the dashboard's "still wrong" estimate does) and stops after
the first cycle that saved less than it cost (``--cycles`` at most). Every stop is measured too.

Time the fine-tunes take is not reviewer time (the reviewer works elsewhere meanwhile): it is
reported apart. Nothing here chooses anything: the accept score is chosen on the calibration
scene, the strategy and fine-tune are bench_loop's.

    .venv/bin/python -m mlcore demo --out var/exp/demo                   # the first model, once
    .venv/bin/python bench/bench_review_time.py --demo var/exp/demo --seeds 5 --cycles 3
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import bench_loop  # noqa: E402  (imports mlcore first: its OpenMP policy)

# Seconds per action (docs/loop.md "Reviewer time to a correct scene" for the sources).
COSTS = {
    "answer": 1.6,  # a queue answer: a window's class, costed as one box verification
    "verify": 1.6,  # a yes/no on a proposed box (Papadopoulos et al. 2016)
    "click": 1.9,  # a click on a missed object's centre (Papadopoulos et al. 2017, CVPR)
    "draw": 35.0,  # a box drawn the classic way (ILSVRC, Su et al. 2012)
    "extreme": 7.0,  # a box by extreme clicking (Papadopoulos et al. 2017, ICCV)
}
TARGETS = (0.95, 0.99)
MODES = {"a": "boxing every object by hand", "b": "verify the first model's boxes, click misses",
         "c": "the loop, default strategy", "d": "the loop, random picks"}  # fmt: skip
SCENE_NAMES = {"mona_lisa": "Mona Lisa", "heldout": "rocket"}
NEGATIVE = "negative"
WINDOW = bench_loop.WINDOW
REVIEWED_RANK = 2.0  # reviewed labels match before any model box (probabilities are <= 1)


def log(message: str) -> None:
    print(f"[bench_review_time {time.strftime('%H:%M:%S')}] {message}", flush=True)


def care(truth: list[dict]) -> list[int]:
    """Indices of the objects the metric counts (visible enough; the rest are "don't care")."""
    return [i for i, g in enumerate(truth)
            if g["label"] != NEGATIVE and g.get("visible", 1.0) >= 0.5]  # fmt: skip


MARGIN = 96  # px around an action's box: the labels and objects it can change lie inside


def _boxes(items) -> np.ndarray:
    return np.array([[b["x"], b["y"], b["x"] + b["w"], b["y"] + b["h"]] for b in items],
                    dtype=np.float64).reshape(-1, 4)  # fmt: skip


def _inside(boxes: np.ndarray, region) -> np.ndarray:
    x0, y0, x1, y1 = region
    return np.flatnonzero((boxes[:, 2] > x0) & (boxes[:, 0] < x1) & (boxes[:, 3] > y0)
                          & (boxes[:, 1] < y1))  # fmt: skip


def _key(box: dict) -> tuple:
    """A label's identity across rescoring: its review's place, or its detection."""
    return box["source"], box.get("place") or box["detection"]


class ReviewedScene:
    """One scene's labels as a reviewer builds them: the reviews (the newest per place counts,
    in the order they count), the current version's boxes, the actions and their seconds, and
    the trace ``[seconds, actions, object F1, phase]`` after every change.

    A scene holds thousands of labels, so an action is scored where it acts: the labels and
    objects within MARGIN of its box are scored before and after, and the change in true and
    false positives and misses carried over to the scene's counts (the matcher is greedy, but
    only boxes that touch one object compete for it). :meth:`rescore` scores the whole scene
    again; ``drift`` is the largest F1 difference it found from the carried counts."""

    def __init__(self, truth: list[dict], classes, costs: dict = COSTS, window: int = WINDOW):
        self.truth, self.classes, self.costs, self.window = truth, list(classes), costs, window
        self._truth_boxes = _boxes(truth)
        self.reviews: dict[tuple, dict] = {}
        self.detections: list[dict] = []
        self._det_boxes = _boxes([])
        self.actions: Counter = Counter()
        self.seconds = 0.0
        self.trace: list[list] = []
        self.counts: dict | None = None  # tp, fp, fn of the labels now
        self.drift = 0.0

    def copy(self) -> ReviewedScene:
        other = ReviewedScene.__new__(ReviewedScene)
        other.__dict__.update(self.__dict__)
        other.reviews, other.actions = dict(self.reviews), Counter(self.actions)
        other.trace = [list(t) for t in self.trace]
        other.counts = dict(self.counts) if self.counts is not None else None
        return other

    def use_model(self, detections, version) -> None:
        """The boxes of the version the labels now start from (merged detections above its
        calibrated thresholds)."""
        self.detections = [{"id": f"{version}:{i}", "x": float(d.x), "y": float(d.y),
                            "w": float(d.w), "h": float(d.h), "label": d.label,
                            "score": float(d.score)} for i, d in enumerate(detections)]  # fmt: skip
        self._det_boxes = _boxes(self.detections)
        self.counts = None

    def act(self, kind: str, box: dict, label: str | None = None, detection=None,
            undo: bool = False) -> None:  # fmt: skip
        """One reviewer action, costed: a review at ``box``'s place (replacing what was there),
        or with ``undo`` the place's review withdrawn."""
        region = (box["x"] - MARGIN, box["y"] - MARGIN, box["x"] + box["w"] + MARGIN,
                  box["y"] + box["h"] + MARGIN)  # fmt: skip
        before = self.local(region)[1]["overall"] if self.counts is not None else None
        place = (box["x"], box["y"], box["w"], box["h"])
        self.reviews.pop(place, None)
        if not undo:
            self.reviews[place] = {"x": box["x"], "y": box["y"], "w": box["w"], "h": box["h"],
                                   "label": label, "detection": detection}  # fmt: skip
        if before is not None:
            after = self.local(region)[1]["overall"]
            for k in ("tp", "fp", "fn"):
                self.counts[k] += after[k] - before[k]
        self.count(kind)

    def count(self, kind: str) -> None:
        self.actions[kind] += 1
        self.seconds += self.costs[kind]

    def _labels(self, detections: list[dict], reviews: list[dict]) -> list[dict]:
        from mlcore.eval.scene_labels import REVIEWED, merge_labels

        out = []
        for entry in merge_labels(detections, reviews, NEGATIVE):
            model = entry["model"]
            if entry["source"] == REVIEWED:
                r = reviews[entry["review"]]
                out.append({"x": r["x"], "y": r["y"], "w": r["w"], "h": r["h"], "label": r["label"],
                            "score": REVIEWED_RANK, "source": REVIEWED,
                            "place": (r["x"], r["y"], r["w"], r["h"]),
                            "detection": model["id"] if model else None})  # fmt: skip
            else:
                out.append(model | {"source": entry["source"], "detection": model["id"]})
        return out

    def labels(self) -> list[dict]:
        """The scene's labels now (merge_labels), each with ``source``, ``score`` (the model's,
        or REVIEWED_RANK) and ``detection``/``place`` to find it again."""
        return self._labels(self.detections, list(self.reviews.values()))

    def score(self) -> tuple[list[dict], dict]:
        """The labels and their object metrics against the truth (the whole scene)."""
        from mlcore.eval.metrics import object_metrics

        labels = self.labels()
        return labels, object_metrics(labels, self.truth, self.classes, negative=NEGATIVE)

    def local(self, region) -> tuple[list[dict], dict]:
        """The labels and metrics of what lies in ``region`` (x0, y0, x1, y1)."""
        from mlcore.eval.metrics import object_metrics

        detections = [self.detections[i] for i in _inside(self._det_boxes, region)]
        reviews = [r for r in self.reviews.values() if len(_inside(_boxes([r]), region))]
        truth = [self.truth[i] for i in _inside(self._truth_boxes, region)]
        labels = self._labels(detections, reviews)
        return labels, object_metrics(labels, truth, self.classes, negative=NEGATIVE)

    def rescore(self) -> tuple[list[dict], dict]:
        """Score the whole scene; the counts from here on start from it."""
        labels, metrics = self.score()
        fresh = {k: metrics["overall"][k] for k in ("tp", "fp", "fn")}
        if self.counts is not None:
            self.drift = max(self.drift, abs(_f1(self.counts) - _f1(fresh)))
        self.counts = fresh
        return labels, metrics

    def mark(self, phase: str) -> float:
        if self.counts is None:
            self.rescore()
        f1 = round(_f1(self.counts), 4)
        self.trace.append([round(self.seconds, 1), sum(self.actions.values()), f1, phase])
        return f1


def _f1(counts: dict) -> float:
    from mlcore.eval.metrics import _prf

    return _prf(counts["tp"], counts["fp"], counts["fn"])["f1"]


def window_box(cx: float, cy: float, window: int = WINDOW) -> dict:
    """The viewer's click on an empty place: a window-sized box centred on the click."""
    return {"x": round(cx - window / 2.0, 1), "y": round(cy - window / 2.0, 1), "w": window,
            "h": window}  # fmt: skip


def _verify(state: ReviewedScene, labels: list[dict]) -> int:
    """Verify ``labels`` (of the whole scene, scored just before), least sure first: where the
    matcher matches it the box is confirmed, else rejected (a model box) or withdrawn (a
    reviewed one). Each is looked at in its neighbourhood as the labels are now (an earlier
    review may have covered it). Returns the rejections."""
    rejected = 0
    for box in sorted(labels, key=lambda b: b["score"]):
        region = (box["x"] - MARGIN, box["y"] - MARGIN, box["x"] + box["w"] + MARGIN,
                  box["y"] + box["h"] + MARGIN)  # fmt: skip
        near, metrics = state.local(region)
        where = {_key(b): i for i, b in enumerate(near)}
        if _key(box) not in where:
            continue  # an earlier review covered it: nothing left to look at
        right = any(di == where[_key(box)] for di, _ in metrics["matches"])
        if right and box["source"] == "model":
            state.act("verify", box, box["label"], box["detection"])  # confirmed, now reviewed
        elif right:
            state.count("verify")  # a reviewed box looked at again and kept
        else:
            if box["source"] == "model":
                state.act("verify", box, NEGATIVE, box["detection"])
            else:
                state.act("verify", box, undo=True)
            rejected += 1
            state.mark("verify")
    return rejected


def _click_misses(state: ReviewedScene) -> int:
    """Click every object the labels miss (the care objects the matcher leaves unmatched)."""
    _, metrics = state.rescore()
    found = {gi for _, gi in metrics["matches"]}
    missed = [i for i in care(state.truth) if i not in found]
    for i in missed:
        g = state.truth[i]
        state.act("click", window_box(g["x"] + g["w"] / 2.0, g["y"] + g["h"] / 2.0), g["label"])
        state.mark("click")
    return len(missed)


def final_pass(state: ReviewedScene, accept: dict) -> dict:
    """The reviewer pass that makes the labels correct (module docstring), on ``state`` (changed
    in place). ``accept``: per class the accept score (None: verify every box of the class)."""

    def uncertain(b):
        cut = accept.get(b["label"])
        return b["source"] == "model" and (cut is None or b["score"] < cut)

    labels, _ = state.rescore()
    state.mark("pass")
    _verify(state, [b for b in labels if uncertain(b)])
    _click_misses(state)
    state.rescore()
    accepted = {"seconds": round(state.seconds, 1), "actions": sum(state.actions.values()),
                "f1": state.mark("accepted")}  # fmt: skip
    for _ in range(3):  # a rejection can uncover an object: click it, look again
        labels, metrics = state.rescore()
        if not metrics["overall"]["fp"] and not metrics["overall"]["fn"]:
            break
        right = {di for di, _ in metrics["matches"]}
        _verify(state, [b for i, b in enumerate(labels)
                        if b["source"] == "model" or i not in right])  # fmt: skip
        _click_misses(state)
    state.rescore()
    done = {"seconds": round(state.seconds, 1), "actions": sum(state.actions.values()),
            "f1": state.mark("done"), "by_kind": dict(state.actions),
            "largest_local_drift": round(state.drift, 4)}  # fmt: skip
    return {"accepted": accepted, "done": done, "to": reached(state.trace)}


def reached(trace: list[list]) -> dict:
    """Seconds and actions at the first trace point at or above each target F1."""
    out = {}
    for target in TARGETS:
        hit = next((t for t in trace if t[2] >= target), None)
        out[str(target)] = {"seconds": hit[0], "actions": hit[1]} if hit else None
    return out


def hand_boxing(truth: list[dict], cost: float) -> dict:
    """Mode a: every counted object boxed by hand at ``cost`` seconds a box. Each box is one
    more true positive and nothing else (precision 1): after n of N boxes F1 = 2n / (n + N)."""
    n_objects = len(care(truth))
    trace = [[round(n * cost, 1), n, round(2 * n / (n + n_objects), 4), "draw"]
             for n in range(n_objects + 1)]  # fmt: skip
    return {"objects": n_objects, "seconds_per_box": cost, "to": reached(trace),
            "done": {"seconds": trace[-1][0], "actions": n_objects, "f1": trace[-1][2]},
            "trace": trace[:: max(1, n_objects // 50)] + [trace[-1]]}  # fmt: skip


def pass_estimate(state: ReviewedScene, calibration: dict) -> float:
    """What the reviewer expects the final pass to cost, from the calibration alone: the model
    boxes below the accept score verified, and the objects the calibration's recall says the
    model boxes miss (n P (1 - R) / R per class, as the dashboard's estimate) clicked."""
    accept, precision = calibration["accept"], calibration["precision"]
    recall = calibration["recall"]
    seconds = 0.0
    for b in state.labels():
        if b["source"] != "model":
            continue
        cut = accept.get(b["label"])
        if cut is None or b["score"] < cut:
            seconds += state.costs["verify"]
        p, r = precision.get(b["label"], 0.0), recall.get(b["label"], 0.0)
        if r:
            seconds += state.costs["click"] * p * (1.0 - r) / r
    return round(seconds, 1)


def stop_cycle(estimates: list[float], cycle_seconds: float) -> int:
    """The cycle after which the reviewer stops: the first whose estimated saving on the final
    pass is below what the cycle cost (at least one cycle; the last one run at most)."""
    for k in range(1, len(estimates)):
        if estimates[k - 1] - estimates[k] < cycle_seconds:
            return k
    return len(estimates) - 1


# -- the runs ---------------------------------------------------------------------------------


def loop_run(scene: str, strategy: str, seed: int, args, start: ReviewedScene,
             calibration: dict, first_pass: dict) -> dict:  # fmt: skip
    """Modes c and d: bench_loop's cycles on ``scene``; after each, the answers enter the labels,
    the new version's boxes replace the old, and a final pass from there is measured."""
    from mlcore.inference.postprocess import detections

    state = start.copy()
    passes, estimates = [first_pass], [pass_estimate(state, calibration)]
    f1_after = [start.trace[-1][2]]
    started = time.perf_counter()

    def observe(cycle, picks, labels, grid, cal):
        for p, label in zip(picks, labels):
            state.act("answer", {"x": p.x, "y": p.y, "w": WINDOW, "h": WINDOW}, label)
        state.mark(f"answers {cycle}")
        state.use_model(detections(grid, thresholds=cal["thresholds"], negative=NEGATIVE), cycle)
        f1_after.append(state.mark(f"cycle {cycle}"))
        estimates.append(pass_estimate(state, cal))
        end = state.copy()
        passes.append(final_pass(end, cal["accept"]) | {"trace": end.trace})
        log(f"{SCENE_NAMES[scene]} {strategy} seed {seed} cycle {cycle}: labels F1 "
            f"{f1_after[-1]}, pass from here: 0.95 at {passes[-1]['to']['0.95']}, done at "
            f"{passes[-1]['done']['seconds']} s (estimate {estimates[-1]} s)")  # fmt: skip

    record = bench_loop.run_one(bench_loop._SETUP, strategy, seed, args.cycles, scene=scene,
                                observe=observe)  # fmt: skip
    stop = stop_cycle(estimates, args.per_cycle * COSTS["answer"])
    chosen = passes[stop]
    return {
        "scene": scene, "strategy": strategy, "seed": seed, "stop_cycle": stop,
        "to": chosen["to"], "accepted": chosen["accepted"], "done": chosen["done"],
        "trace": chosen["trace"], "estimates": estimates, "labels_f1_after_cycle": f1_after,
        "model_f1_after_cycle": record["f1"],
        "by_stop": [{k: p[k] for k in ("to", "accepted", "done")} for p in passes],
        "finetune_minutes": round((time.perf_counter() - started) / 60, 1),
    }  # fmt: skip


def spread(values: list) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    a = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(a.mean()), 1), "min": round(float(a.min()), 1),
            "max": round(float(a.max()), 1), "sd": round(float(a.std(ddof=1)), 1)
            if len(a) > 1 else None, "n": len(a)}  # fmt: skip


def summarise(runs: list[dict]) -> dict:
    out = {"seeds": [r.get("seed") for r in runs]}
    for target in TARGETS:
        key = str(target)
        out[f"seconds_to_{key}"] = spread([(r["to"][key] or {}).get("seconds") for r in runs])
        out[f"actions_to_{key}"] = spread([(r["to"][key] or {}).get("actions") for r in runs])
    out["seconds_done"] = spread([r["done"]["seconds"] for r in runs])
    out["final_f1"] = spread([r["done"]["f1"] for r in runs])
    if "accepted" in runs[0]:
        out["accepted_seconds"] = spread([r["accepted"]["seconds"] for r in runs])
        out["accepted_f1"] = {"min": min(r["accepted"]["f1"] for r in runs),
                              "max": max(r["accepted"]["f1"] for r in runs)}  # fmt: skip
    if "stop_cycle" in runs[0]:
        out["stop_cycles"] = [r["stop_cycle"] for r in runs]
    return out


def draw_chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenes = list(results["scenes"])
    fig, axes = plt.subplots(1, len(scenes), figsize=(7 * len(scenes), 4.6), squeeze=False)
    colours = {"a": "grey", "b": "tab:orange", "c": "tab:blue", "d": "tab:green"}
    for ax, scene in zip(axes[0], scenes):
        s = results["scenes"][scene]
        if "a" in s:
            t = np.array([p[:3] for p in s["a"]["trace"]], dtype=np.float64)
            ax.plot(t[:, 0] / 60, t[:, 2], color=colours["a"], label="a: boxing by hand (35 s)")
            ax.plot(t[:, 1] * COSTS["extreme"] / 60, t[:, 2], ":", color=colours["a"],
                    label="a: extreme clicking (7 s)")  # fmt: skip
        for mode in ("b", "c", "d"):
            for k, run in enumerate(s.get(f"{mode}_runs", [])):
                t = np.array([p[:3] for p in run["trace"]], dtype=np.float64)
                ax.plot(t[:, 0] / 60, t[:, 2], color=colours[mode], lw=1, alpha=0.8,
                        label=f"{mode}: {MODES[mode]}" if k == 0 else None)  # fmt: skip
                acc = run["accepted"]
                ax.plot(acc["seconds"] / 60, acc["f1"], "o", color=colours[mode], ms=5,
                        label="confident boxes accepted unreviewed" if (mode, k) == ("b", 0)
                        else None)  # fmt: skip
                loop_end = [p for p in run["trace"] if str(p[3]).startswith("cycle")]
                if mode != "b" and loop_end:
                    last = loop_end[run["stop_cycle"] - 1]
                    ax.plot(last[0] / 60, last[2], "|", color=colours[mode], ms=14, mew=2)
        for target in TARGETS:
            ax.axhline(target, color="k", lw=0.6, ls="--")
        ax.set_ylim(0.6, 1.005)
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(left=0)
        ax.set_xlabel("reviewer minutes (log beyond 10)")
        ax.set_ylabel("scene-label object F1")
        ax.set_title(f"{SCENE_NAMES[scene]}: {s['objects']} objects")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Reviewer time to a correct scene ('|': the loop stops, 'o': confident boxes "
                 "accepted, then everything verified)")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"chart: {path}")


def table(results: dict) -> str:
    lines = ["| scene | mode | seeds | seconds to 0.95 | actions to 0.95 | seconds to 0.99 | "
             "actions to 0.99 | correct (F1) at |", "| --- |" * 1 + " --- |" * 7]  # fmt: skip

    def cell(s):
        if s is None:
            return "not reached"
        if s.get("n", 1) > 1:
            return f"{s['mean']:.0f} [{s['min']:.0f}, {s['max']:.0f}]"
        return f"{s['mean']:.0f}"

    for scene, s in results["scenes"].items():
        for mode in ("a", "b", "c", "d"):
            m = s.get(f"{mode}_summary")
            if not m:
                continue
            done = f"{cell(m['seconds_done'])} s ({m['final_f1']['min']:.3f})"
            lines.append(
                f"| {SCENE_NAMES[scene]} | {mode}: {MODES[mode]} | {len(m['seeds'])} | "
                f"{cell(m['seconds_to_0.95'])} | {cell(m['actions_to_0.95'])} | "
                f"{cell(m['seconds_to_0.99'])} | {cell(m['actions_to_0.99'])} | {done} |"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", default=str(REPO / "var" / "exp" / "demo"),
                        help="output folder of `python -m mlcore demo`")  # fmt: skip
    parser.add_argument("--scenes", nargs="+", default=list(SCENE_NAMES), choices=list(SCENE_NAMES))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--seeds", type=int, default=5, help="seeds of the loop modes (c, d)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--cycles", type=int, default=3, help="most cycles the loop runs")
    parser.add_argument("--per-cycle", type=int, default=200, help="queue answers a cycle")
    parser.add_argument("--steps", type=int, default=None, help="fine-tune steps (profile's)")
    parser.add_argument("--strategy", default=None, help="mode c's strategy (the default's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=str(REPO / "docs" / "review_time.json"))
    parser.add_argument("--chart", default=str(REPO / "docs" / "review_time.png"))
    parser.add_argument("--chart-only", action="store_true", help="redraw from --json")
    args = parser.parse_args(argv)
    out = Path(args.json)
    if args.chart_only:
        results = json.loads(out.read_text())
        draw_chart(results, Path(args.chart))
        print(table(results))
        return 0
    from mlcore.data.canvases import CALIBRATION_COPIES
    from mlcore.inference.postprocess import detections
    from mlcore.inference.scoring import ScoreGrid
    from mlcore.sampling import DEFAULT_STRATEGY

    demo = Path(args.demo)
    if not bench_loop.has_first_model(demo):
        return 2
    strategy = args.strategy or DEFAULT_STRATEGY
    started = time.perf_counter()
    cache = demo / "bench_review_time"
    cache.mkdir(exist_ok=True)
    loop_args = argparse.Namespace(demo=str(demo), calibration_copies=CALIBRATION_COPIES,
                                   threads=args.threads, workers=1)  # fmt: skip
    first = bench_loop.prepare(loop_args, cache)
    calibration = first["calibration"]
    setup = {
        "args": {"demo": str(demo), "threads": args.threads, "steps": args.steps, "lr": None,
                 "correction_share": None, "parent_mix": None, "per_cycle": args.per_cycle,
                 "weight": 50.0, "calibration_copies": CALIBRATION_COPIES},
        "first": first, "heldout_at": set(), "calibration_files": first["calibration_files"],
    }  # fmt: skip
    bench_loop._worker_init(setup)
    log(f"accept scores (precision >= 0.99 on the calibration scene): {calibration['accept']}")
    results: dict = {
        "meta": {
            "command": "bench/bench_review_time.py "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": f"{platform.machine()}, {platform.node()}",
            "date": time.strftime("%Y-%m-%d"), "costs_seconds": COSTS, "targets": TARGETS,
            "per_cycle": args.per_cycle, "cycles": args.cycles, "strategy_c": strategy,
            "first_model": {"sha256": first["sha256"], "f1": first["f1"],
                            "thresholds": calibration["thresholds"],
                            "accept_scores": calibration["accept"]},
        },
        "scenes": {},
    }  # fmt: skip

    def save() -> None:
        results["meta"]["minutes"] = round((time.perf_counter() - started) / 60, 1)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))

    for scene in args.scenes:
        image, truth = bench_loop._SETUP["scenes"][scene]
        grid = ScoreGrid.load(first["grids"][scene])
        start = ReviewedScene(truth, grid.classes)
        kept = detections(grid, thresholds=calibration["thresholds"], negative=NEGATIVE)
        start.use_model(kept, 0)
        start.mark("first model")
        s = results["scenes"].setdefault(scene, {"objects": len(care(truth))})
        if "a" in args.modes:
            s["a"] = hand_boxing(truth, COSTS["draw"])
            s["a_extreme"] = {k: v for k, v in hand_boxing(truth, COSTS["extreme"]).items()
                              if k != "trace"}  # fmt: skip
            s["a_summary"] = summarise([s["a"] | {"seed": None}])
        b_state = start.copy()
        first_pass = final_pass(b_state, calibration["accept"]) | {"trace": b_state.trace}
        if "b" in args.modes:
            s["b_runs"] = [first_pass | {"seed": None}]
            s["b_summary"] = summarise(s["b_runs"])
            log(f"{SCENE_NAMES[scene]} b: {first_pass['to']}, done {first_pass['done']}")
        save()
        # Seeds outside, modes inside: an interrupted run leaves whole pairs.
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for mode, name in (("c", strategy), ("d", "random")):
                if mode not in args.modes:
                    continue
                run = loop_run(scene, name, seed, args, start, calibration, first_pass)
                s.setdefault(f"{mode}_runs", []).append(run)
                s[f"{mode}_summary"] = summarise(s[f"{mode}_runs"])
                save()
    save()
    draw_chart(results, Path(args.chart))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

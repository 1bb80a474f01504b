"""Every benchmark this machine can run, one table: figure, ours, baseline, ratio, target, met.

    .venv/bin/python bench/run_all.py            # CPU part (make bench), under 15 minutes
    .venv/bin/python bench/run_all.py --quick    # smoke run: smaller sizes, fewer repeats
    .venv/bin/python bench/run_all.py --gpu      # GPU part (make bench-gpu), needs CUDA

Each module ``bench/<name>.py`` exposes ``run(quick) -> list[dict]`` (rows of
``bench.common.row``); the baselines are measured in the same run, except published figures,
which say so. Optional modules written by others (bench_review, bench_loop) are imported when
present; a missing module, one without ``run`` or one that fails is reported in the table and on
stderr, never skipped silently. Results: bench/results/latest.json and latest.md (GPU part:
latest-gpu.json / latest-gpu.md).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, ROW_KEYS, error_row, fmt, machine  # noqa: E402

REQUIRED = ROW_KEYS[:3]  # name, value, unit; the other keys default (see complete)

CPU_MODULES = ("bench_mlcore", "bench_engines", "bench_spark")
OPTIONAL_MODULES = ("bench_review", "bench_loop")  # other engineers' benchmarks, when present
BENCH_DIR = Path(__file__).resolve().parent


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_module(name: str, quick: bool, optional: bool, entry: str = "run") -> tuple[list, str]:
    """(rows, note) of one module; problems become an error row and a printed note."""
    if not (BENCH_DIR / f"{name}.py").exists():
        note = f"bench/{name}.py is not present: skipped"
        log(note)
        return [], note
    started = time.perf_counter()
    try:
        module = importlib.import_module(f"bench.{name}")
    except Exception as exc:  # noqa: BLE001 - a broken module must not stop the others
        log(f"bench/{name}.py failed to import:\n{traceback.format_exc()}")
        return [error_row(f"{name} (import)", f"{type(exc).__name__}: {exc}")], ""
    fn = getattr(module, entry, None)
    if fn is None:
        note = f"bench/{name}.py has no {entry}(quick) function: not run (see its own CLI)"
        log(note)
        return [], note
    log(f"running {name}.{entry}(quick={quick}) ...")
    try:
        rows = list(fn(quick))
    except Exception as exc:  # noqa: BLE001 - shown in the table and on stderr
        log(f"{name}.{entry} failed:\n{traceback.format_exc()}")
        return [error_row(name, f"{type(exc).__name__}: {exc}")], ""
    bad = [r for r in rows if not isinstance(r, dict) or any(k not in r for k in REQUIRED)]
    if bad:
        msg = f"{len(bad)} row(s) without the keys {REQUIRED}"
        log(f"{name}: {msg}")
        rows = [r for r in rows if r not in bad] + [error_row(name, msg)]
    rows = [complete(r) for r in rows]
    seconds = time.perf_counter() - started
    for r in rows:
        r.setdefault("module", name)
        r.setdefault("note", "")
        r.setdefault("met", None)
    log(f"{name}: {len(rows)} figure(s) in {seconds:.0f} s")
    return rows, f"{name}: {seconds:.0f} s"


def complete(r: dict) -> dict:
    """Fill the optional keys of a row (modules by others may leave out target or baseline)."""
    r = dict(r)
    r.setdefault("baseline", "")
    r.setdefault("baseline_value", None)
    r.setdefault("target", "")
    if "ratio" not in r:
        ok = isinstance(r["value"], (int, float)) and r["baseline_value"]
        r["ratio"] = r["value"] / r["baseline_value"] if ok else None
    return r


def _met(r: dict) -> str:
    if r.get("error"):
        return "ERROR"
    if r.get("skipped"):
        return "skipped"
    return {True: "yes", False: "NO", None: "-"}[r.get("met")]


def console_table(rows: list[dict]) -> str:
    head = ("#", "figure", "ours", "baseline", "ratio", "target", "met?")
    lines = []
    for i, r in enumerate(rows, 1):
        ours = f"{fmt(r['value'])} {r['unit']}".strip() if r["value"] is not None else "-"
        lines.append((str(i), r["name"], ours, fmt(r["baseline_value"]), fmt(r["ratio"]),
                      r["target"] or "-", _met(r)))  # fmt: skip
    widths = [max(len(x[k]) for x in [head, *lines]) for k in range(len(head))]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in lines]
    out.append("")
    for i, r in enumerate(rows, 1):
        detail = f"baseline: {r['baseline']}" if r["baseline"] else ""
        if r.get("note"):
            detail = f"{detail}; {r['note']}" if detail else r["note"]
        out.append(f"[{i}] {detail}")
    return "\n".join(out)


def markdown_table(rows: list[dict], info: dict, notes: list[str], title: str) -> str:
    out = [
        f"### {title}",
        "",
        f"{info['date']}, {info['nproc']} CPU(s) ({info['cpu']})"
        + (f", GPU {info['gpu']}" if info.get("gpu") else "")
        + f", load average {fmt(info.get('load_average_1m'))} at the start",
        "",
        "| figure | ours | baseline (same run) | ratio | target | met? | notes |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ours = f"{fmt(r['value'])} {r['unit']}".strip() if r["value"] is not None else "-"
        base = f"{fmt(r['baseline_value'])} ({r['baseline']})" if r["baseline"] else "-"
        cells = [r["name"], ours, base, fmt(r["ratio"]), r["target"] or "-", _met(r), r["note"]]
        out.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    if notes:
        out += ["", *[f"- {n}" for n in notes]]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--gpu", action="store_true", help="the GPU part (needs a CUDA device)")
    parser.add_argument("--only", nargs="*", help="module names to run (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    info = machine()
    started = time.perf_counter()
    rows: list[dict] = []
    notes: list[str] = []
    if args.gpu:
        import torch

        if not torch.cuda.is_available():
            print(
                "No CUDA device on this machine (torch.cuda.is_available() is False): the GPU "
                "part was not run and nothing was measured. Run `make bench-gpu` on a machine "
                "with an NVIDIA GPU and a CUDA build of PyTorch (and onnxruntime-gpu for the "
                "ONNX Runtime CUDA figure)."
            )
            return 0
        got, note = run_module("bench_mlcore", args.quick, optional=False, entry="run_gpu")
        rows += got
        notes += [note] if note else []
        stem, title = "latest-gpu", "GPU benchmarks (bench/run_all.py --gpu)"
    else:
        selected = args.only or [*CPU_MODULES, *OPTIONAL_MODULES]
        for name in selected:
            got, note = run_module(name, args.quick, optional=name in OPTIONAL_MODULES)
            rows += got
            notes += [note] if note else []
        stem, title = "latest", "CPU benchmarks (bench/run_all.py)"
    total = time.perf_counter() - started
    notes.append(f"total {total / 60:.1f} min" + (" (--quick)" if args.quick else ""))
    if info.get("load_average_1m") and info["load_average_1m"] > 0.5 * (info["nproc"] or 1):
        notes.append(
            "the machine was shared with other work while measuring (load average above): "
            "figures are noisy; each comparison interleaves ours and the baseline"
        )

    print(f"\n{title}: {info['date']}, {info['nproc']} CPU(s), {info['cpu']}")
    print(console_table(rows))
    for n in notes:
        print(f"note: {n}")
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"machine": info, "quick": args.quick, "rows": rows, "notes": notes}
    (args.out / f"{stem}.json").write_text(json.dumps(payload, indent=2))
    (args.out / f"{stem}.md").write_text(markdown_table(rows, info, notes, title))
    print(f"wrote {args.out / (stem + '.json')} and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""bench/bench_loop.py on a tiny demo folder made here (coloured tiles, a tiny model, two small
collage-like scenes): the pairing (one seed: the same first model, fine-tune seed and random
picks for every strategy; the same seed twice: the same run), corrections stick and labels saved
in its JSON. Nothing here is a figure: the tiny model only has to run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from tiny_demo_helpers import build_tiny_demo  # noqa: E402

from bench import bench_loop  # noqa: E402
from mlcore.train.profiles import profile_config  # noqa: E402


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory) -> Path:
    return build_tiny_demo(tmp_path_factory.mktemp("demo"), bench_loop.SCENES.values())


def _run(demo: Path, out: Path, strategies: list[str], seeds: int = 1, extra=()) -> dict:
    code = bench_loop.main([*extra,
        "--demo", str(demo), "--strategies", *strategies, "--seeds", str(seeds),
        "--cycles", "1", "--random-cycles", "2", "--per-cycle", "12", "--steps", "2",
        "--json", str(out / "loop.json"), "--chart", str(out / "loop.png"),
    ])  # fmt: skip
    assert code == 0
    return json.loads((out / "loop.json").read_text())


@pytest.mark.slow  # several real fine-tunes
def test_paired_seeds_share_the_first_model_the_finetune_seed_and_the_random_picks(
    tiny_demo, tmp_path
):
    first = _run(tiny_demo, tmp_path, ["random", "diverse_uncertainty"], seeds=2)
    records = {(r["strategy"], r["seed"]): r for r in first["records"]}
    assert set(records) == {(s, k) for s in ("random", "diverse_uncertainty") for k in (0, 1)}
    shas = {r["first_model_sha256"] for r in records.values()}
    assert shas == {first["meta"]["first_model"]["sha256"]}  # one first model for every run
    for seed in (0, 1):
        a, b = records[("random", seed)], records[("diverse_uncertainty", seed)]
        assert a["finetune_seed"] == b["finetune_seed"] == seed
        assert a["f1"][0] == b["f1"][0]  # the same first model, the same thresholds
        assert len(a["f1"]) == 3 and len(b["f1"]) == 2  # random goes on for labels saved
    # Different seeds draw different random windows.
    assert records[("random", 0)]["picks"][0] != records[("random", 1)]["picks"][0]

    again = _run(tiny_demo, tmp_path, ["random"], seeds=1)
    repeat = again["records"][0]
    # The same seed is the same run: picks of every cycle, and what the fine-tunes made of them.
    assert repeat["picks"] == records[("random", 0)]["picks"]
    assert repeat["f1"] == records[("random", 0)]["f1"]


@pytest.mark.slow  # several real fine-tunes
def test_the_json_reports_paired_gains_corrections_stick_and_labels_saved(tiny_demo, tmp_path):
    results = _run(tiny_demo, tmp_path, ["random", "diverse_uncertainty"], seeds=2)
    default = results["default_strategy"]
    assert default == "diverse_uncertainty"  # the only candidate besides random
    assert results["default_chosen_on"].startswith("calibration-scene")
    paired = results["paired_vs_random"][default]
    assert paired["seeds"] == [0, 1] and len(paired["object_f1"]["mean"]) == 2
    assert paired["object_f1"]["mean"][0] == 0.0  # the same first model
    records = [r for r in results["records"] if r["strategy"] == default]
    for r in records:
        stick = r["stick"][0]
        assert stick["answered"] == 12 and 0 <= stick["kept"] <= 12
        # The same answers split by how much of its window each answer's class covers.
        bins = r["stick_by_coverage"][0]
        assert sum(b["answered"] for b in bins) == 12
        assert sum(b["kept"] for b in bins) == stick["kept"]
    assert results["meta"]["finetune"]["steps"] == 2
    finetune = profile_config("quick", finetune=True)
    assert records[0]["correction_share"] == finetune["correction_share"]
    assert records[0]["lr"] == finetune["lr"]
    summary = results["strategies"][default]["corrections_stick"]
    assert summary["mean"][0] == pytest.approx(
        np.mean([r["stick"][0]["share"] for r in records]), abs=1e-4
    )
    by_coverage = summary["by_answer_coverage"]
    assert sum(b["answered"] for b in by_coverage) == 12 * len(records)
    saved = results["labels_saved"]
    assert saved["strategy"] == default and saved["budget"] == 12
    assert saved["baseline_max_labels"] == 24
    spread = results["strategies"]["random"]["thresholds_spread"]
    assert set(spread) == {"calibration_scene", "one_copy_corner", "plateau_middle_measured_only"}
    assert (tmp_path / "loop.png").stat().st_size > 0
    assert results["default_candidates"].keys() == {default}
    # The summaries can be rebuilt from the records alone (an interrupted or merged run).
    path = str(tmp_path / "loop.json")
    argv = ["--chart-only", "--resummarise", "--json", path, "--chart", str(tmp_path / "c.png")]
    assert bench_loop.main(argv) == 0
    again = json.loads((tmp_path / "loop.json").read_text())
    assert again["strategies"] == results["strategies"]
    assert again["labels_saved"] == results["labels_saved"]


def test_the_finetune_levers_reach_the_finetune_and_the_json(tiny_demo, tmp_path):
    extra = ["--lr", "0.01", "--correction-share", "0.5", "--parent-mix", "0.25",
             "--set", "warmup_fraction=0.2", "--set", "label_smoothing=0.05"]  # fmt: skip
    results = _run(tiny_demo, tmp_path, ["random"], extra=extra)
    record = results["records"][0]
    assert (record["lr"], record["correction_share"], record["parent_mix"]) == (0.01, 0.5, 0.25)
    assert record["set"] == {"warmup_fraction": 0.2, "label_smoothing": 0.05}
    assert results["meta"]["finetune"] == {
        "steps": 2,
        "lr": 0.01,
        "correction_share": 0.5,
        "warmup_fraction": 0.2,
        "parent_mix": 0.25,
        "label_smoothing": 0.05,
    }


@pytest.mark.slow  # several real fine-tunes
def test_resume_keeps_the_runs_done_and_runs_only_the_missing_ones(tiny_demo, tmp_path):
    first = _run(tiny_demo, tmp_path, ["random"], seeds=1)
    kept = first["records"][0]
    # A second seed on top: the first run is kept as it was (not run again), the second added.
    resumed = _run(tiny_demo, tmp_path, ["random"], seeds=2, extra=["--resume"])
    records = {r["seed"]: r for r in resumed["records"]}
    assert set(records) == {0, 1}
    assert records[0] == kept
    assert resumed["meta"]["runs_kept_from_earlier"] == 1
    assert resumed["meta"]["runs_done"] == "2/2"
    assert resumed["strategies"]["random"]["seeds"] == [0, 1]
    # Another fine-tune must not be paired with the kept runs: nothing is kept.
    other = _run(tiny_demo, tmp_path, ["random"], seeds=1, extra=["--resume", "--lr", "0.01"])
    assert "runs_kept_from_earlier" not in other["meta"]
    assert [r["lr"] for r in other["records"]] == [0.01]


def test_never_worse_judges_each_step_of_each_scene_on_hand_made_runs():
    def run(seed, f1, calibration, rocket):
        return {"seed": seed, "f1": f1, "calibration_f1": calibration,
                "heldout_f1": {"0": rocket[0], "2": rocket[1]}}  # fmt: skip

    runs = [
        # Mona Lisa rises; the calibration scene loses 0.02-0.03 at the second step on each seed.
        run(0, [0.70, 0.72, 0.74], [0.80, 0.80, 0.78], [0.70, 0.71]),
        run(1, [0.71, 0.72, 0.75], [0.81, 0.81, 0.79], [0.70, 0.70]),
        run(2, [0.69, 0.71, 0.73], [0.80, 0.81, 0.78], [0.71, 0.72]),
    ]
    check = bench_loop.never_worse(runs, budget_cycle=2, per=100)
    assert [s["answers"] for s in check["mona_lisa"]] == [[0, 100], [100, 200]]
    assert [s["answers"] for s in check["rocket"]] == [[0, 200]]
    assert all(s["passes"] for s in check["mona_lisa"] + check["rocket"])
    first, second = check["calibration_scene"]
    assert first["mean"] == pytest.approx(0.0033, abs=1e-4) and first["passes"]
    assert second["mean"] == pytest.approx(-0.0233, abs=1e-4)
    assert second["ci95"][1] < -bench_loop.NEVER_WORSE_TOLERANCE and not second["passes"]
    assert check["passes"] is False
    # Beside the steps, first to last: the calibration scene ends 0.02 lower on every seed.
    overall = check["overall"]["calibration_scene"]
    assert overall["answers"] == [0, 200] and overall["mean"] == pytest.approx(-0.02, abs=1e-4)
    assert check["overall"]["mona_lisa"]["passes"] and not overall["passes"]
    table = bench_loop.never_worse_table({"strategies": {"random": {"never_worse": check}}})
    assert "| random | calibration_scene |" in table and "**no**" in table


@pytest.mark.slow  # several real fine-tunes and a second tiny first model
def test_resume_from_another_first_model_keeps_whole_seeds_and_names_each_model(
    tiny_demo, tmp_path
):
    import shutil

    from mlcore import cli

    first = _run(tiny_demo, tmp_path, ["random"], seeds=1)
    other = tmp_path / "other-demo"
    shutil.copytree(tiny_demo, other, ignore=shutil.ignore_patterns("bench_loop"))
    shutil.rmtree(other / "model")
    assert cli.main(["train", str(other / "canvases"), str(other / "model"), "--profile", "tiny",
                     "--set", "seed=1"]) == 0  # fmt: skip
    resumed = _run(other, tmp_path, ["random"], seeds=2, extra=["--resume"])
    records = {r["seed"]: r for r in resumed["records"]}
    assert records[0] == first["records"][0]  # the whole seed kept, with its own first model
    assert records[1]["first_model_sha256"] == resumed["meta"]["first_model"]["sha256"]
    assert records[0]["first_model_sha256"] != records[1]["first_model_sha256"]
    assert resumed["meta"]["first_models"] == {
        records[0]["first_model_sha256"]: [0], records[1]["first_model_sha256"]: [1],
    }  # fmt: skip

"""The benchmarks' device code on the CPU (its fallback), and run_all's reporting.

Timings are never asserted: these check that the code paths run and compute the right thing."""

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bench import bench_mlcore, run_all  # noqa: E402
from mlcore.inference.scoring import OnnxScorer, score_scene  # noqa: E402
from mlcore.ingest.scenes import ArrayScene, NpyScene  # noqa: E402
from mlcore.model.export import export_onnx  # noqa: E402
from mlcore.model.network import build_model  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CLASSES = bench_mlcore.CLASSES


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_gpu_part_on_a_machine_without_cuda_says_so_and_exits_0(tmp_path):
    proc = subprocess.run(
        [sys.executable, "bench/run_all.py", "--gpu", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "No CUDA device" in proc.stdout
    assert "windows/s" not in proc.stdout  # nothing that looks like a measurement
    assert not list(tmp_path.iterdir())  # and no result files


def test_torch_strip_scorer_on_cpu_equals_onnx_runtime(tmp_path):
    torch.manual_seed(0)
    model = build_model(len(CLASSES), depth=8, width=8)
    path = export_onnx(model, tmp_path / "m.onnx", CLASSES)
    scene = np.random.default_rng(0).integers(0, 256, (150, 203, 3), dtype=np.uint8)
    np.save(tmp_path / "scene.npy", scene)
    expected = score_scene(OnnxScorer(path), ArrayScene(scene), 8, batch_size=64)
    scorer = bench_mlcore.TorchStripScorer(model, CLASSES, "cpu")
    # Small strips and batches: windows cross strip and batch boundaries; edges are clamped.
    got = scorer.score_scene(NpyScene(tmp_path / "scene.npy"), 8, batch_size=50, rows_per_strip=3)
    np.testing.assert_array_equal(got.ys, expected.ys)
    np.testing.assert_array_equal(got.xs, expected.xs)
    np.testing.assert_allclose(got.probs, expected.probs, atol=1e-4)


def test_gpu_training_bench_runs_on_cpu():
    variants = [("bf16 + channels_last", {"bf16": True, "channels_last": True, "compile": False})]
    rows = bench_mlcore.gpu_training(
        "cpu", quick=True, steps=4, batch_size=32, n_windows=20_000, variants=variants
    )
    assert len(rows) == 1 and not rows[0].get("error"), rows
    r = rows[0]
    assert r["value"] > 0 and r["unit"] == "windows/s"
    assert r["met"] is None  # no GPU target is claimed for a CPU run
    assert "MFLOP/window" in r["note"]


def test_gpu_scoring_bench_runs_on_cpu(tmp_path):
    rows = bench_mlcore.gpu_scoring("cpu", True, size=200, step=16, batch_size=128, work=tmp_path)
    assert [r["name"].split(", ", 1)[1] for r in rows] == [
        "PyTorch (bf16, channels_last, on-device gather)",
        "ONNX Runtime CPUExecutionProvider",
    ]
    assert all(r["value"] > 0 and r["met"] is None for r in rows)


def test_box_outputs_bench_exports_a_resnet_with_a_box_head_and_compares_it(tmp_path):
    (r,) = bench_mlcore.bench_box_outputs(tmp_path, quick=True)
    assert r["unit"] == "us/window" and r["value"] > 0 and r["baseline_value"] > 0
    assert r["ratio"] == r["value"] / r["baseline_value"] and r["target"] == "<= 1.20x"
    assert "load average" in r["note"]  # timings on a shared machine say how loaded it was


def test_dense_tiles_bench_scores_each_tile_size_in_its_own_process(tmp_path):
    rows = bench_mlcore.bench_dense_tiles(tmp_path, quick=True)
    assert [r["name"] for r in rows] == ["dense scoring in 768 px tiles vs 1024 px"]
    for r in rows:
        assert r["unit"] == "windows/s" and r["value"] > 0 and r["baseline_value"] > 0
        assert re.search(r"peak RSS \d+ MB vs \d+ MB", r["note"])
    assert not list(tmp_path.glob("*.npy"))  # the scene is removed


def test_flops_and_peaks():
    flops = bench_mlcore.training_flops_per_window()
    assert 150e6 < flops < 400e6  # ResNet-20 at 32x32: ~41M multiply-adds forward, x2 x3
    assert bench_mlcore.bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bench_mlcore.bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bench_mlcore.bf16_peak_tflops("NVIDIA H200") == 989.0
    assert bench_mlcore.bf16_peak_tflops("Some Other GPU") is None


def test_run_all_reports_missing_and_failing_modules(tmp_path, capsys):
    rows, note = run_all.run_module("bench_does_not_exist", quick=True, optional=True)
    assert rows == [] and "not present" in note
    broken = REPO / "bench" / "bench_zz_broken_for_test.py"
    broken.write_text("def run(quick):\n    raise RuntimeError('boom')\n")
    try:
        rows, _ = run_all.run_module("bench_zz_broken_for_test", quick=True, optional=True)
    finally:
        broken.unlink()
    assert rows[0]["error"] == "RuntimeError: boom"
    assert "boom" in capsys.readouterr().err  # printed, not hidden
    table = run_all.console_table(rows)
    assert "ERROR" in table
    md = run_all.markdown_table(rows, {"date": "d", "nproc": 2, "cpu": "c"}, [], "t")
    assert "| bench_zz_broken_for_test |" in md
    json.dumps(rows)  # the rows go to latest.json


def test_compile_mode_rules():
    from mlcore.train.training import COMPILE_MIN_WINDOWS, TrainConfig, compile_mode

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    short = COMPILE_MIN_WINDOWS // 128 - 1
    assert compile_mode(TrainConfig(), cpu, short) is None  # short CPU runs stay eager
    assert compile_mode(TrainConfig(), cpu, short + 2) == "default"
    assert compile_mode(TrainConfig(), cuda, 1) == "default"
    assert compile_mode(TrainConfig(compile=False), cuda, 10**9) is None
    assert compile_mode(TrainConfig(compile=True), cpu, 1) == "default"
    assert compile_mode(TrainConfig(compile="reduce-overhead"), cuda, 1) == "reduce-overhead"
    with pytest.raises(ValueError, match="compile must be"):
        compile_mode(TrainConfig(compile="fastest"), cpu, 1)


def test_a_broken_compiler_falls_back_to_eager_training(tmp_path):
    """A real compiler failure (no C++ compiler for Inductor), not a mock: training goes on."""
    script = (
        "import json, numpy as np\n"
        "from mlcore.data.canvases import Canvas, CanvasSet\n"
        "from mlcore.train.training import TrainConfig, train\n"
        "rng = np.random.default_rng(0)\n"
        "cs = CanvasSet(['a', 'b'], [Canvas(c, rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))"
        " for c in 'ab'])\n"
        "logs = []\n"
        "r = train(cs, ['a', 'b'], TrainConfig(depth=8, width=8, batch_size=8, steps=3,"
        " val_windows=0, compile=True, device='cpu'), log=logs.append)\n"
        "print(json.dumps({'logs': logs, 'steps': r.history[-1]['step']}))\n"
    )
    env = dict(os.environ, CXX=str(tmp_path / "no-such-compiler"), CC=str(tmp_path / "no-cc"))
    env.update(TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO, timeout=600, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert any("torch.compile failed" in line for line in out["logs"]), out["logs"]
    assert out["steps"] == 3


def test_a_missing_mxnet_venv_is_a_skipped_row_with_its_reason(monkeypatch, tmp_path):
    from bench import bench_engines
    from bench.common import skipped_row

    monkeypatch.setitem(bench_engines.PYTHONS, "mxnet", REPO / ".venv-absent" / "bin" / "python")
    child = bench_engines.run_child("mxnet", argparse.Namespace())
    assert "error" not in child and "make setup-mxnet" in child["missing"]
    assert bench_engines.best([child]) == child
    rows = [skipped_row("CPU training, PyTorch vs MXNet 1.9.1", child["missing"], ">= 2.5x")]
    table = run_all.console_table(rows)
    assert "ERROR" not in table and "skipped" in table and "make setup-mxnet" in table

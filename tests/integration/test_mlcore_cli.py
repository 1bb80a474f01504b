"""`python -m mlcore` end to end on a tiny image-folder zip made here: import, canvases, collage,
training (tiny profile), scoring, evaluation, storage ingress/egress, and clear errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
COLOURS = {"automobile": (200, 30, 30), "ship": (30, 40, 200), "frog": (60, 160, 60)}


def run_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlcore", *map(str, args)],
        cwd=cwd or ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def image_folder_zip(path: Path, per_class: int = 12, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w") as archive:
        for split in ("train", "test"):
            for name, colour in COLOURS.items():
                for i in range(per_class):
                    noise = rng.integers(-30, 30, (32, 32, 3))
                    pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
                    buffer = io.BytesIO()
                    Image.fromarray(pixels).save(buffer, "PNG")
                    archive.writestr(f"{split}/{name}/{i}.png", buffer.getvalue())
    return path


@pytest.mark.slow
def test_the_whole_pipeline_from_the_command_line(tmp_path):
    data = image_folder_zip(tmp_path / "tiles.zip")
    ok = run_cli("import-dataset", data, tmp_path / "train.npz", "--split", "train")
    assert ok.returncode == 0, ok.stderr
    assert "class car       12" in ok.stdout and "class negative  12" in ok.stdout

    ok = run_cli(
        "build-canvases", tmp_path / "train.npz", tmp_path / "canvases", "--canvas-size", "128"
    )
    assert ok.returncode == 0, ok.stderr
    manifest = json.loads((tmp_path / "canvases" / "manifest.json").read_text())
    assert manifest  # the placements are recorded

    target = np.zeros((96, 128, 3), np.uint8)
    target[:, 64:] = (200, 30, 30)
    Image.fromarray(target).save(tmp_path / "target.png")
    ok = run_cli("collage", tmp_path / "target.png", data, tmp_path / "scene.png", "--cols", "8")
    assert ok.returncode == 0, ok.stderr
    truth = json.loads((tmp_path / "scene.json").read_text())
    assert {box["label"] for box in truth} <= {"car", "boat", "negative"}

    ok = run_cli("train", tmp_path / "canvases", tmp_path / "model", "--profile", "tiny")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "model" / "model.onnx").stat().st_size > 0

    ok = run_cli(
        "score", tmp_path / "model" / "model.onnx", tmp_path / "scene.png", tmp_path / "grid.npz",
        "--parquet", tmp_path / "scores.parquet",
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    from mlcore.inference.scoring import ScoreGrid

    grid = ScoreGrid.load(tmp_path / "grid.npz")
    assert grid.classes == ["car", "boat", "negative"]
    assert grid.ys[-1] == Image.open(tmp_path / "scene.png").height - 32  # bottom edge covered

    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "scores.parquet").num_rows == grid.probs.shape[0] * len(grid.xs)

    ok = run_cli(
        "evaluate", tmp_path / "grid.npz", tmp_path / "scene.json", "--threshold", "0.5",
        "--json", tmp_path / "metrics.json",
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"window", "object", "detections", "nms_iou"} <= set(metrics)
    assert "window car" in ok.stdout and "object overall" in ok.stdout

    ok = run_cli("ceiling", tmp_path / "scene.json", "--step", "16", "--json", tmp_path / "c.json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "c.json").read_text())["object"]["overall"]["f1"] > 0.9


def test_storage_ingress_and_egress(tmp_path):
    source = tmp_path / "scene.bin"
    source.write_bytes(b"x" * 300_000)
    store = tmp_path / "store"
    ok = run_cli("upload", store, source, "scenes/1/scene.bin")
    assert ok.returncode == 0, ok.stderr
    assert (store / "scenes" / "1" / "scene.bin").read_bytes() == source.read_bytes()
    ok = run_cli("download", store, "scenes/1/scene.bin", tmp_path / "back.bin")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "back.bin").read_bytes() == source.read_bytes()


@pytest.mark.parametrize(
    "args, message",
    [
        (["import-dataset", "/nonexistent/data.zip", "out.npz"], "does not exist"),
        (["upload", "STORE", "LOCAL", "../outside"], ".."),
        (["train", "CANVASES", "out", "--profile", "huge"], "unknown training profile"),
        (
            ["train", "CANVASES", "out", "--profile", "tiny", "--steps", "2", "--set", "steps=3"],
            "steps is given twice",
        ),
        (
            ["train", "CANVASES", "out", "--profile", "tiny", "--seed", "2", "--set", "seed=3"],
            "seed is given twice",
        ),
    ],
)
def test_bad_input_gives_one_clear_line(tmp_path, args, message):
    (tmp_path / "LOCAL").write_bytes(b"data")
    (tmp_path / "CANVASES").mkdir()
    args = [str(tmp_path / a) if a in ("STORE", "LOCAL", "CANVASES") else a for a in args]
    failed = run_cli(*args, cwd=tmp_path)
    assert failed.returncode == 2
    assert message in failed.stderr and "Traceback" not in failed.stderr

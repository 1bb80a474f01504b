"""DistributedDataParallel training: 2 processes on the CPU with gloo, started the way a user
starts them (``python -m torch.distributed.run --nproc_per_node 2 -m mlcore.train.distributed``),
against one process on the same canvases with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mlcore.data.canvases import Canvas, CanvasSet  # noqa: E402
from mlcore.inference.scoring import OnnxScorer  # noqa: E402
from mlcore.train.training import TrainConfig, train  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CLASSES = ["car", "boat", "negative"]
CONFIG = dict(
    depth=8, width=16, batch_size=64, steps=60, lr=0.05, log_every=10, val_windows=0, seed=3,
    device="cpu", threads=1, compile=False,
)  # fmt: skip


def _canvas(kind: str, seed: int, size: int = 96) -> np.ndarray:
    """Gray noise with red squares (car), blue disks (boat) or nothing (negative)."""
    rng = np.random.default_rng(seed)
    img = rng.normal(120, 25, (size, size, 3))
    yy, xx = np.mgrid[:size, :size]
    if kind != "negative":
        for cy in range(6, size, 14):
            for cx in range(6, size, 14):
                cy2, cx2 = cy + rng.integers(-2, 3), cx + rng.integers(-2, 3)
                if kind == "car":
                    img[(abs(yy - cy2) <= 4) & (abs(xx - cx2) <= 4)] = (220, 40, 40)
                else:
                    img[(yy - cy2) ** 2 + (xx - cx2) ** 2 <= 20] = (40, 60, 220)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def canvas_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("ddp-canvases")
    canvases = [Canvas(c, _canvas(c, 10 + i)) for i, c in enumerate(CLASSES)]
    CanvasSet(CLASSES, canvases).save(directory)
    return directory


@pytest.fixture(scope="module")
def ddp_run(canvas_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp-out")
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", PYTHONPATH=str(REPO))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_port", str(29500 + os.getpid() % 1000), "-m", "mlcore.train.distributed",
        "--canvases", str(canvas_dir), "--classes", ",".join(CLASSES), "--out", str(out),
        "--config", json.dumps(CONFIG),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, f"only rank 0 reports: {proc.stdout[-2000:]}"
    return out, json.loads(lines[0])


@pytest.fixture(scope="module")
def single_run(canvas_dir):
    return train(CanvasSet.load(canvas_dir), CLASSES, TrainConfig(**CONFIG))


def test_two_gloo_ranks_follow_the_single_process_loss_curve(ddp_run, single_run):
    out, report = ddp_run
    ddp = [h["loss"] for h in json.loads((out / "history.json").read_text())]
    one = [h["loss"] for h in single_run.history]
    assert len(ddp) == len(one) == CONFIG["steps"] // CONFIG["log_every"]
    # Same shape: both fall clearly from the first logged window of steps to the last...
    assert ddp[-1] < 0.8 * ddp[0], ddp
    assert one[-1] < 0.8 * one[0], one
    # ...and end close together (same global batch and schedule; only the draws differ).
    assert abs(ddp[-1] - one[-1]) < 0.25, (ddp, one)
    # The logged DDP loss is the mean over both ranks, so it is a real number on each log.
    assert all(np.isfinite(ddp))


def test_rank_zero_exports_a_scorable_model(ddp_run, canvas_dir):
    out, report = ddp_run
    scorer = OnnxScorer(report["model"])
    assert scorer.classes == CLASSES
    canvas = CanvasSet.load(canvas_dir).canvases[0].array
    windows = np.stack([canvas[y : y + 32, 0:32] for y in (0, 8, 16)])
    probs = scorer.predict(windows)
    assert probs.shape == (3, 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    assert (out / "checkpoint.pt").is_file()


def test_train_distributed_outside_torchrun_is_a_clear_error(canvas_dir, monkeypatch):
    from mlcore.train.distributed import train_distributed

    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        train_distributed(CanvasSet.load(canvas_dir), CLASSES, dict(CONFIG, steps=2))

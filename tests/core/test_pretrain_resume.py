"""``mlcore pretrain --resume`` (issue 36.3): a pretraining interrupted mid-way and resumed writes
the starting model an uninterrupted run writes; the card says what precision was used and that
it was resumed; ``--resume`` with nothing to resume says so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from mlcore.data.datasets import find_shared_data  # noqa: E402
from mlcore.progress import null_progress  # noqa: E402
from mlcore.train.pretrain import pretrain  # noqa: E402
from mlcore.train.profiles import profile_config  # noqa: E402
from mlcore.train.training import RESUME_FILE, read_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


class Interrupted(Exception):
    pass


def crashing_at(step: int):
    def progress_for(description):
        if description != "pretraining":
            return null_progress

        def progress(done, total, message=""):
            if done == step:
                raise Interrupted(f"killed at step {done}")

        return progress

    return progress_for


@pytest.mark.slow  # three tiny pretraining runs
def test_an_interrupted_pretraining_resumes_to_the_same_starting_model(tmp_path):
    data = find_shared_data()
    assert data is not None, "../shared/data (CIFAR-10) is needed"
    source = data / "cifar10-jpg.zip"
    config = profile_config("tiny", steps=20)
    common = dict(seed=2, limit_per_class=60, log=lambda line: None)
    whole = pretrain(source, tmp_path / "whole", config, checkpoint_every=5, **common)
    assert not (tmp_path / "whole" / RESUME_FILE).exists()  # done: nothing left to resume
    assert whole["resumed_from_step"] == 0
    assert whole["precision"]["dtype"] in ("bfloat16", "float32")
    assert whole["precision"]["reason"] in (tmp_path / "whole" / "CARD.md").read_text()

    out = tmp_path / "pieces"
    with pytest.raises(Interrupted):
        pretrain(source, out, config, checkpoint_every=5, progress_for=crashing_at(12), **common)
    assert (out / RESUME_FILE).is_file()
    card = pretrain(source, out, config, checkpoint_every=5, resume=True, **common)
    assert card["resumed_from_step"] == 10 and card["precision"] == whole["precision"]
    assert card["figures"]["summary"] == whole["figures"]["summary"]
    a = read_checkpoint(tmp_path / "whole" / "checkpoint.pt")["state_dict"]
    b = read_checkpoint(out / "checkpoint.pt")["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_nothing_to_resume_is_a_clear_error(tmp_path):
    data = find_shared_data()
    assert data is not None, "../shared/data (CIFAR-10) is needed"
    args = ["pretrain", "--data", str(data / "cifar10-jpg.zip"), "--out", str(tmp_path / "new"),
            "--profile", "tiny", "--resume"]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "mlcore", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode != 0
    assert "nothing to resume" in done.stderr and "without --resume" in done.stderr
    assert "Traceback" not in done.stderr

"""Reduced precision on the CPU (issue 36.2): the CPU's bf16 units are detected and named, bf16
autocast is used on the CPU when asked, and by default on CPUs with AMX (measured there against
float32 on the calibration scene), is really used when chosen, and the choice is recorded."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training_helpers import CLASSES, TINY, synthetic_set  # noqa: E402

from mlcore.train.training import (  # noqa: E402
    TrainConfig,
    cpu_bf16_units,
    read_checkpoint,
    resolve_precision,
    train,
)

CPU = torch.device("cpu")


def test_the_choice_follows_the_cpu_and_the_option():
    units = cpu_bf16_units()
    auto = resolve_precision(TrainConfig(), CPU)  # "auto" is the default
    if units == "AMX":  # measured against float32 on the calibration scene: used
        assert auto["dtype"] == "bfloat16" and "the CPU has AMX units" in auto["reason"]
    elif units:  # found and named, used only when asked (not reliably faster)
        assert auto["dtype"] == "float32" and f"the CPU has {units} units" in auto["reason"]
    else:
        assert auto["dtype"] == "float32" and "no bf16 units" in auto["reason"]
    for off in (False, "false", "False"):
        assert resolve_precision(TrainConfig(bf16=off), CPU) == {
            "dtype": "float32", "reason": "bf16=false asked",
        }  # fmt: skip
    forced = resolve_precision(TrainConfig(bf16="true"), CPU)
    assert forced["dtype"] == "bfloat16" and forced["reason"].startswith("bf16=true asked")
    assert resolve_precision(TrainConfig(bf16="auto"), torch.device("cuda"))["dtype"] == "bfloat16"
    with pytest.raises(ValueError, match="bf16 must be auto, true or false, not 'half'"):
        resolve_precision(TrainConfig(bf16="half"), CPU)


@pytest.mark.parametrize("units, dtype", [("AMX", "bfloat16"), ("AVX512-BF16", "float32"),
                                          (None, "float32")])  # fmt: skip
def test_auto_follows_the_units_on_every_kind_of_cpu(monkeypatch, units, dtype):
    # Which units this machine has is hardware; the decision on each kind is checked here.
    from mlcore.train import training

    monkeypatch.setattr(training, "cpu_bf16_units", lambda: units)
    auto = resolve_precision(TrainConfig(), CPU)
    assert auto["dtype"] == dtype and auto["reason"].startswith("auto:")
    assert (units or "no bf16 units") in auto["reason"]


def test_bf16_on_the_cpu_is_really_used_learns_and_is_recorded(tmp_path):
    half = train(synthetic_set(), CLASSES, TrainConfig(**TINY, bf16=True, device="cpu", threads=1))
    full = train(synthetic_set(), CLASSES, TrainConfig(**TINY, bf16=False, device="cpu", threads=1))
    assert half.precision["dtype"] == "bfloat16" and full.precision["dtype"] == "float32"
    # the CPU path honours it (it used to train in float32 whatever bf16 said)
    assert [h["loss"] for h in half.history] != [h["loss"] for h in full.history]
    assert half.val_accuracy is not None and half.val_accuracy > 0.6  # chance: 1/3
    losses = [h["loss"] for h in half.history]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert all(v.dtype != torch.bfloat16 for v in half.model.state_dict().values())  # fp32 weights
    saved = read_checkpoint(half.save_checkpoint(tmp_path / "model.pt"))
    assert saved["precision"] == half.precision
    assert saved["config"]["bf16"] is True

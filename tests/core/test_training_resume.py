"""A training run can be done in pieces (issue 36.3): interrupted, then resumed from its last
resumable checkpoint, it ends with exactly the weights of one uninterrupted run; a checkpoint of
another run is refused."""

import pytest

torch = pytest.importorskip("torch")

from training_helpers import CLASSES, synthetic_set  # noqa: E402

from mlcore.train.training import RESUME_FILE, TrainConfig, train  # noqa: E402

STEPS, EVERY, CRASH_AT = 30, 8, 21  # the crash loses steps 17..21: the resume redoes them
TINY = dict(depth=8, width=8, batch_size=16, steps=STEPS, lr=0.05, log_every=1, val_windows=64,
            threads=1, device="cpu", box_head=True)  # fmt: skip


class Interrupted(Exception):
    pass


def crash_at(step_to_crash: int):
    def progress(done, total, message=""):
        if done == step_to_crash:
            raise Interrupted(f"killed at step {done}")

    return progress


def assert_same_weights(a, b):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def run_in_two_pieces(config, tmp_path, **kwargs):
    with pytest.raises(Interrupted):
        train(synthetic_set(), CLASSES, config, progress=crash_at(CRASH_AT),
              checkpoint_dir=tmp_path, checkpoint_every=EVERY, **kwargs)  # fmt: skip
    assert (tmp_path / RESUME_FILE).is_file()
    logs = []
    resumed = train(synthetic_set(), CLASSES, config, checkpoint_dir=tmp_path,
                    checkpoint_every=EVERY, resume=True, log=logs.append, **kwargs)  # fmt: skip
    assert resumed.resumed_from_step == 2 * EVERY  # the last checkpoint before the crash
    assert any(f"resumed from {RESUME_FILE} at step {2 * EVERY}" in line for line in logs)
    return resumed


def test_an_interrupted_then_resumed_run_ends_with_the_uninterrupted_runs_weights(tmp_path):
    config = TrainConfig(**TINY)
    whole = train(synthetic_set(), CLASSES, config)
    resumed = run_in_two_pieces(config, tmp_path / "run")
    assert_same_weights(resumed, whole)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    assert resumed.val_accuracy == whole.val_accuracy


def test_a_resumed_fine_tune_with_parent_mix_matches_too(tmp_path):
    start = train(synthetic_set(), CLASSES, TrainConfig(**(TINY | {"steps": 6})))
    path = start.save_checkpoint(tmp_path / "start.pt")
    config = TrainConfig(**(TINY | {"lr": 0.02, "parent_mix": 0.3}))
    whole = train(synthetic_set(), CLASSES, config, init_state=path)
    resumed = run_in_two_pieces(config, tmp_path / "run", init_state=path)
    assert_same_weights(resumed, whole)
    changed = any(
        not torch.equal(v, start.model.state_dict()[k]) for k, v in whole.model.state_dict().items()
    )
    assert changed  # it did train


def test_resume_refuses_a_checkpoint_of_another_run_and_a_missing_one(tmp_path):
    with pytest.raises(Interrupted):
        train(synthetic_set(), CLASSES, TrainConfig(**TINY), progress=crash_at(10),
              checkpoint_dir=tmp_path, checkpoint_every=EVERY)  # fmt: skip
    other = TrainConfig(**(TINY | {"lr": 0.1}))
    with pytest.raises(ValueError, match=r"another run \(lr 0\.05 there, 0\.1 now\)"):
        train(synthetic_set(), CLASSES, other, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match=r"another run \(data '[0-9a-f]+' there, '[0-9a-f]+' now"):
        train(synthetic_set(seed=5), CLASSES, TrainConfig(**TINY), checkpoint_dir=tmp_path,
              resume=True)  # fmt: skip
    with pytest.raises(FileNotFoundError, match="nothing to resume.*without --resume"):
        train(synthetic_set(), CLASSES, TrainConfig(**TINY), checkpoint_dir=tmp_path / "empty",
              resume=True)  # fmt: skip
    # options that change neither weights nor draws (threads, log_every) may differ
    same = TrainConfig(**(TINY | {"log_every": 5}))
    resumed = train(synthetic_set(), CLASSES, same, checkpoint_dir=tmp_path, resume=True)
    assert resumed.resumed_from_step == EVERY

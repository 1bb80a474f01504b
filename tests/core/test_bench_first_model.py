"""bench/bench_first_model.py --resume keeps a seed only when the same command finished there."""

from __future__ import annotations

import json

from bench.bench_first_model import finished


def test_resume_keeps_a_seed_only_when_the_same_command_finished(tmp_path):
    command = ["-m", "mlcore", "demo", "--out", str(tmp_path), "--seed", "1", "--set", "a=1"]
    assert not finished(tmp_path, command)  # nothing ran
    (tmp_path / "metrics.json").write_text("{}")
    assert not finished(tmp_path, command)  # metrics of a run that did not say what it was
    (tmp_path / "bench_command.json").write_text(json.dumps(command))
    assert finished(tmp_path, command)
    assert not finished(tmp_path, [*command[:-1], "a=2"])  # another --set: run again

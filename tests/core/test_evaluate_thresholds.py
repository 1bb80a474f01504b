"""`mlcore evaluate` says which thresholds made its figures (issue 22): the published 0.9 when no
--model is given (it used to score at 0.9 silently), the model's calibrated ones with --model,
a given --threshold as given; in the printed summary and in the JSON."""

from __future__ import annotations

import json

import pytest
from helpers_boxes import export_box_model

from mlcore.cli import main
from mlcore.data.collage import save_ground_truth
from mlcore.eval.evaluation import oracle_grid
from mlcore.model.onnx_file import write_metadata

CLASSES = ["car", "boat", "negative"]


@pytest.fixture
def inputs(tmp_path):
    truth = [
        {"id": "a", "label": "car", "x": 10, "y": 6, "w": 32, "h": 32, "order": 0, "visible": 1},
        {"id": "b", "label": "boat", "x": 60, "y": 50, "w": 32, "h": 32, "order": 1, "visible": 1},
    ]
    save_ground_truth(truth, tmp_path / "gt.json")
    oracle_grid(truth, CLASSES, "negative", 16, size=(96, 96)).save(tmp_path / "grid.npz")
    return tmp_path


def evaluate(folder, capsys, *extra):
    assert main(["evaluate", str(folder / "grid.npz"), str(folder / "gt.json"),
                 "--json", str(folder / "m.json"), *extra]) == 0  # fmt: skip
    return capsys.readouterr().out, json.loads((folder / "m.json").read_text())


def test_without_a_model_it_names_the_published_threshold(inputs, capsys):
    out, metrics = evaluate(inputs, capsys)
    assert metrics["thresholds"] == {"car": 0.9, "boat": 0.9}
    assert metrics["thresholds_source"] == "published 0.9 (no --model given)"
    assert "car 0.900, boat 0.900  (published 0.9 (no --model given))" in out


def test_with_a_calibrated_model_it_names_the_calibrated_thresholds(inputs, capsys):
    model = export_box_model(inputs / "model.onnx", boxes=False, centredness=False)
    uncalibrated_out, uncalibrated = evaluate(inputs, capsys, "--model", str(model))
    assert uncalibrated["thresholds"] == {"car": 0.9, "boat": 0.9}
    assert "has no calibrated thresholds" in uncalibrated["thresholds_source"]
    write_metadata(model, {"thresholds": {"car": 0.575, "boat": 0.625}})
    out, metrics = evaluate(inputs, capsys, "--model", str(model))
    assert metrics["thresholds"] == {"car": 0.575, "boat": 0.625}
    assert metrics["thresholds_source"] == f"calibrated, stored in {model}"
    assert "car 0.575, boat 0.625  (calibrated" in out
    _, given = evaluate(inputs, capsys, "--model", str(model), "--threshold", "0.5")
    assert given["thresholds"] == {"car": 0.5, "boat": 0.5}
    assert given["thresholds_source"] == "--threshold 0.5"

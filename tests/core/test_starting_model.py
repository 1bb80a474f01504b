"""The starting model: the shipped files match their card and load; a project's first model
takes the right heads from it (sums for classes made of CIFAR-10 classes, new heads for other
classes, the backbone either way); a missing, corrupt or mismatched file is a clear error; the
pretrain command runs end to end at a tiny size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers_starting import CIFAR10, make_starting_model

from mlcore.data.datasets import find_shared_data
from mlcore.inference.scoring import OnnxScorer
from mlcore.model import starting_model
from mlcore.model.network import build_model
from mlcore.model.starting_model import (
    SHIPPED_DIR,
    StartingModelError,
    as_project_model,
    read_card,
    sha256_of,
    starting_checkpoint,
    verified_file,
)
from mlcore.train.training import (
    TrainConfig,
    load_checkpoint,
    load_init_state,
    read_checkpoint,
    train,
)

ROOT = Path(__file__).resolve().parents[2]
DEMO = {"automobile": "car", "ship": "boat"}
CLASSES = ["car", "boat", "negative"]


@pytest.fixture
def start_dir(tmp_path, monkeypatch):
    directory = make_starting_model(tmp_path / "start")
    monkeypatch.setenv(starting_model.STARTING_MODEL_ENV, str(directory))
    return directory


def windows(n=16, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3),
                                                                 dtype=np.uint8))  # fmt: skip


def mixed_set(sources: list[str], source_class: list[str], seed=0, size=160):
    """A mixed canvas whose 32-px tiles carry source classes (the dataset's own) and classes."""
    rng = np.random.default_rng(seed)
    classes = list(dict.fromkeys(source_class))
    label_map = np.zeros((size, size), dtype=np.uint8)
    source_map = np.zeros((size, size), dtype=np.uint8)
    for y in range(0, size, 32):
        for x in range(0, size, 32):
            k = int(rng.integers(len(sources)))
            source_map[y : y + 32, x : x + 32] = k
            label_map[y : y + 32, x : x + 32] = classes.index(source_class[k])
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    canvas = SimpleNamespace(class_name="mixed", array=image, weight=1.0, layout="mixed",
                             label_map=label_map, source_map=source_map, placements=[])  # fmt: skip
    return SimpleNamespace(canvases=[canvas], classes=classes,
                           heads=[[s, c] for s, c in zip(sources, source_class)])  # fmt: skip


# -- the shipped files -----------------------------------------------------------------------


def test_the_shipped_card_matches_its_files():
    card = read_card(SHIPPED_DIR)
    assert set(card["files"]) == {"checkpoint.pt", "model.onnx"}
    for name, entry in card["files"].items():
        assert sha256_of(SHIPPED_DIR / name) == entry["sha256"], name
    assert card["data"]["split"] == "train" and card["command"].startswith("python -m mlcore")
    for key in ("seed", "git_commit", "steps", "train_seconds", "device"):
        assert card[key] not in (None, ""), key
    assert (SHIPPED_DIR / "CARD.md").read_text().count(card["files"]["model.onnx"]["sha256"]) == 1


def test_the_shipped_model_loads_and_scores_on_the_cpu():
    model, payload = load_checkpoint(verified_file("checkpoint.pt", SHIPPED_DIR))
    assert payload["classes"] == CIFAR10
    x = windows()
    with torch.no_grad():
        probs = torch.softmax(model(x), 1).numpy()
    scorer = OnnxScorer(SHIPPED_DIR / "model.onnx")
    assert scorer.classes == CIFAR10
    np.testing.assert_allclose(scorer.predict(x.numpy()), probs, atol=1e-4)


# -- a project's first model -----------------------------------------------------------------


def test_a_mapped_project_sums_the_heads_of_its_classes(start_dir):
    payload = starting_checkpoint()
    start, _ = load_checkpoint(start_dir / "checkpoint.pt")
    x = windows()
    with torch.no_grad():
        ten = torch.softmax(start(x), 1)
    expected = torch.stack([ten[:, 1], ten[:, 8], ten.sum(1) - ten[:, 1] - ten[:, 8]], 1)
    direct = as_project_model(payload, CLASSES, DEMO)
    # as training builds it: the canvases' head order (any), each head mapped to its class
    order = ["ship", "truck", "automobile", "airplane", "bird", "cat", "deer", "dog", "frog",
             "horse"]  # fmt: skip
    head_classes = [CLASSES.index(DEMO.get(h, "negative")) for h in order]
    built = build_model(3, 8, 8, head_classes=head_classes)
    built.heads = order
    load_init_state(built, payload, log=lambda m: None)
    with torch.no_grad():
        for model in (direct.eval(), built.eval()):
            torch.testing.assert_close(model.class_probs(model(x)), expected, atol=1e-5, rtol=0)


def test_first_training_keeps_the_heads_and_the_start_architecture(start_dir):
    payload = read_checkpoint(start_dir / "checkpoint.pt")
    sources = ["automobile", "ship", "truck", "airplane"]
    cset = mixed_set(sources, ["car", "boat", "negative", "negative"])
    logs = []
    config = TrainConfig(depth=20, width=16, steps=1, lr=0.0, batch_size=16, val_windows=16,
                         threads=1, device="cpu")  # fmt: skip
    result = train(cset, cset.classes, config, init_state=payload, log=logs.append)
    model = result.model
    assert (model.depth, model.width) == (8, 8)  # the start's, not the profile's
    assert result.config.source_heads and model.heads == sources
    assert not any("new output heads" in line for line in logs)
    start_fc = payload["state_dict"]["fc.weight"]
    for row, name in enumerate(model.heads):
        torch.testing.assert_close(model.fc.weight[row].detach(), start_fc[CIFAR10.index(name)])
    torch.testing.assert_close(
        model.stem[0].weight.detach(), payload["state_dict"]["stem.0.weight"]
    )


def test_a_project_of_other_classes_gets_new_heads_on_the_backbone(start_dir):
    payload = read_checkpoint(start_dir / "checkpoint.pt")
    cset = mixed_set(["pylon", "field"], ["pylon", "negative"])
    logs = []
    config = TrainConfig(steps=1, lr=0.0, batch_size=16, val_windows=16, threads=1, device="cpu")
    model = train(cset, cset.classes, config, init_state=payload, log=logs.append).model
    assert any("new output heads ['pylon', 'negative']" in line for line in logs), logs
    torch.testing.assert_close(
        model.stem[0].weight.detach(), payload["state_dict"]["stem.0.weight"]
    )
    start_rows = payload["state_dict"]["fc.weight"]
    for row in model.fc.weight.detach():
        assert not any(torch.allclose(row, s) for s in start_rows)


def test_from_scratch_still_trains(start_dir):
    cset = mixed_set(["automobile", "ship", "truck"], ["car", "boat", "negative"])
    config = TrainConfig(depth=8, width=8, steps=4, batch_size=16, val_windows=16, threads=1,
                         device="cpu")  # fmt: skip
    result = train(cset, cset.classes, config)
    assert len(result.history) > 0 and not result.config.source_heads


# -- errors ------------------------------------------------------------------------------------


def test_a_missing_card_or_file_names_it_and_says_what_to_do(start_dir):
    (start_dir / "checkpoint.pt").unlink()
    with pytest.raises(StartingModelError, match=r"checkpoint\.pt is missing.*make pretrain"):
        starting_checkpoint()
    (start_dir / "card.json").unlink()
    with pytest.raises(StartingModelError, match=r"card .*card\.json is missing.*--from-scratch"):
        starting_checkpoint()


def test_a_corrupt_file_is_refused_by_its_sha256(start_dir):
    path = start_dir / "checkpoint.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StartingModelError, match=r"checkpoint\.pt is corrupt or was replaced"):
        starting_checkpoint()


def test_a_project_of_another_window_size_is_told_to_train_from_scratch(start_dir):
    with pytest.raises(StartingModelError, match=r"takes 32x32 windows.*48x48.*from scratch"):
        starting_checkpoint(window=48)


def test_the_cli_reports_a_corrupt_starting_model_in_one_line(start_dir, tmp_path):
    (start_dir / "model.onnx").write_bytes(b"x")
    (start_dir / "checkpoint.pt").write_bytes(b"not the file")
    canvases = tmp_path / "canvases"
    canvases.mkdir()
    (canvases / "manifest.json").write_text("{}")
    out = subprocess.run(
        [sys.executable, "-m", "mlcore", "train", str(canvases), str(tmp_path / "m")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "MLCORE_STARTING_MODEL": str(start_dir)},
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert "checkpoint.pt is corrupt or was replaced" in out.stderr
    assert "Traceback" not in out.stderr


# -- pretrain ----------------------------------------------------------------------------------


@pytest.mark.slow  # a real pretraining run, tiny
def test_pretrain_runs_end_to_end_at_a_tiny_size(tmp_path):
    data = find_shared_data()
    assert data is not None, "../shared/data (CIFAR-10) is needed"
    out = tmp_path / "start"
    args = ["pretrain", "--data", str(data / "cifar10-jpg.zip"), "--out", str(out),
            "--profile", "tiny", "--limit-per-class", "400", "--seed", "3"]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "mlcore", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    card = json.loads((out / "card.json").read_text())
    assert card["seed"] == 3 and card["command"] == "python -m mlcore " + " ".join(args)
    assert card["data"]["classes"] == CIFAR10 and card["data"]["split"] == "train"
    assert card["data"]["train_images"] + card["data"]["calibration_images"] == 4000
    assert set(card["figures"]["aligned_10way"]["recall"]) == set(CIFAR10)
    assert set(card["figures"]["aligned_3way_car_boat_negative"]["recall"]) == set(CLASSES)
    assert set(card["figures"]["calibration_scene_car_boat"]["f1"]) == {"car", "boat"}
    for name, entry in card["files"].items():
        assert sha256_of(out / name) == entry["sha256"]
    assert "Aligned tiles" in (out / "CARD.md").read_text()
    # the folder works as a starting model as it is
    assert read_checkpoint(verified_file("checkpoint.pt", out))["classes"] == CIFAR10


def test_a_mapped_project_holds_out_the_images_the_starting_model_held_out():
    from mlcore.data.canvases import split_calibration
    from mlcore.data.datasets import ClassMapping, LabelledImages, apply_mapping

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 4000)
    images = LabelledImages(np.zeros((4000, 4, 4, 3), np.uint8), labels, CIFAR10,
                            [f"i{k}" for k in range(4000)])  # fmt: skip
    mapped = apply_mapping(images, ClassMapping.cifar_default())
    _, held_ten = split_calibration(images, 0.05, seed=0)
    _, held_three = split_calibration(mapped, 0.05, seed=0)
    assert len(held_ten) > 100 and held_ten.ids == held_three.ids

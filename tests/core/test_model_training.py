"""ResNet, training on CPU (learns, deterministic, fine-tunes), checkpoints, ONNX export."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training_helpers import CLASSES, TINY, synthetic_set  # noqa: E402

from mlcore.data.windows import WindowSampler  # noqa: E402
from mlcore.engines import get_engine  # noqa: E402
from mlcore.inference.scoring import OnnxScorer, load_scorer  # noqa: E402
from mlcore.model.export import export_onnx  # noqa: E402
from mlcore.model.network import build_model  # noqa: E402
from mlcore.train.training import (  # noqa: E402
    TorchWindowGather,
    TrainConfig,
    load_checkpoint,
    save_checkpoint,
    train,
)


@pytest.fixture(scope="module")
def trained():
    return train(synthetic_set(), CLASSES, TrainConfig(**TINY, device="cpu"))


def test_model_takes_uint8_nhwc_and_returns_logits():
    model = build_model(num_classes=5, depth=20, width=16).eval()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 19 + 2  # 19 3x3 convs + 2 projection shortcuts; +1 fc = ResNet-20
    x = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        out = model(x)
        same = model(x.float())  # float 0..255 input (augmented batches) is the same
    assert out.shape == (4, 5)
    torch.testing.assert_close(out, same)
    with pytest.raises(ValueError, match="6n\\+2"):
        build_model(depth=10)
    with pytest.raises(ValueError, match="width must be at least 8"):
        build_model(width=4)


def test_torch_gather_matches_canvas_pixels():
    cs = synthetic_set()
    sampler = WindowSampler(cs, CLASSES, 32, 8, 0.1)
    gather = TorchWindowGather(sampler, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    images, labels, _ = gather.sample(40, gen, "train", jitter=3)
    # recover each window's origin by brute force and check it lies in the train band
    for k in range(40):
        canvas = cs.canvases[int(labels[k])].array
        view = np.lib.stride_tricks.sliding_window_view(canvas, (32, 32, 3))[:, :, 0]
        match = np.argwhere((view == images[k].numpy()).all(axis=(2, 3, 4)))
        assert len(match) >= 1
        assert match[0][0] + 32 <= 128 - 32  # inside the train band (the bottom 32 rows are val)


def test_training_beats_chance_on_held_out_windows(trained):
    assert trained.val_accuracy is not None and trained.val_accuracy > 0.6  # chance: 1/3
    losses = [h["loss"] for h in trained.history]
    assert len(losses) == TINY["steps"]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert trained.windows_per_s > 0


def test_training_is_deterministic_on_cpu(trained):
    again = train(synthetic_set(), CLASSES, TrainConfig(**TINY, device="cpu"))
    assert [h["loss"] for h in again.history] == [h["loss"] for h in trained.history]


def test_checkpoint_round_trip_and_fine_tune(trained, tmp_path):
    path = save_checkpoint(tmp_path / "ckpt.pt", trained.model, CLASSES, trained.config)
    model, info = load_checkpoint(path)
    assert info["classes"] == CLASSES and info["config"]["depth"] == 8
    x = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), trained.model(x))
    # fine-tune from the checkpoint: starts where the old model left off
    config = TrainConfig(**(TINY | {"steps": 3}), device="cpu")
    tuned = train(synthetic_set(1), CLASSES, config, init_state=path)
    fresh = train(synthetic_set(1), CLASSES, config)
    assert tuned.history[0]["loss"] < fresh.history[0]["loss"]
    # a new class list keeps the trunk and the heads of the classes it had; the new one is new
    logs = []
    zero = TrainConfig(**(TINY | {"steps": 1, "lr": 0.0}), device="cpu")
    grown = train(synthetic_set(1), CLASSES + ["plane"], zero, init_state=path, log=logs.append)
    assert any("new output heads ['plane']" in line for line in logs)
    old_fc, new_fc = trained.model.fc.weight.detach(), grown.model.fc.weight.detach()
    torch.testing.assert_close(new_fc[: len(CLASSES)], old_fc)
    assert not torch.allclose(new_fc[len(CLASSES)], old_fc[0])


def test_parent_mix_averages_the_fine_tune_with_its_start_and_keeps_fresh_heads(trained, tmp_path):
    path = save_checkpoint(tmp_path / "ckpt.pt", trained.model, CLASSES, trained.config)
    parent = {k: v.detach().clone() for k, v in trained.model.state_dict().items()}
    config = TINY | {"steps": 3, "seed": 5}
    alone = train(synthetic_set(1), CLASSES, TrainConfig(**config, device="cpu"), init_state=path)
    logs = []
    mixed = train(synthetic_set(1), CLASSES, TrainConfig(**config, parent_mix=0.25, device="cpu"),
                  init_state=path, log=logs.append)  # fmt: skip
    assert any("averaged with the parent" in line for line in logs)
    tuned, averaged = alone.model.state_dict(), mixed.model.state_dict()
    floats = [k for k, v in tuned.items() if v.is_floating_point()]
    assert "fc.weight" in floats and any(k.endswith("running_mean") for k in floats)
    for key in floats:  # weights and BatchNorm statistics alike
        expected = 0.75 * tuned[key] + 0.25 * parent[key]
        torch.testing.assert_close(averaged[key], expected, atol=1e-6, rtol=0)
    # a head the parent lacks has no parent value to return to: it keeps its trained weights
    grown = CLASSES + ["plane"]
    alone = train(synthetic_set(1), grown, TrainConfig(**config, device="cpu"), init_state=path)
    mixed = train(synthetic_set(1), grown, TrainConfig(**config, parent_mix=0.5, device="cpu"),
                  init_state=path)  # fmt: skip
    fc_alone, fc_mixed = alone.model.fc.weight.detach(), mixed.model.fc.weight.detach()
    torch.testing.assert_close(fc_mixed[3], fc_alone[3])
    torch.testing.assert_close(fc_mixed[:3], 0.5 * fc_alone[:3] + 0.5 * parent["fc.weight"])
    with pytest.raises(ValueError, match="parent_mix"):
        train(synthetic_set(1), CLASSES, TrainConfig(**config, parent_mix=1.0, device="cpu"),
              init_state=path)  # fmt: skip


def test_corrupt_or_missing_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_unknown_training_option_is_rejected():
    with pytest.raises(ValueError, match="unknown training options"):
        TrainConfig.from_dict({"stpes": 10})


def test_onnx_export_agrees_with_pytorch(trained, tmp_path):
    path = export_onnx(trained.model, tmp_path / "m.onnx", CLASSES, 32, {"version": 7})
    scorer = load_scorer(path)
    assert isinstance(scorer, OnnxScorer)
    assert scorer.classes == CLASSES and scorer.window == 32
    assert scorer.metadata["engine"] == "torch" and scorer.metadata["version"] == "7"
    rng = np.random.default_rng(0)
    for batch in (1, 37):  # dynamic batch
        x = rng.integers(0, 256, (batch, 32, 32, 3), dtype=np.uint8)
        with torch.no_grad():
            expected = torch.softmax(trained.model(torch.from_numpy(x)), 1).numpy()
        got = scorer.predict(x)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=1e-4)
    assert not list(tmp_path.glob(".*tmp"))  # written atomically, no leftovers


def test_torch_engine_exports_a_scorable_model_dir(trained, tmp_path):
    engine = get_engine("torch")
    exported = engine.export(trained, tmp_path / "v1")
    assert exported.scoring.name == "model.onnx" and exported.checkpoint.is_file()
    scorer = engine.load_scorer(exported.scoring)
    sample = synthetic_set(5).canvases[0].array[:32, :32][None]
    assert scorer.predict(sample).shape == (1, 3)
    with pytest.raises(ValueError, match="unknown engine"):
        get_engine("caffe")


def test_source_class_heads_learn_truck_apart_from_car_and_export_class_probabilities(tmp_path):
    """Four source classes (automobile, truck, ship, frog) mapped onto car/boat/negative: the model
    gets one head per source class, the exported file still gives three class probabilities."""
    from mlcore.data.canvases import build_canvas_set
    from mlcore.data.datasets import ClassMapping, LabelledImages, apply_mapping

    rng = np.random.default_rng(0)
    colours = {"automobile": (220, 40, 40), "truck": (40, 200, 40), "ship": (40, 60, 220),
               "frog": (200, 200, 60)}  # fmt: skip
    images, labels = [], []
    for k, colour in enumerate(colours.values()):
        for _ in range(60):
            images.append(np.clip(rng.normal(colour, 20, (32, 32, 3)), 0, 255).astype(np.uint8))
            labels.append(k)
    source = LabelledImages(np.stack(images), labels, list(colours), [str(i) for i in range(240)])
    mapped = apply_mapping(source, ClassMapping.cifar_default())
    assert mapped.sources == list(colours) and mapped.source_to_class() == [
        "car", "negative", "boat", "negative"]  # fmt: skip
    cset = build_canvas_set(mapped, canvas_size=128, canvases_per_class=2, calibration_fraction=0)
    assert [h for h, _ in cset.heads] == list(colours)
    sampler = WindowSampler(cset, cset.classes, val_fraction=0.0)
    assert sampler.fine and sampler.heads == list(colours)
    assert sampler.head_classes == [0, 2, 1, 2]
    canvas_idx, ys, xs, labels_ = sampler.sample_origins(500, np.random.default_rng(1))
    heads = sampler.heads_at(canvas_idx, ys, xs)
    np.testing.assert_array_equal(np.array(sampler.head_classes)[heads], labels_)

    config = {"depth": 8, "width": 8, "batch_size": 32, "steps": 60, "val_windows": 0,
              "lr": 0.05, "threads": 1, "jitter": 0, "source_heads": True}  # fmt: skip
    result = train(cset, cset.classes, config)
    assert result.model.fc.out_features == 4
    save_checkpoint(tmp_path / "c.pt", result.model, cset.classes, result.config)
    model, payload = load_checkpoint(tmp_path / "c.pt")
    assert payload["architecture"]["heads"] == list(colours)
    export_onnx(model, tmp_path / "m.onnx", cset.classes, 32)
    scorer = OnnxScorer(tmp_path / "m.onnx")
    probs = scorer.predict(np.stack([source.images[k] for k in (0, 60, 120, 180)]))
    assert probs.shape == (4, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    # the truck (green) is negative, the automobile (red) a car, the ship a boat
    assert list(probs.argmax(1)) == [0, 2, 1, 2]

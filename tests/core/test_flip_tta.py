"""bench/bench_flip_tta.py's flip-averaged network: what it scores for a window and for the window's
mirror image must be mirror images of each other (the same class probabilities, the box mirrored),
and its ONNX export must score what the network does."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dense_helpers import varied_model  # noqa: E402

from mlcore.inference.scoring import OnnxScorer  # noqa: E402
from mlcore.model.export import export_onnx  # noqa: E402
from mlcore.model.flip_tta import FlipAveraged  # noqa: E402


def test_a_window_and_its_mirror_score_as_mirror_images():
    tta = FlipAveraged(varied_model(3, seed=1)).eval()
    images = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        out, mirrored = tta(images), tta(torch.flip(images, dims=[2]))
        plain = tta.net(images)
    torch.testing.assert_close(out["logits"], mirrored["logits"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["centredness"], mirrored["centredness"], rtol=1e-4, atol=1e-5)
    x0, y0, x1, y1 = mirrored["boxes"].unbind(1)
    torch.testing.assert_close(out["boxes"], torch.stack([32 - x1, y0, 32 - x0, y1], 1),
                               rtol=1e-4, atol=1e-4)  # fmt: skip
    assert not torch.allclose(out["logits"], plain["logits"])  # the mirror did count


def test_the_exported_file_scores_what_the_network_does(tmp_path):
    tta = FlipAveraged(varied_model(3, seed=2)).eval()
    path = export_onnx(tta, tmp_path / "flip.onnx", ["car", "boat", "negative"])
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    scored = OnnxScorer(path).predict_all(images)
    with torch.no_grad():
        expected = tta(torch.from_numpy(images))
    probs = tta.class_probs(expected["logits"]).numpy()
    np.testing.assert_allclose(scored["probs"], probs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(scored["boxes"], expected["boxes"].numpy(), rtol=1e-4, atol=1e-3)


def _mirror_gap(path) -> float:
    """Largest difference of the class probabilities of windows and of their mirror images."""
    images = np.random.default_rng(3).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    scorer = OnnxScorer(path)
    plain = scorer.predict_all(images)["probs"]
    mirrored = scorer.predict_all(np.ascontiguousarray(images[:, :, ::-1]))["probs"]
    return float(np.abs(plain - mirrored).max())


def test_the_training_config_decides_whether_the_model_file_averages_the_flip(tmp_path):
    from mlcore.model.onnx_file import read_metadata
    from mlcore.model.scoring_files import export_scoring_files

    model = varied_model(3, seed=4)
    classes = ["car", "boat", "negative"]
    config = {"window": 32, "dense_crop": 0}
    tta, dense = export_scoring_files(model, tmp_path / "tta" / "model.onnx", classes,
                                      config | {"flip_tta": True})  # fmt: skip
    plain, _ = export_scoring_files(model, tmp_path / "plain" / "model.onnx", classes, config)
    assert dense is None and read_metadata(tta)["flip_tta"] is True
    assert "flip_tta" not in read_metadata(plain)
    assert _mirror_gap(tta) < 1e-5 < _mirror_gap(plain)


def test_flip_tta_and_dense_training_are_refused_together_before_training():
    from mlcore.train.training import TrainConfig, train

    config = TrainConfig(depth=8, width=8, steps=1, flip_tta=True, dense_crop=96, box_head=True)
    with pytest.raises(ValueError, match="flip_tta and dense_crop"):
        train(None, ["car", "negative"], config)

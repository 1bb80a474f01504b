"""Dense scoring (mlcore.inference.dense_scoring, issue 37.1): the trunk over whole tiles, windows
pooled from its feature map. Where it must equal per-window scoring
(mlcore.inference.scoring.score_scene)
it does;
tiles join without seams, bit for bit; the model file says whether it can be scored densely."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlcore.inference.dense_scoring import (
    DenseScorer,
    dense_model_path,
    export_dense_onnx,
    open_dense_scorer,
    score_scene_dense,
    trunk_geometry,
)
from mlcore.inference.scoring import OnnxScorer, score_scene
from mlcore.model.export import export_onnx
from mlcore.model.network import build_model
from mlcore.model.onnx_file import write_metadata

CLASSES = ["car", "truck", "negative"]


class ArrayReader:
    def __init__(self, pixels: np.ndarray):
        self.pixels = pixels
        self.height, self.width = pixels.shape[:2]

    def read_rows(self, y0: int, y1: int) -> np.ndarray:
        return self.pixels[y0:y1]


def _model(seed: int, depth: int = 20, width: int = 8, centre_only: bool = False,
           box_pool: str = "mean"):  # fmt: skip
    """A box-head WindowResNet with random BN statistics and heads (a fresh one is near identity
    and would hide differences); ``centre_only`` zeroes every conv tap but the centre: no
    spatial mixing, strides as the real network."""
    torch.manual_seed(seed)
    model = build_model(3, depth=depth, width=width, box_head=True, box_pool=box_pool)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
            if centre_only and isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] == 3:
                centre = m.weight[:, :, 1, 1].clone()
                m.weight.zero_()
                m.weight[:, :, 1, 1] = centre
        torch.nn.init.normal_(model.box.weight, std=0.1)
        torch.nn.init.normal_(model.fc.weight, std=0.02)
    return model.eval()


def _export(model, folder):
    per_window = export_onnx(model, folder / "model.onnx", CLASSES)
    dense = export_dense_onnx(
        model, folder / "model.dense.onnx", CLASSES, per_window_path=per_window
    )
    return OnnxScorer(per_window), DenseScorer(dense)


# Every box pool (mlcore.model.box_head.BOX_POOLS): the box head reads the window's mean or the
# means of its parts, per window and densely alike.
@pytest.fixture(scope="module", params=["mean", "quadrants", "grid4"])
def real(request, tmp_path_factory):
    return _export(_model(1, box_pool=request.param), tmp_path_factory.mktemp("real"))


@pytest.fixture(scope="module", params=["mean", "quadrants", "grid4"])
def pointwise(request, tmp_path_factory):
    model = _model(2, centre_only=True, box_pool=request.param)
    return _export(model, tmp_path_factory.mktemp("pointwise"))


def _scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _assert_close(dense, per_window):
    assert (dense.ys == per_window.ys).all() and (dense.xs == per_window.xs).all()
    assert dense.classes == per_window.classes and dense.step == per_window.step
    np.testing.assert_allclose(dense.probs, per_window.probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dense.boxes, per_window.boxes, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dense.centredness, per_window.centredness, rtol=1e-5, atol=1e-6)


def test_resnet20_trunk_has_stride_4_and_a_40_px_halo():
    assert trunk_geometry(_model(0)) == (4, 40)
    assert trunk_geometry(_model(0, depth=8)) == (4, 12)


@pytest.mark.parametrize("step", [16, 8])
def test_dense_equals_per_window_without_spatial_mixing(pointwise, step):
    # 1x1 convolutions (strided like the real ones): nothing crosses a window's border, so the
    # real neighbours and the per-window zero padding give the same features. The scene's size
    # leaves the clamped last row and column off the stride-4 grid (phase 2 and 1).
    per_window_scorer, dense_scorer = pointwise
    reader = ArrayReader(_scene(130, 161))
    _assert_close(
        score_scene_dense(dense_scorer, reader, step), score_scene(per_window_scorer, reader, step)
    )


def test_dense_equals_per_window_on_a_one_window_scene(real):
    # The real 3x3 network: a scene of exactly one window is padded the same in both.
    per_window_scorer, dense_scorer = real
    for seed in range(3):
        reader = ArrayReader(_scene(32, 32, seed))
        _assert_close(
            score_scene_dense(dense_scorer, reader, 16), score_scene(per_window_scorer, reader, 16)
        )


def test_real_network_sees_its_neighbours_when_dense(real):
    # The control for the two tests above: with 3x3 convs on a larger scene dense scoring is a
    # different function (neighbours instead of zero padding), so those tests can fail.
    per_window_scorer, dense_scorer = real
    reader = ArrayReader(_scene(96, 96))
    dense = score_scene_dense(dense_scorer, reader, 16)
    per_window = score_scene(per_window_scorer, reader, 16)
    assert np.abs(dense.probs - per_window.probs).max() > 1e-3
    assert np.abs(dense.boxes - per_window.boxes).max() > 1e-2


@pytest.mark.parametrize("step", [16, 8])
def test_strips_and_tiles_join_bit_for_bit(real, step):
    _, dense_scorer = real
    reader = ArrayReader(_scene(202, 266, seed=5))  # clamped last row and column off-phase
    whole = score_scene_dense(dense_scorer, reader, step, rows_per_strip=10_000)
    assert whole.shape == (len(whole.ys), len(whole.xs))
    for rows, cols in ((None, None), (1, None), (3, None), (None, 1), (2, 5), (1, 2)):
        tiled = score_scene_dense(
            dense_scorer, reader, step, rows_per_strip=rows, cols_per_tile=cols
        )
        np.testing.assert_array_equal(tiled.probs, whole.probs)
        np.testing.assert_array_equal(tiled.boxes, whole.boxes)
        np.testing.assert_array_equal(tiled.centredness, whole.centredness)


def test_one_band_of_the_scene_is_held_at_a_time(real):
    # A band is the scene's full width (108 MB at 32k): the scorer lets one go before it reads
    # the next, and its session keeps no memory pattern (one planned block for every activation
    # of a tile: 870 against 708 MB at the peak of a 32k-wide band).
    import weakref

    _, dense_scorer = real
    pixels = _scene(202, 130, seed=7)
    alive, most = [0], [0]

    class CopyingReader(ArrayReader):
        def read_rows(self, y0, y1):
            band = self.pixels[y0:y1].copy()  # as a range read from storage gives
            alive[0] += 1
            most[0] = max(most[0], alive[0])
            weakref.finalize(band, lambda: alive.__setitem__(0, alive[0] - 1))
            return band

    tiled = score_scene_dense(dense_scorer, CopyingReader(pixels), 16, rows_per_strip=2)
    assert most[0] == 1 and alive[0] == 0
    whole = score_scene_dense(dense_scorer, ArrayReader(pixels), 16, rows_per_strip=10_000)
    np.testing.assert_array_equal(tiled.probs, whole.probs)
    assert dense_scorer.session.get_session_options().enable_mem_pattern is False


def test_a_halo_one_stride_short_shows_seams(tmp_path):
    # The halo is exactly what the receptive field needs: one feature cell less and strips no
    # longer join (so the seam test above would catch a wrong halo).
    _, dense_scorer = _export(_model(3, depth=8), tmp_path)
    reader = ArrayReader(_scene(160, 96, seed=6))
    whole = score_scene_dense(dense_scorer, reader, 16, rows_per_strip=10_000)
    dense_scorer.halo -= dense_scorer.stride
    tiled = score_scene_dense(dense_scorer, reader, 16, rows_per_strip=1)
    assert not np.array_equal(tiled.probs, whole.probs)


def test_model_file_says_whether_it_scores_densely(tmp_path):
    model = _model(4, depth=8)
    per_window = export_onnx(model, tmp_path / "model.onnx", CLASSES)
    assert dense_model_path(per_window) is None  # a plain export: per window
    assert open_dense_scorer(per_window) is None
    dense = export_dense_onnx(
        model, tmp_path / "model.dense.onnx", CLASSES, per_window_path=per_window
    )
    assert dense_model_path(per_window) == dense
    assert isinstance(open_dense_scorer(per_window), DenseScorer)
    scorer = DenseScorer(dense)
    assert (scorer.classes, scorer.window, scorer.stride, scorer.halo) == (CLASSES, 32, 4, 12)
    # The flag names a sibling file only, never a path elsewhere; a missing file means per window.
    write_metadata(per_window, {"dense_model": "../model.dense.onnx"})
    assert dense_model_path(per_window) is None
    write_metadata(per_window, {"dense_model": "gone.dense.onnx"})
    assert dense_model_path(per_window) is None
    with pytest.raises(ValueError, match="not a dense model file"):
        DenseScorer(per_window)


def test_dense_export_refuses_a_window_off_the_feature_grid(tmp_path):
    with pytest.raises(ValueError, match="not a multiple of the trunk's stride"):
        export_dense_onnx(_model(5, depth=8), tmp_path / "m.dense.onnx", CLASSES, window=30)

"""Objects of any size (issue 34.3): a scene scored with a scene window of s px (each window
resized to the model's w by area averaging) gives, on a scene drawn s / w times larger, the
grid of the original scene at its own scale, with every position, box and detection in scene
pixels."""

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("torch")

from helpers_boxes import export_box_model  # noqa: E402
from review_helpers import colour_onnx_model  # noqa: E402

from mlcore.data.windows import resize_windows  # noqa: E402
from mlcore.inference.postprocess import detections  # noqa: E402
from mlcore.inference.scoring import (  # noqa: E402
    OnnxScorer,
    scene_geometry,
    score_scene,
    score_strip,
)
from mlcore.ingest.scenes import ArrayScene  # noqa: E402


def small_scene(height=96, width=160, seed=3) -> np.ndarray:
    """Grey noise with a red and a green square, 20 px each, off the window grid."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(100, 156, (height, width, 3), dtype=np.uint8)
    pixels[10:30, 21:41] = (220, 30, 30)
    pixels[50:70, 100:120] = (30, 220, 30)
    return pixels


def doubled(pixels: np.ndarray) -> np.ndarray:
    return np.kron(pixels, np.ones((2, 2, 1), dtype=np.uint8))


@pytest.fixture(scope="module")
def colour_scorer(tmp_path_factory):
    path = tmp_path_factory.mktemp("colour") / "model.onnx"
    return OnnxScorer(colour_onnx_model(path, ["red", "green", "negative"], sharpness=0.08))


@pytest.fixture(scope="module")
def box_scorer(tmp_path_factory):
    return OnnxScorer(export_box_model(tmp_path_factory.mktemp("box") / "model.onnx"))


def test_scene_geometry_scales_the_window_and_the_step():
    assert scene_geometry(32, None, 16) == (32, 16)  # today's behaviour
    assert scene_geometry(32, 32, 16) == (32, 16)
    assert scene_geometry(32, 64, 16) == (64, 32)
    assert scene_geometry(32, 48, 16) == (48, 24)
    assert scene_geometry(32, 16, 8) == (16, 4)
    assert scene_geometry(32, 1, 8) == (1, 1)  # never a step of 0


def test_a_scene_twice_as_large_scored_at_twice_the_window_gives_the_same_grid(colour_scorer):
    small = small_scene()
    one = score_scene(colour_scorer, ArrayScene(small), 16, rows_per_strip=2)
    two = score_scene(
        colour_scorer, ArrayScene(doubled(small)), 32, rows_per_strip=3, scene_window=64
    )
    assert (two.window, two.step) == (64, 32)
    np.testing.assert_array_equal(two.ys, 2 * one.ys)
    np.testing.assert_array_equal(two.xs, 2 * one.xs)
    # The resized 64 px windows of the doubled scene are the 32 px windows of the original,
    # pixel for pixel, so the model gives the same numbers.
    np.testing.assert_array_equal(two.probs, one.probs)
    assert one.probs[..., 0].max() > 0.5 and one.probs[..., 1].max() > 0.5  # objects found
    # The red square is found where it is in the doubled scene.
    merged = detections(two, thresholds={"red": 0.5, "green": 0.5}, negative="negative")
    reds = [d for d in merged if d.label == "red"]
    assert reds and all(d.w == 64 and d.h == 64 for d in reds)
    best = max(reds, key=lambda d: d.score)
    assert best.x <= 42 and best.x + best.w >= 82 and best.y <= 20 and best.y + best.h >= 60


def test_box_head_boxes_come_back_in_scene_pixels(box_scorer):
    small = small_scene()
    one = score_scene(box_scorer, ArrayScene(small), 16)
    two = score_scene(box_scorer, ArrayScene(doubled(small)), 32, scene_window=64)
    np.testing.assert_allclose(two.probs, one.probs, rtol=0, atol=1e-6)
    np.testing.assert_allclose(two.boxes, 2 * one.boxes, rtol=0, atol=1e-4)
    np.testing.assert_allclose(two.centredness, one.centredness, rtol=0, atol=1e-6)
    d1 = detections(one, thresholds={"car": 0.5, "boat": 0.5}, negative="negative")
    d2 = detections(two, thresholds={"car": 0.5, "boat": 0.5}, negative="negative")
    assert d1 and len(d1) == len(d2)
    for a, b in zip(d1, d2, strict=True):
        assert b.label == a.label
        assert (b.x, b.y, b.w, b.h) == pytest.approx((2 * a.x, 2 * a.y, 2 * a.w, 2 * a.h), abs=1e-3)


def test_score_strip_takes_the_scene_window_too(colour_scorer):
    small = small_scene()
    big = doubled(small)
    ys, xs = np.array([0, 32]), np.array([0, 32, 96])
    got = score_strip(colour_scorer, big[: 32 + 64], ys, xs, scene_window=64)["probs"]
    want = score_strip(colour_scorer, small[: 16 + 32], ys // 2, xs // 2)["probs"]
    np.testing.assert_array_equal(got, want)


def test_smaller_objects_are_enlarged_to_the_window(colour_scorer):
    """Objects of 16 px: 16 px windows at step 8, each enlarged to 32 px."""
    small = small_scene()
    half = small[::2, ::2].copy()
    grid = score_scene(colour_scorer, ArrayScene(half), 8, scene_window=16)
    assert (grid.window, grid.step) == (16, 8)
    assert grid.ys[-1] == half.shape[0] - 16 and grid.xs[-1] == half.shape[1] - 16
    assert grid.probs[..., 0].max() > 0.5


def test_resize_windows_averages_areas_and_ignores_batching():
    rng = np.random.default_rng(0)
    windows = rng.integers(0, 256, (5, 48, 48, 3), dtype=np.uint8)
    out = resize_windows(windows, 32)
    assert out.shape == (5, 32, 32, 3) and out.dtype == np.uint8
    np.testing.assert_allclose(
        out.reshape(5, -1, 3).mean(1), windows.reshape(5, -1, 3).mean(1), atol=0.5
    )
    for i in range(5):  # each window on its own gives the same bytes
        np.testing.assert_array_equal(resize_windows(windows[i : i + 1], 32)[0], out[i])
    flat = np.full((1, 64, 64, 3), 77, dtype=np.uint8)
    np.testing.assert_array_equal(resize_windows(flat, 32), np.full((1, 32, 32, 3), 77))
    np.testing.assert_array_equal(resize_windows(windows[:, :32, :32], 32), windows[:, :32, :32])
    # 2x2 blocks of a 64 px window average to one pixel.
    blocks = windows[:1, :32, :32].astype(np.float64)
    big = np.kron(windows[:1, :32, :32], np.ones((1, 2, 2, 1), dtype=np.uint8))
    np.testing.assert_array_equal(resize_windows(big, 32), blocks.astype(np.uint8))


def test_the_whole_factor_shortcut_gives_the_area_average_bytes():
    from mlcore.data.windows import _area_matrix

    rng = np.random.default_rng(1)
    windows = rng.integers(0, 256, (64, 64, 64, 3), dtype=np.uint8)
    m = _area_matrix(64, 32)
    products = np.matmul(np.matmul(m, windows.transpose(0, 3, 1, 2).astype(np.float64)), m.T)
    expected = np.clip(np.rint(products), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(resize_windows(windows, 32), expected)

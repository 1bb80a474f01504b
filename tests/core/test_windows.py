"""Windows are zero-copy views; the sampler's labels, weights and train/val split."""

import numpy as np
import pytest

from mlcore.data.canvases import Canvas, CanvasSet
from mlcore.data.windows import WindowSampler, full_window_view, grid_positions, window_view


def noise(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_window_view_pixels_equal_canvas_slices_and_share_memory():
    canvas = noise(70, 90, 0)
    view = window_view(canvas, window=32, step=8)
    assert view.shape == (5, 8, 32, 32, 3)
    assert np.shares_memory(view, canvas)
    for i, j in [(0, 0), (4, 7), (2, 3)]:
        np.testing.assert_array_equal(view[i, j], canvas[i * 8 : i * 8 + 32, j * 8 : j * 8 + 32])


def test_grid_positions_cover_the_edges():
    np.testing.assert_array_equal(grid_positions(75, 32, 16), [0, 16, 32, 43])
    np.testing.assert_array_equal(grid_positions(64, 32, 16), [0, 16, 32])
    np.testing.assert_array_equal(grid_positions(32, 32, 16), [0])
    with pytest.raises(ValueError, match="shorter than the 32 px window"):
        grid_positions(20, 32, 16)


def test_window_view_rejects_images_smaller_than_a_window():
    with pytest.raises(ValueError, match="smaller than the 32 px window"):
        window_view(noise(20, 50, 0))


def two_class_set():
    return CanvasSet(
        ["car", "boat"],
        [Canvas("car", noise(100, 80, 1)), Canvas("boat", noise(120, 64, 2), weight=1.0)],
    )


def test_sampler_batches_are_canvas_windows_with_the_canvas_label():
    cs = two_class_set()
    sampler = WindowSampler(cs, cs.classes, window=32, step=8, val_fraction=0.25)
    canvas_idx, ys, xs, labels = sampler.sample_origins(64, np.random.default_rng(0))
    images = sampler.gather(canvas_idx, ys, xs)
    assert images.dtype == np.uint8 and images.shape == (64, 32, 32, 3)
    assert set(np.unique(labels)) == {0, 1}
    for k in range(64):
        canvas = cs.canvases[canvas_idx[k]]
        assert labels[k] == cs.classes.index(canvas.class_name)
        expected = canvas.array[ys[k] : ys[k] + 32, xs[k] : xs[k] + 32]
        np.testing.assert_array_equal(images[k], expected)
    # On the step grid of the train region (bands: car rows 0..68, boat rows 0..88).
    for ci, (train_rows, width) in enumerate([(68, 80), (88, 64)]):
        assert set(ys[canvas_idx == ci]) <= set(grid_positions(train_rows, 32, 8))
        assert set(xs[canvas_idx == ci]) <= set(grid_positions(width, 32, 8))
    x, y = sampler.sample(16, np.random.default_rng(1), split="val")
    assert x.shape == (16, 32, 32, 3) and y.dtype == np.int64


def test_train_and_validation_windows_never_overlap():
    cs = two_class_set()
    sampler = WindowSampler(cs, cs.classes, window=32, step=8, val_fraction=0.25)
    rng = np.random.default_rng(0)
    for ci in range(2):
        height = cs.canvases[ci].array.shape[0]
        c_tr, y_tr, _, _ = sampler.sample_origins(2000, rng, "train")
        c_va, y_va, _, _ = sampler.sample_origins(2000, rng, "val")
        train_bottom = (y_tr[c_tr == ci] + 32).max()
        val_top = y_va[c_va == ci].min()
        assert train_bottom <= val_top
        assert (y_va[c_va == ci] + 32).max() == height  # the bottom edge is covered
    assert sampler.n_windows("train") > sampler.n_windows("val") > 0


def test_correction_canvases_weigh_more_within_their_class():
    cs = CanvasSet(
        ["car", "boat"],
        [
            Canvas("car", noise(64, 64, 1)),
            Canvas("car", noise(64, 64, 2), weight=4.0, kind="correction"),
            Canvas("boat", noise(64, 64, 3)),
        ],
    )
    sampler = WindowSampler(cs, cs.classes, val_fraction=0.0)
    canvas_idx, _, _, labels = sampler.sample_origins(20000, np.random.default_rng(0))
    assert abs((labels == 0).mean() - 0.5) < 0.02  # class-balanced
    ratio = (canvas_idx == 1).sum() / (canvas_idx == 0).sum()
    assert 3.4 < ratio < 4.7


def test_sampler_rejects_unknown_class_and_tiny_canvases():
    with pytest.raises(ValueError, match="not one of"):
        WindowSampler(CanvasSet(["car"], [Canvas("boat", noise(64, 64, 0))]), ["car"])
    with pytest.raises(ValueError, match="smaller than the 32 px window"):
        WindowSampler(CanvasSet(["car"], [Canvas("car", noise(16, 64, 0))]), ["car"])


def test_full_window_view_is_a_view_of_every_origin():
    image = noise(40, 50, 3)
    view = full_window_view(image, 32)
    assert view.shape == (9, 19, 32, 32, 3) and np.shares_memory(view, image)
    np.testing.assert_array_equal(view[8, 18], image[8:40, 18:50])


def _mixed_and_exact_set():
    from mlcore.data.canvases import CanvasSet, build_canvas_set
    from mlcore.data.datasets import LabelledImages

    rng = np.random.default_rng(0)
    names = ["car", "boat", "negative"]
    labels = np.repeat([0, 1, 2], [40, 40, 80])
    images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
    ids = [f"{names[k]}/{i}" for i, k in enumerate(labels)]
    ds = LabelledImages(images, labels, names, ids)
    cset = build_canvas_set(ds, canvas_size=160, canvases_per_class=1, calibration_fraction=0)
    assert isinstance(cset, CanvasSet)
    reviewed = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    cset.append("boat", reviewed, [f"ann-{i}" for i in range(5)], weight=50.0, layout="exact")
    return cset, reviewed


def test_mixed_windows_are_labelled_by_their_centre_and_exact_samples_come_as_reviewed():
    cset, reviewed = _mixed_and_exact_set()
    sampler = WindowSampler(cset, cset.classes, window=32, step=8, val_fraction=0.0)
    rng = np.random.default_rng(1)
    for jitter in (0, 5):
        canvas_idx, ys, xs, labels = sampler.sample_origins(4000, rng, jitter=jitter)
        images = sampler.gather(canvas_idx, ys, xs)
        mixed = canvas_idx < len(cset.canvases) - 1
        centre = [
            cset.canvases[c].label_map[y + 16, x + 16]
            for c, y, x in zip(canvas_idx[mixed], ys[mixed], xs[mixed])
        ]
        np.testing.assert_array_equal(labels[mixed], centre)
        exact = np.flatnonzero(~mixed)
        assert len(exact) > 0 and (labels[exact] == cset.classes.index("boat")).all()
        for k in exact:  # each drawn exactly as reviewed, never shifted
            assert any(np.array_equal(images[k], r) for r in reviewed)
    assert set(np.unique(labels)) == {0, 1, 2}


def test_class_shares_set_the_mix_of_a_batch():
    cset, _ = _mixed_and_exact_set()
    shares = {"car": 1, "boat": 1, "negative": 2}
    sampler = WindowSampler(cset, cset.classes, val_fraction=0.0, class_shares=shares)
    _, _, _, labels = sampler.sample_origins(20000, np.random.default_rng(0))
    assert abs((labels == 2).mean() - 0.5) < 0.02 and abs((labels == 0).mean() - 0.25) < 0.02


def test_correction_share_gives_the_reviewed_windows_that_share_of_the_draws():
    cset, _ = _mixed_and_exact_set()
    exact = len(cset.canvases) - 1
    rng = np.random.default_rng(0)
    by_weight = WindowSampler(cset, cset.classes, val_fraction=0.0)
    canvas_idx, *_ = by_weight.sample_origins(20000, rng)
    weighted = (canvas_idx == exact).mean()
    shared = WindowSampler(cset, cset.classes, val_fraction=0.0, correction_share=0.25)
    canvas_idx, _, _, labels = shared.sample_origins(20000, rng)
    assert abs((canvas_idx == exact).mean() - 0.25) < 0.015 and weighted < 0.2
    # The canvases keep their class balance in the rest of the draws.
    rest = labels[canvas_idx != exact]
    assert all(abs((rest == k).mean() - 1 / 3) < 0.03 for k in range(3))
    with pytest.raises(ValueError, match="correction_share"):
        WindowSampler(cset, cset.classes, correction_share=1.0)


def test_torch_gather_draws_the_same_windows_and_labels_as_the_numpy_sampler():
    torch = pytest.importorskip("torch")
    from mlcore.train.training import TorchWindowGather

    cset, _ = _mixed_and_exact_set()
    sampler = WindowSampler(cset, cset.classes, val_fraction=0.1)
    gather = TorchWindowGather(sampler, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    images, labels, _ = gather.sample(512, generator, "train", jitter=4)
    half = 16
    found = 0
    for img, lab in zip(images.numpy(), labels.numpy()):
        for ci, canvas in enumerate(cset.canvases):
            hits = np.argwhere(sampler.arrays[ci][:, :, 0] == img[0, 0, 0])
            for y, x in hits:
                if (
                    y + 32 <= canvas.height
                    and x + 32 <= canvas.width
                    and np.array_equal(sampler.arrays[ci][y : y + 32, x : x + 32], img)
                ):
                    assert sampler.label_maps[ci][y + half, x + half] == lab
                    found += 1
                    break
            else:
                continue
            break
        if found >= 40:
            break
    assert found >= 40

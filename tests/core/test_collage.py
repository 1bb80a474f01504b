"""Photomosaic generator: determinism, full cover, exact visible fractions, reuse limit,
resemblance to the target, ground-truth helpers, and a small real CIFAR-10 collage."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from helpers_data import shared_data_file
from PIL import Image

from mlcore.data.collage import (
    CollageError,
    collage_size,
    ground_truth_objects,
    load_ground_truth,
    make_collage,
    save_ground_truth,
)
from mlcore.data.datasets import ClassMapping, LabelledImages, apply_mapping, load_dataset


def _tiles(n=400, tile=8, seed=0) -> LabelledImages:
    """Tiles of varied flat-ish colours with some texture, labelled car/boat/negative."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, 1, 1, 3))
    noise = rng.integers(-20, 21, (n, tile, tile, 3))
    images = np.clip(base + noise, 0, 255).astype(np.uint8)
    labels = rng.integers(0, 3, n)
    return LabelledImages(images, labels, ["car", "boat", "negative"], [f"t{i}" for i in range(n)])


def _target(h=90, w=120) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (h + w)], -1).astype(np.uint8)


def _owner_map(gt, height, width):
    owner = np.full((height, width), -1, dtype=np.int64)
    for box in sorted(gt, key=lambda b: b["order"]):
        owner[box["y"] : box["y"] + box["h"], box["x"] : box["x"] + box["w"]] = box["order"]
    return owner


@pytest.mark.parametrize("mode", ["grid", "collage"])
def test_collage_covers_every_pixel_with_exact_visible_fractions(mode):
    tiles = _tiles()
    c = make_collage(_target(), tiles, cols=16, mode=mode, seed=3)
    assert c.image.shape == (16 * 8 * 90 // 120, 16 * 8, 3)
    height, width = c.image.shape[:2]
    owner = _owner_map(c.ground_truth, height, width)
    assert (owner >= 0).all()
    counts = np.bincount(owner.ravel(), minlength=len(c.ground_truth))
    for box in c.ground_truth:
        assert box["visible"] == counts[box["order"]] / (box["w"] * box["h"])
        assert box["label"] == tiles.class_names[tiles.labels[tiles.ids.index(box["id"])]]
    total = sum(b["visible"] * b["w"] * b["h"] for b in c.ground_truth)
    assert total == pytest.approx(height * width, abs=1e-6)
    # The pixels really are the tiles, as the owner map says.
    for box in c.ground_truth[:: max(1, len(c.ground_truth) // 25)]:
        if box["visible"] == 1.0:
            tile = tiles.images[tiles.ids.index(box["id"])]
            y, x = box["y"], box["x"]
            np.testing.assert_array_equal(c.image[y : y + 8, x : x + 8], tile)
    if mode == "grid":
        assert all(b["visible"] == 1.0 for b in c.ground_truth)
        assert len(c.ground_truth) == 16 * 12
    else:
        assert any(b["visible"] < 1.0 for b in c.ground_truth)
        assert len(c.ground_truth) > 16 * 12


def test_collage_is_deterministic_for_a_seed():
    tiles = _tiles()
    a = make_collage(_target(), tiles, cols=12, seed=1)
    b = make_collage(_target(), tiles, cols=12, seed=1)
    c = make_collage(_target(), tiles, cols=12, seed=2)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.ground_truth == b.ground_truth
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("max_reuse", [1, 2])
def test_reuse_limit_is_honoured(max_reuse):
    tiles = _tiles(n=200)
    c = make_collage(_target(), tiles, cols=16, mode="grid", max_reuse=max_reuse, seed=0)
    assert max(Counter(b["id"] for b in c.ground_truth).values()) <= max_reuse
    with pytest.raises(CollageError, match="max_reuse"):
        make_collage(_target(), tiles.subset(np.arange(50)), cols=16, mode="grid", max_reuse=1)


def test_mosaic_resembles_target_more_than_random_tiles():
    tiles = _tiles(n=600, seed=4)
    target = _target()
    c = make_collage(target, tiles, cols=16, mode="grid", seed=0)
    height, width = c.image.shape[:2]
    rng = np.random.default_rng(0)
    random_img = np.empty_like(c.image)
    for y in range(0, height, 8):
        for x in range(0, width, 8):
            random_img[y : y + 8, x : x + 8] = tiles.images[rng.integers(len(tiles))]

    def low_res(a):
        return np.asarray(Image.fromarray(a).resize((16, 12), Image.Resampling.BOX), dtype=float)

    ref = low_res(np.asarray(Image.fromarray(target).resize((width, height))))
    mse_mosaic = ((low_res(c.image) - ref) ** 2).mean()
    mse_random = ((low_res(random_img) - ref) ** 2).mean()
    assert mse_mosaic < 0.2 * mse_random


def test_ground_truth_round_trip_and_objects(tmp_path):
    c = make_collage(_target(), _tiles(), cols=10, seed=0)
    save_ground_truth(c.ground_truth, tmp_path / "gt.json")
    back = load_ground_truth(tmp_path / "gt.json")
    assert back == c.ground_truth
    objects = ground_truth_objects(back, ["car", "boat"], min_visible=0.5)
    assert objects and all(b["label"] in ("car", "boat") and b["visible"] >= 0.5 for b in objects)
    expected = sum(1 for b in back if b["label"] in ("car", "boat") and b["visible"] >= 0.5)
    assert len(objects) == expected
    (tmp_path / "bad.json").write_text('[{"id": "x"}]')
    with pytest.raises(CollageError, match="lacks"):
        load_ground_truth(tmp_path / "bad.json")


def test_bad_collage_input():
    with pytest.raises(CollageError, match="mode"):
        make_collage(_target(), _tiles(), mode="spiral")
    with pytest.raises(CollageError, match="tile=32"):
        make_collage(_target(), _tiles(), tile=32)


def test_small_real_collage_of_the_mona_lisa():
    tiles = apply_mapping(
        load_dataset(shared_data_file("cifar10-jpg.zip"), split="test"),
        ClassMapping.cifar_default(),
    )
    c = make_collage(shared_data_file("mona_lisa.jpg"), tiles, cols=20, seed=0)
    assert c.image.shape[1] == 640 and c.image.shape[0] == 32 * round(20 * 799 / 518)
    labels = Counter(b["label"] for b in c.ground_truth)
    assert set(labels) <= {"car", "boat", "negative"} and labels["negative"] > labels["car"]


def test_a_collage_above_max_pixels_is_refused_before_it_is_built():
    """A tall target makes every column many rows: 400 columns of 8x8 tiles on a 300x1 target
    would be 3200 x 960,000 pixels (9 GB as RGB); refused from the shapes alone."""
    tall = np.zeros((300, 1, 3), dtype=np.uint8)
    assert collage_size((300, 1), (8, 8), 400) == (960_000, 3200)
    with pytest.raises(CollageError, match=r"3200x960000 = 3,072,000,000 pixels.*at most 22 col"):
        make_collage(tall, _tiles(), cols=400, max_pixels=10_000_000)
    c = make_collage(_target(), _tiles(), cols=10, seed=0, max_pixels=80 * 64)
    assert c.image.shape[:2] == (64, 80) == collage_size((90, 120), (8, 8), 10)
    with pytest.raises(CollageError, match="above the limit of 5,119"):
        make_collage(_target(), _tiles(), cols=10, seed=0, max_pixels=80 * 64 - 1)

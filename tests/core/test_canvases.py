"""Training canvases: full coverage, class purity, counts, determinism, corrections, save/load,
bit-exact rebuild from the manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlcore.data.canvases import (
    CanvasError,
    CanvasSet,
    build_canvas_set,
    n_windows_in,
    plan_positions,
    rebuild_from_manifest,
)
from mlcore.data.datasets import LabelledImages


def _dataset(n_per_class=(30, 20, 50), tile=16, seed=0) -> LabelledImages:
    rng = np.random.default_rng(seed)
    names = ["car", "boat", "negative"]
    images, labels, ids = [], [], []
    for label, n in enumerate(n_per_class):
        for i in range(n):
            images.append(rng.integers(0, 256, (tile, tile, 3), dtype=np.uint8))
            labels.append(label)
            ids.append(f"{names[label]}/{i}")
    return LabelledImages(np.stack(images), labels, names, ids)


def _coverage(placements, height, width, tile_hw):
    covered = np.zeros((height, width), dtype=bool)
    for _, y, x, _ in placements:
        covered[y : y + tile_hw[0], x : x + tile_hw[1]] = True
    return covered


@pytest.mark.parametrize(
    "height,width,tile,pitch",
    [
        (100, 77, (16, 16), 0.75),
        (64, 64, (16, 16), 0.5),
        (33, 200, (32, 20), 0.9),
        (16, 16, (16, 16), 0.75),
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_layout_leaves_no_gap_and_stays_inside(height, width, tile, pitch, seed):
    ys, xs = plan_positions(height, width, tile, np.random.default_rng(seed), pitch, 0.0)
    assert ys.min() >= 0 and xs.min() >= 0
    assert ys.max() <= height - tile[0] and xs.max() <= width - tile[1]
    placements = [("t", y, x, k) for k, (y, x) in enumerate(zip(ys.tolist(), xs.tolist()))]
    assert _coverage(placements, height, width, tile).all()


def test_layout_overlaps_and_is_not_a_plain_grid():
    ys, xs = plan_positions(256, 256, (32, 32), np.random.default_rng(0))
    assert len(ys) > (256 // 32) ** 2 * 1.5  # overlapping: many more tiles than a tiling needs
    assert len(set((ys % 24).tolist())) > 5  # jittered, not on the pitch grid


def test_canvases_cover_everything_with_their_own_class_only():
    ds = _dataset()
    cset = build_canvas_set(
        ds, canvas_size=(96, 128), canvases_per_class=2, seed=0, layout="scatter"
    )
    assert cset.classes == ["car", "boat", "negative"]
    assert len(cset) == 6
    for canvas in cset.canvases:
        assert canvas.array.shape == (96, 128, 3) and canvas.kind == "original"
        assert {p[0].split("/")[0] for p in canvas.placements} == {canvas.class_name}
        assert _coverage(canvas.placements, 96, 128, (16, 16)).all()
        assert [p[3] for p in canvas.placements] == list(range(len(canvas.placements)))
        entry = {"height": 96, "width": 128, "placements": canvas.placements, "name": canvas.name}
        np.testing.assert_array_equal(rebuild_from_manifest(entry, ds), canvas.array)


def test_default_count_places_every_image_and_target_count_reaches_target():
    ds = _dataset(n_per_class=(200, 20, 60))
    cset = build_canvas_set(ds, canvas_size=64, seed=1, layout="scatter")
    for name in ds.class_names:
        placed = {p[0] for c in cset.of_class(name) for p in c.placements}
        assert placed == {i for i in ds.ids if i.startswith(name + "/")}

    target = 5000
    cset = build_canvas_set(
        ds, canvas_size=64, n_windows_target=target, window=16, step=4, seed=1, layout="scatter"
    )
    per_canvas = n_windows_in(64, 64, 16, 4)
    assert per_canvas == 13 * 13
    assert cset.n_windows(16, 4) >= target
    assert len(cset.of_class("car")) == len(cset.of_class("boat")) == -(-target // 3 // per_canvas)
    assert cset.n_windows(16, 4, class_name="boat") == len(cset.of_class("boat")) * per_canvas


def test_build_is_deterministic_for_a_seed():
    ds = _dataset()
    a = build_canvas_set(ds, canvas_size=64, canvases_per_class=1, seed=5)
    b = build_canvas_set(ds, canvas_size=64, canvases_per_class=1, seed=5)
    c = build_canvas_set(ds, canvas_size=64, canvases_per_class=1, seed=6)
    for x, y in zip(a.canvases, b.canvases):
        np.testing.assert_array_equal(x.array, y.array)
        assert x.placements == y.placements
    assert not np.array_equal(a.canvases[0].array, c.canvases[0].array)


def test_bad_input_is_refused_with_a_reason():
    ds = _dataset()
    with pytest.raises(CanvasError, match="smaller than the tiles"):
        build_canvas_set(ds, canvas_size=8)
    with pytest.raises(CanvasError, match="plane"):
        build_canvas_set(ds, classes=["car", "plane"])
    with pytest.raises(CanvasError, match="no images of class"):
        build_canvas_set(ds.subset(["car", "boat"]), canvas_size=64)


def test_append_corrections_small_canvas_every_tile_placed(tmp_path):
    ds = _dataset()
    cset = build_canvas_set(ds, canvas_size=64, canvases_per_class=1, seed=0)
    rng = np.random.default_rng(9)
    tiles = rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    ids = [f"scene1:{i}" for i in range(5)]
    new = cset.append("boat", tiles, ids, weight=3.0)
    assert len(new) == 1 and cset.canvases[-1] is new[0]
    canvas = new[0]
    assert canvas.kind == "correction" and canvas.weight == 3.0 and canvas.class_name == "boat"
    assert canvas.height < 64 and canvas.width < 64  # sized to the handful of tiles
    assert {p[0] for p in canvas.placements} == set(ids)
    assert _coverage(canvas.placements, canvas.height, canvas.width, (16, 16)).all()
    assert len(canvas.placements) > 5  # still scattered with overlap (tiles reused)

    many = rng.integers(0, 256, (300, 16, 16, 3), dtype=np.uint8)
    more = cset.append("car", many, [f"s2:{i}" for i in range(300)])
    assert len(more) > 1 and all(c.height <= 64 and c.width <= 64 for c in more)
    assert {p[0] for c in more for p in c.placements} == {f"s2:{i}" for i in range(300)}

    with pytest.raises(CanvasError, match="16x16"):
        cset.append("car", rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8), ["a", "b"])
    with pytest.raises(CanvasError, match="plane"):
        cset.append("plane", tiles, ids)

    # Corrections survive save/load and can be audited from the stored tiles.
    cset.save(tmp_path / "set")
    loaded = CanvasSet.load(tmp_path / "set")
    back = loaded.canvases[-len(more) - 1]
    assert back.kind == "correction" and back.weight == 3.0
    tile_map = dict(zip(back.tiles[0], back.tiles[1]))
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    entry = manifest["canvases"][len(loaded) - len(more) - 1]
    np.testing.assert_array_equal(rebuild_from_manifest(entry, tile_map), canvas.array)


def test_save_load_mmap_disk_use_and_incremental_resave(tmp_path):
    ds = _dataset()
    cset = build_canvas_set(
        ds,
        canvas_size=(64, 80),
        canvases_per_class=2,
        seed=0,
        meta={"src": "x"},
        layout="scatter",
    )
    directory = tmp_path / "canvases"
    cset.save(directory)
    files = sorted(p.name for p in directory.iterdir())
    assert "manifest.json" in files and not [f for f in files if f.endswith(".tmp")]
    npy_bytes = sum(p.stat().st_size for p in directory.glob("*.npy"))
    assert npy_bytes <= cset.nbytes() + 128 * len(cset)  # raw bytes + one npy header each

    loaded = CanvasSet.load(directory)
    assert loaded.classes == cset.classes and loaded.meta == {"src": "x"}
    assert loaded.tile_size == (16, 16)
    assert isinstance(loaded.canvases[0].array, np.memmap)
    for a, b in zip(cset.canvases, loaded.canvases):
        np.testing.assert_array_equal(a.array, b.array)
        assert a.placements == b.placements and a.class_name == b.class_name
    manifest = json.loads((directory / "manifest.json").read_text())
    np.testing.assert_array_equal(
        rebuild_from_manifest(manifest["canvases"][3], ds), loaded.canvases[3].array
    )

    old = {p.name: p.stat().st_ino for p in directory.glob("*.npy")}
    loaded.append("car", ds.images[:4], ds.ids[:4])
    loaded.save(directory)
    now = {p.name: p.stat().st_ino for p in directory.glob("*.npy")}
    assert len(now) == len(old) + 1
    assert all(now[name] == inode for name, inode in old.items())  # untouched, not rewritten
    assert len(CanvasSet.load(directory, mmap=False)) == 7

    with pytest.raises(CanvasError, match="no manifest.json"):
        CanvasSet.load(tmp_path)


def test_mixed_canvases_label_every_pixel_by_the_top_tile_and_keep_images_for_calibration(
    tmp_path,
):
    ds = _dataset(n_per_class=(400, 400, 800))
    cset = build_canvas_set(ds, canvas_size=96, canvases_per_class=1, seed=0)
    assert {c.layout for c in cset.canvases} == {"mixed"}
    held_ids = {b["id"] for b in cset.calibration[1]}
    # 5% of each class is held out for calibration and never reaches a training canvas.
    assert len(held_ids) == 20 + 20 + 40
    for canvas in cset.canvases:
        assert not held_ids & {p[0] for p in canvas.placements}
        # the label map is the class of the last paste covering each pixel
        expected = np.full((96, 96), -1)
        for image_id, y, x, _ in canvas.placements:
            expected[y : y + 16, x : x + 16] = cset.classes.index(image_id.split("/")[0])
        np.testing.assert_array_equal(canvas.label_map, expected)
    image, truth = cset.calibration
    assert image.shape[0] >= 16 and {b["label"] for b in truth} == {"car", "boat", "negative"}
    assert all(0 <= b["visible"] <= 1 for b in truth)

    cset.save(tmp_path / "c")
    loaded = CanvasSet.load(tmp_path / "c")
    np.testing.assert_array_equal(loaded.canvases[0].label_map, cset.canvases[0].label_map)
    np.testing.assert_array_equal(loaded.calibration[0], image)
    assert loaded.calibration[1] == truth and loaded.canvases[0].layout == "mixed"


def test_exact_corrections_sit_side_by_side_at_their_own_origins(tmp_path):
    ds = _dataset()
    cset = build_canvas_set(ds, canvas_size=64, canvases_per_class=1, seed=0, layout="scatter")
    tiles = np.random.default_rng(3).integers(0, 256, (7, 16, 16, 3), dtype=np.uint8)
    new = cset.append("boat", tiles, [f"ann-{i}" for i in range(7)], weight=50, layout="exact")
    assert sum(len(c.placements) for c in new) == 7
    for canvas in new:
        assert canvas.layout == "exact" and canvas.kind == "correction"
        for image_id, y, x, _ in canvas.placements:
            k = int(image_id.split("-")[1])
            np.testing.assert_array_equal(canvas.array[y : y + 16, x : x + 16], tiles[k])
    cset.save(tmp_path / "c")
    assert CanvasSet.load(tmp_path / "c").canvases[-1].layout == "exact"


def test_mixed_canvases_with_sources_report_progress_canvas_by_canvas():
    ds = _dataset(n_per_class=(200, 200, 400))
    ds.sources = ["automobile", "ship", "cat", "dog"]
    ds.source_labels = np.array([0] * 200 + [1] * 200 + [2] * 200 + [3] * 200)
    reports = []
    cset = build_canvas_set(
        ds, canvas_size=64, canvases_per_class=2, seed=0,
        progress=lambda done, total, message: reports.append((done, total, message)),
    )  # fmt: skip
    n = len(cset.canvases)
    assert n == 6 and all(c.source_map is not None for c in cset.canvases)
    assert [(d, t) for d, t, _ in reports] == [(k, n) for k in range(1, n + 1)]
    assert reports[-1][2] == f"canvas {n}/{n} (mixed)"


def test_label_and_source_maps_are_stored_compressed_and_old_raw_maps_still_load(tmp_path):
    ds = _dataset(n_per_class=(200, 200, 400))
    ds.sources = ["automobile", "ship", "cat", "dog"]
    ds.source_labels = np.array([0] * 200 + [1] * 200 + [2] * 200 + [3] * 200)
    cset = build_canvas_set(ds, canvas_size=256, canvases_per_class=1, seed=0)
    directory = tmp_path / "c"
    cset.save(directory)
    canvas_bytes = cset.nbytes()
    map_bytes = sum(p.stat().st_size for p in directory.glob("*.npz"))
    # Flat tile-sized patches compress: far under the 2 bytes per pixel raw maps would take.
    assert 0 < map_bytes < 0.1 * canvas_bytes
    for a, b in zip(cset.canvases, CanvasSet.load(directory).canvases):
        np.testing.assert_array_equal(a.label_map, b.label_map)
        np.testing.assert_array_equal(a.source_map, b.source_map)

    # A set saved before compression names raw .npy maps in its manifest: still read (memmaps).
    manifest = json.loads((directory / "manifest.json").read_text())
    entry = manifest["canvases"][0]
    for key, suffix in (("labels_file", ".labels.npy"), ("sources_file", ".sources.npy")):
        with np.load(directory / entry[key]) as z:
            np.save(directory / f"{entry['name']}{suffix}", z["layer"])
        (directory / entry[key]).unlink()
        entry[key] = f"{entry['name']}{suffix}"
    (directory / "manifest.json").write_text(json.dumps(manifest))
    old = CanvasSet.load(directory).canvases[0]
    assert isinstance(old.label_map, np.memmap)
    np.testing.assert_array_equal(old.label_map, cset.canvases[0].label_map)
    np.testing.assert_array_equal(old.source_map, cset.canvases[0].source_map)

    (directory / entry["labels_file"]).unlink()
    with pytest.raises(CanvasError, match="listed in the manifest is missing"):
        CanvasSet.load(directory)

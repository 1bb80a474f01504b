"""bench/bench_gigapixel.py's real-model options: the CIFAR scene is a seeded wall of CIFAR-10
test images, and ``--model`` brings a flagged model file's dense graph along, so the bench scores
the file the way the product does."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from bench import bench_gigapixel as bench  # noqa: E402
from mlcore.data.datasets import find_shared_data, load_dataset  # noqa: E402
from mlcore.inference.dense_scoring import dense_scorer_for  # noqa: E402


@pytest.mark.skipif(find_shared_data() is None, reason="needs ../shared/data (CIFAR-10)")
def test_the_cifar_scene_is_a_seeded_wall_of_cifar_test_images():
    tile_of = bench.cifar_tiles()
    tile = tile_of(3, 5)
    assert tile.shape == (bench.TILE, bench.TILE, 3) and tile.dtype == np.uint8
    np.testing.assert_array_equal(tile, tile_of(3, 5))  # the same scene every run
    assert not np.array_equal(tile, tile_of(3, 6))
    test = load_dataset(find_shared_data() / "cifar10-jpg.zip", split="test").images
    known = {image.tobytes() for image in test}
    cells = range(0, bench.TILE, bench.OBJECT)
    for y in cells:
        for x in cells:
            assert tile[y : y + bench.OBJECT, x : x + bench.OBJECT].tobytes() in known


def test_a_flagged_model_file_comes_with_its_dense_graph(tmp_path):
    from dense_helpers import export_flagged, varied_model

    source = tmp_path / "source"
    source.mkdir()
    per_window, dense = export_flagged(varied_model(3, seed=0), source, ["car", "boat", "neg"])
    work = tmp_path / "work"
    work.mkdir()
    assert bench.bench_model(work).name == "colour.onnx"  # no --model: the colour classifier
    bench.copy_model(per_window, work)
    chosen = bench.bench_model(work)
    assert chosen == work / "model" / "model.onnx"
    assert (work / "model" / dense.name).read_bytes() == dense.read_bytes()
    assert dense_scorer_for(chosen, bench.STEP) is not None  # scored densely, as the file says

"""A collage's target picture is never decoded whole: a large one is shrunk while libvips
decodes it (the collage needs it at its own size only). A 13000x13000 1-bit PNG (a few hundred
kB) took 1.7 GB decoded whole in the worker; here the peak memory of a process building a
collage from it is measured (its maximum resident size, before and after) and stays bounded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyvips

from mlcore.data.collage import make_collage
from mlcore.data.datasets import LabelledImages

REPO = Path(__file__).resolve().parents[2]
SIDE = 13_000
BOUND_MB = 300  # the collage itself (20 columns of 8 px) is a few MB; whole, the target is 1.7 GB

MEASURE = """
import json, resource, sys
import numpy as np
from mlcore.data.collage import make_collage
from mlcore.data.datasets import LabelledImages
rng = np.random.default_rng(0)
images = np.clip(rng.integers(0, 256, (200, 1, 1, 3)) + rng.integers(-20, 21, (200, 8, 8, 3)),
                 0, 255).astype(np.uint8)
tiles = LabelledImages(images, rng.integers(0, 3, 200), ["car", "boat", "negative"],
                       [f"t{i}" for i in range(200)])
make_collage(np.zeros((64, 64, 3), np.uint8), tiles, cols=4, seed=0)  # warm: code paths loaded
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
c = make_collage(sys.argv[1], tiles, cols=20, seed=0)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kb": before, "after_kb": after, "shape": list(c.image.shape),
                  "mean": float(c.image.mean())}))
"""


def one_bit_png(path: Path) -> Path:
    """A SIDE x SIDE 1-bit PNG of big black and white squares, written as it streams."""
    xy = pyvips.Image.xyz(SIDE, SIDE)
    squares = ((xy[0] / 1300).floor() + (xy[1] / 1300).floor()) % 2
    (squares * 255).cast("uchar").pngsave(str(path), bitdepth=1, compression=9)
    return path


def test_a_large_one_bit_target_is_never_decoded_whole(tmp_path):
    target = one_bit_png(tmp_path / "target.png")
    assert target.stat().st_size < 5_000_000  # a few bytes that would become gigabytes
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(target)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    grown_mb = (out["after_kb"] - out["before_kb"]) / 1024
    assert grown_mb < BOUND_MB, out
    assert out["shape"] == [160, 160, 3]  # 20 columns of 8 px on a square target
    assert 60 < out["mean"] < 200  # the tiles follow the half-black, half-white target


def test_a_small_target_is_read_as_before(tmp_path):
    """Below the bound the target is decoded whole as it always was: the same collage from the
    file as from its pixels."""
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    path = tmp_path / "small.png"
    pyvips.Image.new_from_array(pixels, interpretation="srgb").pngsave(str(path))
    tiles = LabelledImages(rng.integers(0, 256, (100, 8, 8, 3), dtype=np.uint8),
                           rng.integers(0, 3, 100), ["car", "boat", "negative"],
                           [f"t{i}" for i in range(100)])  # fmt: skip
    from_file = make_collage(path, tiles, cols=10, seed=0)
    from_pixels = make_collage(pixels, tiles, cols=10, seed=0)
    np.testing.assert_array_equal(from_file.image, from_pixels.image)

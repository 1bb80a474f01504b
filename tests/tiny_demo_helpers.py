"""A tiny stand-in for `python -m mlcore demo`'s output folder (coloured tiles, a tiny model, two
small collage-like scenes), for the benches' tests (bench_loop, bench_review_time). Nothing made
here is a figure: the tiny model only has to run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from mlcore import cli
from mlcore.data.canvases import build_canvas_set, calibration_scene
from mlcore.data.datasets import LabelledImages

COLOURS = {"car": (200, 30, 30), "boat": (30, 40, 200), "negative": (60, 160, 60)}


def tile_images(n_per_class: int, seed: int) -> LabelledImages:
    rng = np.random.default_rng(seed)
    images, labels, ids = [], [], []
    for k, colour in enumerate(COLOURS.values()):
        noise = rng.integers(-40, 40, (n_per_class, 32, 32, 3))
        images.append(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8))
        labels += [k] * n_per_class
        ids += [f"s{seed}-{k}-{i}" for i in range(n_per_class)]
    return LabelledImages(np.concatenate(images), np.array(labels), list(COLOURS), ids)


def build_tiny_demo(root: Path, scene_stems) -> Path:
    """Canvases, a tiny trained model and one scene (PNG + ground truth JSON) per stem."""
    cset = build_canvas_set(tile_images(84, 0), canvas_size=128, seed=0, calibration_fraction=0.25)
    cset.save(root / "canvases")
    trained = cli.main(["train", str(root / "canvases"), str(root / "model"), "--profile", "tiny"])
    assert trained == 0
    for k, stem in enumerate(scene_stems):
        image, truth = calibration_scene(tile_images(12, 10 + k), seed=k, copies=1)
        Image.fromarray(image).save(root / f"{stem}.png")
        (root / f"{stem}.json").write_text(json.dumps(truth))
    return root

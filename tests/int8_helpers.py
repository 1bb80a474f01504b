"""A tiny network with clear answers on hand-made colour windows: red -> red, green -> green,
anything else -> negative. What the int8 tests quantize (a random network has no clear answers
for int8 to keep)."""

from __future__ import annotations

import numpy as np
import torch

from mlcore.model.network import build_model

CLASSES = ["red", "green", "negative"]
WINDOW = 32


def hand_made_windows() -> np.ndarray:
    """Flat colours, halves and stripes of a few colours: uint8 windows."""
    colours = [(230, 30, 30), (30, 200, 40), (20, 20, 20), (240, 240, 240), (40, 60, 220),
               (210, 50, 60), (50, 190, 30)]  # fmt: skip
    out = []
    for a in colours:
        out.append(np.broadcast_to(np.array(a, np.uint8), (WINDOW, WINDOW, 3)).copy())
        for b in colours:
            if a != b:
                w = np.empty((WINDOW, WINDOW, 3), np.uint8)
                w[:, : WINDOW // 2], w[:, WINDOW // 2 :] = a, b
                out.append(w)
                if len(out) % 2:
                    w = w.copy()
                    w[::4] = b
                    out.append(w)
    return np.stack(out)


def taught_model():
    """A tiny network taught, in a few steps, red windows -> red, green -> green, others ->
    negative: an fp32 model with clear answers on the hand-made windows."""
    torch.manual_seed(0)
    model = build_model(len(CLASSES), depth=8, width=8, box_head=True)
    rng = np.random.default_rng(0)
    bases = {0: (220, 40, 40), 1: (40, 200, 50)}
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(60):
        labels = rng.integers(0, len(CLASSES), 48)
        colours = [bases.get(int(k), tuple(rng.integers(0, 256, 3))) for k in labels]
        noise = rng.normal(0, 20, (48, WINDOW, WINDOW, 3))
        images = np.clip(np.array(colours, float)[:, None, None] + noise, 0, 255)
        logits = model(torch.tensor(images, dtype=torch.float32))["logits"]
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(labels))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


RED, GREEN, GREY = (220, 40, 40), (40, 200, 50), (90, 90, 110)


def hand_made_scene():
    """A grey scene with red and green 32 px squares on the 16 px grid, and its truth."""
    rng = np.random.default_rng(1)
    scene = np.clip(rng.normal(GREY, 12, (224, 288, 3)), 0, 255).astype(np.uint8)
    truth = []
    for order, (y, x, colour, label) in enumerate([
        (16, 16, RED, "red"), (16, 128, GREEN, "green"), (96, 64, GREEN, "green"),
        (112, 208, RED, "red"), (176, 32, RED, "red"), (160, 144, GREEN, "green"),
    ]):  # fmt: skip
        scene[y : y + WINDOW, x : x + WINDOW] = colour
        truth.append({"id": str(order), "label": label, "x": x, "y": y, "w": WINDOW,
                      "h": WINDOW, "order": order, "visible": 1.0})  # fmt: skip
    return scene, truth


class Canvases:
    def __init__(self, scene, truth):
        self.calibration = (scene, truth)

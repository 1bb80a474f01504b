"""Aligned-tile accuracy: every image of a labelled set presented as one window, exactly aligned.

This is the classifier's quality without any localisation question (the scene metrics add that):
3-way balanced accuracy (the mean of per-class recalls, so the 80% negatives do not dominate),
the confusion matrix, and per *source* class how often it is called each project class (how many
trucks are called "car", airplanes "boat"). numpy only.
"""

from __future__ import annotations

import numpy as np


def aligned_accuracy(scorer, source, mapping, batch_size: int = 1024) -> dict:
    """``source``: LabelledImages with the source classes (e.g. the 10 CIFAR-10 classes);
    ``mapping``: a ``datasets.ClassMapping`` onto the scorer's classes."""
    classes = list(scorer.classes)
    project = [mapping.map_name(name) for name in source.class_names]
    missing = sorted({p for p in project if p is not None and p not in classes})
    if missing:
        raise ValueError(f"the mapping gives classes {missing} the model does not have {classes}")
    lookup = np.array([classes.index(p) if p is not None else -1 for p in project])
    truth = lookup[source.labels]
    keep = truth >= 0
    probs = np.concatenate(
        [
            scorer.predict(np.ascontiguousarray(source.images[i : i + batch_size]))
            for i in range(0, len(source), batch_size)
        ]
    )
    predicted = probs.argmax(1)
    n = len(classes)
    confusion = np.bincount(truth[keep] * n + predicted[keep], minlength=n * n).reshape(n, n)
    recall = confusion.diagonal() / np.maximum(confusion.sum(1), 1)
    by_source = {}
    for k, name in enumerate(source.class_names):
        sel = source.labels == k
        if sel.any():
            counts = np.bincount(predicted[sel], minlength=n) / sel.sum()
            by_source[name] = {c: round(float(v), 4) for c, v in zip(classes, counts)}
    return {
        "balanced_accuracy": float(recall.mean()),
        "accuracy": float(np.trace(confusion) / max(1, confusion.sum())),
        "recall": {c: round(float(r), 4) for c, r in zip(classes, recall)},
        "confusion": confusion.tolist(),
        "classes": classes,
        "called_as": by_source,
        "images": int(keep.sum()),
    }

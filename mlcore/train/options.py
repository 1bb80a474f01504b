"""What every engine's training config shares: built from a plain dict (unknown names refused with
the known ones), back to a dict, and its step count. No PyTorch import: the MXNet engine uses it."""

from __future__ import annotations

import math
from dataclasses import asdict, fields


class TrainOptions:
    """Mixin for a training-config dataclass with ``steps``, ``epochs`` and ``batch_size``."""

    # Options another engine understands that this one accepts and ignores.
    IGNORED_OPTIONS: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, values: dict | None):
        values = {k: v for k, v in dict(values or {}).items() if k not in cls.IGNORED_OPTIONS}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training options {unknown}; known options: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)

    def total_steps(self, n_train_windows: int) -> int:
        if self.epochs is not None:
            return max(1, math.ceil(self.epochs * n_train_windows / self.batch_size))
        return max(1, int(self.steps))

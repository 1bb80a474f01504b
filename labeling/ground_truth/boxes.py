"""Ground-truth boxes held compactly while a file is checked and stored: one array per column
(8 bytes a value) and each label once, instead of one dict per box (about 600 bytes each, so a
million boxes took 600 MB of a web worker). Stored as our JSON list of
{id, label, x, y, w, h, order, visible} boxes (ARCHITECTURE.md), written in chunks."""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterator
from typing import BinaryIO

WRITE_CHUNK = 10_000  # boxes per piece of JSON written


class BoxTable:
    """Boxes in file order; ``labels[codes[i]]`` is box i's label."""

    def __init__(self) -> None:
        self.labels: list[str] = []
        self._code_of: dict[str, int] = {}
        self.codes = array("l")
        self.x, self.y, self.w, self.h = array("q"), array("q"), array("q"), array("q")

    def __len__(self) -> int:
        return len(self.codes)

    def add(self, label: str, x: int, y: int, w: int, h: int) -> None:
        code = self._code_of.get(label)
        if code is None:
            code = self._code_of[label] = len(self.labels)
            self.labels.append(label)
        self.codes.append(code)
        for column, value in zip((self.x, self.y, self.w, self.h), (x, y, w, h)):
            column.append(value)

    def rename(self, aliases: dict[str, str]) -> None:
        """Source class names -> project classes (several labels may become one)."""
        self.labels = [aliases.get(label, label) for label in self.labels]
        self._code_of = {label: code for code, label in reversed(list(enumerate(self.labels)))}

    def box(self, i: int) -> dict:
        return {"id": f"gt-{i}", "label": self.labels[self.codes[i]], "x": self.x[i],
                "y": self.y[i], "w": self.w[i], "h": self.h[i], "order": i,
                "visible": 1.0}  # fmt: skip

    def boxes(self) -> Iterator[dict]:
        return (self.box(i) for i in range(len(self)))

    def write_json(self, out: BinaryIO) -> None:
        """The JSON list, a chunk of boxes at a time (never the whole text in memory)."""
        out.write(b"[")
        for start in range(0, len(self), WRITE_CHUNK):
            stop = min(len(self), start + WRITE_CHUNK)
            piece = ",".join(
                json.dumps(self.box(i), separators=(",", ":")) for i in range(start, stop)
            )
            out.write((("," if start else "") + piece).encode())
        out.write(b"]")

"""The ONNX hand-off file's metadata and its atomic save (ARCHITECTURE.md, "model file"), without
PyTorch: the PyTorch and MXNet exports, the dense export, calibration and the scorers share it."""

from __future__ import annotations

import json
import os
from pathlib import Path


def rounded(values):
    return None if values is None else [round(float(v), 6) for v in values]


def model_props(classes, window: int, mean, std, engine: str, extra: dict | None = None) -> dict:
    """The metadata every model file carries (values as the JSON strings ONNX stores), then
    ``extra`` for keys not already set."""
    props = {
        "classes": json.dumps(list(classes)),
        "window": str(int(window)),
        "mean": json.dumps(rounded(mean)),
        "std": json.dumps(rounded(std)),
        "engine": engine,
    }
    for key, value in (extra or {}).items():
        props.setdefault(str(key), value if isinstance(value, str) else json.dumps(value))
    return props


def save_with_metadata(proto, props: dict, tmp: Path, path: Path, check: bool = True) -> None:
    """Replace ``proto``'s metadata_props with ``props``, write it to ``tmp`` and move it onto
    ``path`` (readers never see half a file); ``check``: the ONNX checker first."""
    import onnx

    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    if check:
        onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)


def read_metadata(path) -> dict:
    """The model file's metadata_props, JSON values parsed (``thresholds``: {class: float} or
    None when the model was never calibrated)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    out: dict = {}
    for entry in proto.metadata_props:
        try:
            out[entry.key] = json.loads(entry.value)
        except json.JSONDecodeError:
            out[entry.key] = entry.value
    out.setdefault("thresholds", None)
    return out


def write_metadata(path, updates: dict) -> None:
    """Set metadata_props of an exported model file (JSON-encoded values), atomically."""
    import onnx

    path = Path(path)
    proto = onnx.load(str(path))
    props = {entry.key: entry.value for entry in proto.metadata_props}
    props.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in updates.items()})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.meta.tmp")
    try:
        save_with_metadata(proto, props, tmp, path, check=False)
    finally:
        tmp.unlink(missing_ok=True)


# Metadata keys that name a file beside this one which its scoring may open: the dense graph
# (mlcore.inference.dense_scoring) and the int8 copy (mlcore.inference.int8_sibling).
SIBLING_KEYS = ("dense_model", "int8_model")


def named_siblings(path) -> list[str]:
    """The bare file names ``path``'s metadata gives under :data:`SIBLING_KEYS` (a path in such
    a key is ignored: siblings lie beside the file)."""
    meta = read_metadata(path)
    names = [meta.get(key) for key in SIBLING_KEYS]
    return [n for n in names if isinstance(n, str) and n and Path(n).name == n]


def sibling_files(path, fetch=None) -> list[Path]:
    """Every file beside ``path`` that its scoring may open, as the files name each other
    (``model.onnx`` -> ``model.dense.onnx``, ``model.int8.onnx`` -> ``model.dense.int8.onnx``),
    those that exist. ``fetch(name, target)``: called for a named file missing beside ``path``
    (a download); True when it put the file there."""
    path, found = Path(path), []
    todo = [path]
    while todo:
        current = todo.pop()
        if current.suffix != ".onnx":
            continue
        for name in named_siblings(current):
            sibling = path.with_name(name)
            if sibling == path or sibling in found:
                continue
            if sibling.is_file() or (fetch is not None and fetch(name, sibling)):
                found.append(sibling)
                todo.append(sibling)
    return found

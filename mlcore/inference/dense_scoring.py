"""Dense scoring (issue 37.1): the convolutional trunk runs over whole tiles of the scene once,
and every window's outputs are read from the feature map by pooling at the window's place.

Design
------
*Strides.* WindowResNet (mlcore.model.network) is a stem (3x3, stride 1) and three stages whose
first blocks have strides 1, 2, 2: the feature map is at 1/4 of the pixel resolution (``stride`` =
4),
so a 32 px window is an 8x8 feature block, and a window whose origin is a multiple of 4 maps to
whole feature cells. The per-window network ends in a global average pool over that 8x8 map and
two linear heads (``fc``: head logits, ``box``: 4 offsets + centredness; a box head of parts
reads the means of the block's 2 x 2 or 4 x 4 parts instead: mlcore.model.box_head). Dense
scoring takes the same means of the window's 8x8 block of the *scene's* feature map and applies
the same heads (numpy).

*Tiles and halos.* The trunk is run on tiles of the scene (about TILE_PX square, so memory
stays bounded however wide the scene: ONNX Runtime holds ~250 bytes per tile pixel). A tile
extends ``halo`` px beyond its windows on each side (clipped at the scene's edges), where
``halo`` is the trunk's receptive-field radius (40 px for ResNet-20: each 3x3 conv adds 1 px
times the stride so far) rounded up to a multiple of ``stride``, and tiles start at multiples of
``stride`` from the scene's origin. So every feature a window pools depends only on real scene
pixels (or on the scene's own zero padding at its edges), never on where a tile ends: a scene
scored in one tile or in many gives the same grid **bit for bit** (tested, fp32, CPU; each
window's block is summed in a fixed order, never a running sum across the tile, and the heads
are fixed-order sums, not a matmul whose BLAS kernel depends on how many windows a tile has).

*Phases.* A stride-2 conv samples every other pixel, so a window only maps to a feature block when
its origin and the tile's origin agree modulo ``stride``. Origins are grouped by their phase
(``y % stride``, ``x % stride``); each phase is tiled on its own, with tiles starting at that
phase. At step 16 and step 8 every origin has phase 0 except the edge-clamped last row/column
(``grid_positions``), which costs one extra tile band each. For a phase p != 0 near the top/left
edge the tile cannot start above row/column p: such a window sees the scene from p on (the rows
before are replaced by zero padding). This is a fixed rule of the scene, not of the tiling.
A step that is not a multiple of ``stride`` works but runs the trunk up to stride**2 times:
score those per window.

Where dense equals per-window
-----------------------------
Not in general: per window, every conv pads the window's border with zeros; densely it sees the
real neighbours (the issue measured what that costs a model trained on isolated windows). They
agree (to float32 rounding: ONNX Runtime sums a conv over a 32x32 input and a large tile in its
own orders, and GlobalAveragePool vs. numpy's block sum round differently; tests use 1e-5) where
no spatial mixing reaches across the window's border:

- a network whose receptive field stays inside one pixel (every conv kernel zero except its
  centre tap: 1x1 convolutions, strided as the real ones), at every step that is a multiple of 4;
- any network on a scene that is exactly one window (the tile is the window, its border padding
  the same zeros).

A scene that is zero outside a window does *not* make them agree for a 3x3 network: after the
first layer the zeros around the window hold features of the window's own edge pixels, where per
window the next layer pads with zeros. Tests check the two agreements above and that the real
3x3 network does differ (so the agreement tests can fail).

Model file
----------
:func:`export_dense_onnx` writes a second graph next to the per-window file (``model.onnx`` ->
``model.dense.onnx``): input ``images`` uint8 (1, H, W, 3), any H and W, normalisation inside the
graph (as mlcore.model.export); outputs ``features`` float32 (1, ceil(H/4), ceil(W/4), C) (NHWC, so
the pooling reads contiguous channels), and the heads' constants ``head_weight`` (H, C),
``head_bias`` and ``head_to_class`` (H, classes), with a box head ``box_weight`` (5, C, or k*k*C
for a head of k x k parts) and ``box_bias``, read once when the file is opened. metadata_props:
``dense`` = true, ``stride``, ``halo``, ``window``, ``classes``, ``mean``, ``std``, ``heads``,
``box_head``, ``box_pool`` (its parts a side follow from ``box_weight``'s width). The
per-window file records ``dense_model`` = the dense file's name (its sibling), which is how a
model file says it can be scored densely (:func:`dense_model_path`); without it, or for other
engines (MXNet, foreign ONNX files with a fixed window input), scoring stays per window: the
per-window path is the reference.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from mlcore.data.windows import grid_positions
from mlcore.inference.scoring import ScoreGrid
from mlcore.progress import Progress, report

# Automatic tiles: about this many pixels of windows per side (plus the halos). ONNX Runtime's
# peak is about 250 bytes per tile pixel for ResNet-20 width 16 (measured: 670 MB for a
# 1104 x 2128 tile), so ~1100 px squares keep a tile near 300 MB whatever the scene's width.
TILE_PX = 1024
HEAD_OUTPUTS = ("head_weight", "head_bias", "head_to_class")
BOX_OUTPUTS = ("box_weight", "box_bias")


# ---------------------------------------------------------------------------------------------
# Export (PyTorch side)


def trunk_geometry(model) -> tuple[int, int]:
    """(stride, halo) of a WindowResNet's trunk: the feature map's stride in pixels and the
    receptive-field radius rounded up to a multiple of it. Walks the convs on the main path (the
    1x1 projection shortcuts see less than their block's 3x3 pair)."""
    from torch import nn

    convs = [model.stem[0]]
    for block in model.layers:
        convs += [block.conv1, block.conv2]
    jump, radius = 1, 0
    for conv in convs:
        if not isinstance(conv, nn.Conv2d):
            raise ValueError(f"expected Conv2d layers in the trunk, got {type(conv).__name__}")
        k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        if conv.kernel_size[0] != conv.kernel_size[1] or p != k // 2 or conv.stride[1] != s:
            raise ValueError("dense scoring needs square 'same' convs (padding = kernel // 2)")
        radius += (k // 2) * jump
        jump *= s
    halo = -(-radius // jump) * jump
    return jump, halo


def export_dense_onnx(model, path, classes, *, window: int = 32, per_window_path=None) -> Path:
    """Write the dense graph of a WindowResNet (module docstring, "Model file") atomically; with
    ``per_window_path`` also record ``dense_model`` in that (already exported) file's metadata."""
    import onnx
    import torch
    from onnx import helper, numpy_helper

    from mlcore.model.export import OPSET
    from mlcore.model.onnx_file import model_props, save_with_metadata, write_metadata

    path = Path(path)
    classes = list(classes)
    if len(classes) != model.num_classes:
        raise ValueError(f"the model predicts {model.num_classes} classes, got {len(classes)}")
    stride, halo = trunk_geometry(model)
    if window % stride:
        raise ValueError(f"window {window} is not a multiple of the trunk's stride {stride}")
    was_training = model.training
    model = model.cpu().eval()

    class Trunk(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, images):
            # NHWC: a window's channels are contiguous
            return self.net.trunk(images).permute(0, 2, 3, 1)

    heads = {
        "head_weight": model.fc.weight.detach().float().numpy(),
        "head_bias": model.fc.bias.detach().float().numpy(),
        "head_to_class": model.head_to_class.detach().float().numpy(),
    }
    if model.box is not None:
        heads["box_weight"] = model.box.weight.detach().float().numpy()
        heads["box_bias"] = model.box.bias.detach().float().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    example = torch.zeros((1, 2 * window, 2 * window, 3), dtype=torch.uint8)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Trunk(model).eval(),
                (example,),
                str(tmp),
                input_names=["images"],
                output_names=["features"],
                dynamic_axes={
                    "images": {1: "height", 2: "width"},
                    "features": {1: "fheight", 2: "fwidth"},
                },
                opset_version=OPSET,
                dynamo=False,
            )
        proto = onnx.load(str(tmp))
        graph = proto.graph
        # The heads' constants travel as outputs of the same graph: one self-contained file.
        for name, value in heads.items():
            graph.initializer.append(numpy_helper.from_array(value, f"{name}_const"))
            graph.node.append(helper.make_node("Identity", [f"{name}_const"], [name]))
            graph.output.append(
                helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(value.shape))
            )
        norm = model.normalisation
        extra = {
            "dense": "true",
            "stride": str(stride),
            "halo": str(halo),
            "heads": str(len(model.head_classes)),
            "box_head": model.box is not None,
            "box_pool": model.box_pool,
        }
        props = model_props(classes, window, norm["mean"], norm["std"], "torch", extra)
        save_with_metadata(proto, props, tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        model.train(was_training)
    if per_window_path is not None:
        write_metadata(per_window_path, {"dense_model": path.name})
    return path


def export_dense_sibling(model, classes, train_config, per_window_path) -> Path | None:
    """The dense graph of a model trained for dense scoring (its training config's
    ``dense_crop`` > 0: mlcore.train.training), written beside the exported ``per_window_path``
    (``model.onnx`` -> ``model.dense.onnx``), which then says it can be scored densely; None
    for any other model: it stays scored per window."""
    config = train_config if isinstance(train_config, dict) else train_config.to_dict()
    if not int(config.get("dense_crop") or 0):
        return None
    per_window_path = Path(per_window_path)
    dense = per_window_path.with_name(f"{per_window_path.stem}.dense.onnx")
    return export_dense_onnx(model, dense, classes, window=int(config["window"]),
                             per_window_path=per_window_path)  # fmt: skip


def dense_model_name(model_path) -> str | None:
    """The file name a per-window model file records in its ``dense_model`` metadata (a bare
    sibling name, never a path), or None."""
    import onnx

    try:
        proto = onnx.load(str(model_path), load_external_data=False)
    except Exception:  # another engine's file, or not ONNX: no dense graph
        return None
    name = next((e.value for e in proto.metadata_props if e.key == "dense_model"), None)
    return name if name and Path(name).name == name else None


def dense_model_path(model_path) -> Path | None:
    """The dense graph a per-window model file names in its ``dense_model`` metadata, when that
    file exists next to it; None: score this model per window."""
    name = dense_model_name(model_path)
    if name is None:
        return None
    dense = Path(model_path).with_name(name)
    return dense if dense.is_file() else None


# ---------------------------------------------------------------------------------------------
# Scoring (numpy + ONNX Runtime)


def open_dense_scorer(model_path, threads: int | None = None):
    """A DenseScorer for the per-window model file ``model_path`` when it names a dense graph
    (:func:`dense_model_path`), else None: score it per window (mlcore.inference.scoring)."""
    dense = dense_model_path(model_path)
    return None if dense is None else DenseScorer(dense, threads=threads)


def dense_scorer_for(model_path, step: int, scene_window: int | None = None,
                     threads: int | None = None):  # fmt: skip
    """How ``model_path`` is scored at ``step``: a DenseScorer when the file says it can be
    scored densely (:func:`dense_model_path`) and the grid fits the trunk (windows of the
    model's own size, a step on the trunk's grid); None: per window (mlcore.inference.scoring),
    the reference. The one rule of the CLI, the calibration, the scoring job and Spark."""
    scorer = open_dense_scorer(model_path, threads=threads)
    if scorer is None:
        return None
    if scene_window not in (None, scorer.window) or step % scorer.stride:
        return None  # resized windows (an object size) or an off-grid step: per window
    return scorer


class DenseScorer:
    """ONNX Runtime session over a dense graph written by :func:`export_dense_onnx`."""

    def __init__(self, path, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"dense model file {self.path} does not exist")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # A tile's activations are tens of MB each: the memory pattern's one planned block held
        # 870 MB at the peak of a 1,104 px tile of a 32k-wide scene, 708 MB without it, at the
        # same speed (docs/speed.md, "The scoring step's memory").
        options.enable_mem_pattern = False
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ValueError(
                f"dense model file {self.path} is corrupt ({exc}); re-export it"
            ) from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("dense") != "true":
            raise ValueError(f"{self.path} is not a dense model file (no 'dense' metadata)")
        self.metadata = dict(meta)
        self.classes = list(json.loads(meta["classes"]))
        self.window = int(meta["window"])
        self.stride = int(meta["stride"])
        self.halo = int(meta["halo"])
        self.box_head = bool(json.loads(meta.get("box_head", "false")))
        names = list(HEAD_OUTPUTS) + (list(BOX_OUTPUTS) if self.box_head else [])
        probe = np.zeros((1, self.stride, self.stride, 3), dtype=np.uint8)
        constants = dict(zip(names, self.session.run(names, {"images": probe})))
        self.weight_t = np.ascontiguousarray(constants["head_weight"].T, dtype=np.float32)  # (C, H)
        self.bias = constants["head_bias"].astype(np.float32)
        self.head_to_class = constants["head_to_class"].astype(np.float32)
        self.heads = self.head_to_class.shape[0]
        self.box_parts = 1  # parts a side the box head reads (mlcore.model.box_head.BOX_POOLS)
        if self.box_head:  # (C or k*k*C, 5): k from the weights, so no name table is needed
            self.box_weight_t = np.ascontiguousarray(constants["box_weight"].T, dtype=np.float32)
            self.box_bias = constants["box_bias"].astype(np.float32)
            k = round((len(self.box_weight_t) / len(self.weight_t)) ** 0.5)
            if k * k * len(self.weight_t) != len(self.box_weight_t) or (
                (self.window // self.stride) % k
            ):
                raise ValueError(f"{self.path}: its box head reads no whole parts of a window")
            self.box_parts = k
        self.output_names = ("probs", "boxes", "centredness") if self.box_head else ("probs",)

    def features(self, tile: np.ndarray) -> np.ndarray:
        """float32 (ceil(h/stride), ceil(w/stride), C) of a uint8 (h, w, 3) tile."""
        tile = np.ascontiguousarray(tile)[None]
        return self.session.run(["features"], {"images": tile})[0][0]

    def pooled(self, feats: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Mean feature (R, K, C) of the windows at feature cells (rows x cols) (their top-left
        cells): :func:`window_means`."""
        return window_means(feats, np.asarray(rows), np.asarray(cols), self.window // self.stride)

    def box_input(self, feats, rows, cols, pooled: np.ndarray) -> np.ndarray | None:
        """What the box head reads, (R * K, C or k*k*C): the windows' means, or with a box head
        of parts the means of their parts (:func:`part_means`); None without a box head."""
        if not self.box_head:
            return None
        if self.box_parts == 1:
            return pooled.reshape(-1, pooled.shape[-1])
        block = self.window // self.stride
        parts = part_means(feats, np.asarray(rows), np.asarray(cols), block, self.box_parts)
        return parts.reshape(-1, parts.shape[-2] * parts.shape[-1])

    def heads_of(self, pooled: np.ndarray, box_input: np.ndarray | None = None):
        """The per-window model's heads on pooled features (N, C) (the box head on
        ``box_input``, :meth:`box_input`; the means when None): probs, boxes, centredness."""
        logits = _fixed_order_affine(pooled, self.weight_t, self.bias)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        total = e[:, 0].copy()
        for h in range(1, self.heads):
            total += e[:, h]
        e /= total[:, None]
        probs = np.zeros((len(pooled), self.head_to_class.shape[1]), dtype=np.float32)
        for h in range(self.heads):
            probs += e[:, h : h + 1] * self.head_to_class[h]
        out = {"probs": probs}
        if self.box_head:
            box_in = pooled if box_input is None else box_input
            box = _fixed_order_affine(box_in, self.box_weight_t, self.box_bias)
            unit = np.array([0.0, 0.0, 1.0, 1.0], dtype=np.float32)
            out["boxes"] = ((box[:, :4] + unit) * np.float32(self.window)).astype(np.float32)
            out["centredness"] = (1.0 / (1.0 + np.exp(-box[:, 4]))).astype(np.float32)
        return out


def _fixed_order_affine(x: np.ndarray, weight_t: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """x (N, C) @ weight_t (C, O) + bias as explicit sums in a fixed order, not a matmul: BLAS
    picks its kernel (and its rounding) by the number of rows, and a tile's window count must
    not change a window's value."""
    out = np.repeat(bias[None], len(x), axis=0)
    for c in range(x.shape[1]):
        out += x[:, c : c + 1] * weight_t[c]
    return out


def part_means(feats, rows, cols, block: int, parts: int):
    """The means of each window's ``parts`` x ``parts`` parts (row by row: top-left first):
    feats (..., H, W, C), numpy or torch -> (..., R, K, parts**2, C); each part summed as
    :func:`window_means` sums a window, so tiles join bit for bit."""
    if block % parts:
        raise ValueError(f"a block of {block} cells does not split into {parts} parts a side")
    size = block // parts
    offsets = [k * size for k in range(parts)]
    parts = [window_means(feats, rows + dy, cols + dx, size)
             for dy in offsets for dx in offsets]  # fmt: skip
    if isinstance(feats, np.ndarray):
        return np.stack(parts, axis=-2)
    import torch

    return torch.stack(parts, dim=-2)


def window_means(feats, rows, cols, block: int):
    """Mean feature of each window's ``block`` x ``block`` cells: feats (..., H, W, C) (numpy, or
    torch when training for dense scoring: mlcore.train.training), rows (R,) and cols (K,) the
    windows' top-left cells -> (..., R, K, C). The one pooling of dense scoring and of its
    training. Each window's block is summed on its own, in the same order wherever it lies (its
    rows first, in order, then its columns): the tile's extent never changes a window's value."""
    band = feats[..., rows, :, :]
    for k in range(1, block):
        band = band + feats[..., rows + k, :, :]
    out = band[..., cols, :]
    for k in range(1, block):
        out = out + band[..., cols + k, :]
    return out * (1.0 / (block * block))


def _spans(origins: np.ndarray, length: int, window: int, stride: int, halo: int, per: int):
    """Tile spans along one axis: [(indices into origins, start px, end px)]. Origins are grouped
    by phase (origin % stride), each group cut into runs of ``per`` origins; a span starts
    ``halo`` before its first origin (or at the phase itself near the edge) and ends ``halo``
    after its last window (or at the scene's edge)."""
    spans = []
    for phase in np.unique(origins % stride):
        idx = np.flatnonzero(origins % stride == phase)
        for a in range(0, len(idx), per):
            part = idx[a : a + per]
            first, last = int(origins[part[0]]), int(origins[part[-1]])
            start = first - halo if first - halo >= 0 else int(phase)
            end = min(length, last + window + halo)
            spans.append((part, start, end))
    return spans


def score_scene_dense(
    scorer: DenseScorer,
    reader,
    step: int,
    progress: Progress | None = None,
    rows_per_strip: int | None = None,
    cols_per_tile: int | None = None,
) -> ScoreGrid:
    """Score every window of ``reader`` (``.height``, ``.width``, ``.read_rows(y0, y1)``) at
    ``step``, the same grid as :func:`mlcore.inference.scoring.score_scene`, from the trunk's
    feature map (:func:`score_rows_dense` over all the window rows)."""
    ys = grid_positions(int(reader.height), scorer.window, step)
    xs = grid_positions(int(reader.width), scorer.window, step)
    out = score_rows_dense(scorer, reader, ys, xs, step, progress, rows_per_strip, cols_per_tile)
    probs = out.pop("probs")
    return ScoreGrid(ys, xs, probs, scorer.classes, scorer.window, step, **out)


def score_rows_dense(
    scorer: DenseScorer,
    reader,
    ys: np.ndarray,
    xs: np.ndarray,
    step: int,
    progress: Progress | None = None,
    rows_per_strip: int | None = None,
    cols_per_tile: int | None = None,
) -> dict[str, np.ndarray]:
    """The outputs ({"probs": (R, K, C), "boxes", "centredness"}) of the windows at row origins
    ``ys`` x column origins ``xs`` (the grid at ``step``) of the scene ``reader``: any subset of
    the scene's grid rows (a Spark partition's: workers.spark_score) gives those rows of the
    whole scene's grid, bit for bit, since each window's features depend only on the scene
    around it.

    Tiles are ``rows_per_strip`` window rows by ``cols_per_tile`` window columns (auto: about
    TILE_PX pixels each way), each with its halo; the result does not depend on either, bit for
    bit. Pixels are read a band of tile rows at a time (the whole width)."""
    w, s, halo = scorer.window, scorer.stride, scorer.halo
    height, width = int(reader.height), int(reader.width)
    ys, xs = np.asarray(ys, dtype=np.int64), np.asarray(xs, dtype=np.int64)
    rows = rows_per_strip or max(1, TILE_PX // step)
    cols = cols_per_tile or max(1, TILE_PX // step)
    row_spans = _spans(ys, height, w, s, halo, max(1, int(rows)))
    col_spans = _spans(xs, width, w, s, halo, max(1, int(cols)))
    out = {
        "probs": np.empty((len(ys), len(xs), len(scorer.classes)), dtype=np.float32),
    }
    if scorer.box_head:
        out["boxes"] = np.empty((len(ys), len(xs), 4), dtype=np.float32)
        out["centredness"] = np.empty((len(ys), len(xs)), dtype=np.float32)

    def read(span):
        _, y0, y1 = span
        band = np.asarray(reader.read_rows(y0, y1))
        if band.dtype != np.uint8 or band.shape != (y1 - y0, width, 3):
            raise ValueError(f"read_rows({y0}, {y1}) gave {band.dtype} {band.shape}")
        return band

    report(progress, 0, len(ys), "scoring densely")
    done = 0
    for span in row_spans:
        band = read(span)  # one band at a time: it is full width (108 MB at 32k), so no read-ahead
        yi, y0, _ = span
        frows = (ys[yi] - y0) // s
        for xi, x0, x1 in col_spans:
            feats = scorer.features(band[:, x0:x1])
            fcols = (xs[xi] - x0) // s
            pooled = scorer.pooled(feats, frows, fcols)
            box_in = scorer.box_input(feats, frows, fcols, pooled)
            results = scorer.heads_of(pooled.reshape(-1, pooled.shape[2]), box_in)
            for name, value in results.items():
                out[name][np.ix_(yi, xi)] = value.reshape(len(yi), len(xi), *value.shape[1:])
        del band
        done += len(yi)
        report(progress, done, len(ys), f"scored {done} of {len(ys)} window rows")
    return out

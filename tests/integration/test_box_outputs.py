"""A model file with a box head, end to end (issue 22): a torch module with a known box offset
and centredness, exported with torch.onnx through mlcore.model.export, round-trips its outputs
through scoring, the grid file, Parquet and the database detections (the viewer's feed and the COCO
results export read the refined boxes); the same backbone without the head is an old
single-output model and scores exactly as before."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers_boxes import CLASSES, OFFSET, expected_outputs, export_box_model

from mlcore.data.windows import grid_positions
from mlcore.inference.postprocess import window_hits
from mlcore.inference.scoring import (
    REFINEMENTS,
    ScoreGrid,
    load_scorer,
    score_scene,
    score_strip,
)
from mlcore.ingest.scenes import ArrayScene
from workers.spark_score import scores_table

STEP = 16


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {
        "refined": export_box_model(folder / "refined.onnx"),
        "boxes_only": export_box_model(folder / "boxes.onnx", centredness=False),
        "old": export_box_model(folder / "old.onnx", boxes=False, centredness=False),
    }


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(3)
    pixels = rng.integers(90, 170, (120, 136, 3), dtype=np.uint8)
    pixels[20:52, 30:62] = (220, 40, 40)  # a red car
    pixels[70:102, 80:112] = (40, 200, 40)  # a green boat
    return pixels


def windows_of(pixels, ys, xs, window=32):
    return np.stack([pixels[y : y + window, x : x + window] for y in ys for x in xs])


def test_the_file_has_the_outputs_of_the_head(models, scene):
    windows = windows_of(scene, [0, 20], [0, 30])
    expected = expected_outputs(windows)
    scorer = load_scorer(models["refined"])
    assert scorer.output_names == ("probs", "boxes", "centredness")
    out = scorer.predict_all(windows)
    assert {k: v.shape for k, v in out.items()} == {
        "probs": (4, 3), "boxes": (4, 4), "centredness": (4,)}  # fmt: skip
    np.testing.assert_allclose(out["probs"], expected["probs"], atol=1e-6)
    np.testing.assert_array_equal(out["boxes"], expected["boxes"])  # the known offset
    np.testing.assert_allclose(out["centredness"], expected["centredness"], atol=1e-6)
    np.testing.assert_array_equal(scorer.predict(windows), out["probs"])
    assert load_scorer(models["boxes_only"]).output_names == ("probs", "boxes")
    assert load_scorer(models["old"]).output_names == ("probs",)


def test_scoring_fills_the_grid_and_the_grid_file_keeps_it(models, scene, tmp_path):
    scorer = load_scorer(models["refined"])
    grid = score_scene(scorer, ArrayScene(scene), STEP, batch_size=7, rows_per_strip=2)
    ys, xs = grid_positions(120, 32, STEP), grid_positions(136, 32, STEP)
    expected = expected_outputs(windows_of(scene, ys, xs))
    assert grid.boxes.shape == (len(ys), len(xs), 4) and grid.centredness.shape == grid.shape
    np.testing.assert_array_equal(grid.boxes.reshape(-1, 4), expected["boxes"])
    np.testing.assert_allclose(grid.centredness.reshape(-1), expected["centredness"], atol=1e-6)
    # A strip scores its rows alike (what a Spark task runs).
    part = score_strip(scorer, scene[ys[2] : ys[4] + 32], ys[2:5], xs, batch_size=5)
    for name in ("probs", *REFINEMENTS):
        np.testing.assert_array_equal(part[name], getattr(grid, name)[2:5])
    back = ScoreGrid.load(grid.save(tmp_path / "grid.npz"))
    for name in ("probs", *REFINEMENTS):
        np.testing.assert_array_equal(getattr(back, name), getattr(grid, name))
    only_boxes = score_scene(load_scorer(models["boxes_only"]), ArrayScene(scene), STEP)
    assert only_boxes.centredness is None and only_boxes.boxes is not None


def test_parquet_gains_the_box_columns(models, scene, tmp_path):
    grid = score_scene(load_scorer(models["refined"]), ArrayScene(scene), STEP)
    pq.write_table(scores_table(grid), tmp_path / "spark.parquet")
    pq.write_table(pa.table(grid.to_rows()), tmp_path / "cli.parquet")  # mlcore score --parquet
    for path in ("spark.parquet", "cli.parquet"):
        table = pq.read_table(tmp_path / path).to_pandas()
        assert list(table.columns)[-5:] == ["box_x0", "box_y0", "box_x1", "box_y1", "centredness"]
        row = table.iloc[len(grid.xs) + 2]  # window (ys[1], xs[2])
        assert (row.y, row.x) == (grid.ys[1], grid.xs[2])
        boxes = row[["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(np.float32)
        np.testing.assert_array_equal(boxes, grid.boxes[1, 2])
        assert row.centredness == grid.centredness[1, 2]
    old = score_scene(load_scorer(models["old"]), ArrayScene(scene), STEP)
    assert "centredness" not in scores_table(old).column_names
    assert "box_x0" not in old.to_rows()


def test_an_old_single_output_model_scores_as_before(models, scene, tmp_path):
    old = score_scene(load_scorer(models["old"]), ArrayScene(scene), STEP)
    refined = score_scene(load_scorer(models["refined"]), ArrayScene(scene), STEP)
    assert old.boxes is None and old.centredness is None
    np.testing.assert_allclose(old.probs, refined.probs, atol=1e-6)  # the same backbone
    with np.load(old.save(tmp_path / "old.npz")) as data:
        assert sorted(data.files) == ["classes", "probs", "step", "window", "xs", "ys"]
    # Hits straight from the windows: box = window, score = probability, nothing else.
    hits = window_hits(old, 0.5, "negative")
    assert len(hits) > 0 and hits.prob is None and hits.windows is None
    assert set(hits.w) == {32.0} and set(hits.x) <= set(old.xs.astype(float))
    rows, cols = np.searchsorted(old.ys, hits.y), np.searchsorted(old.xs, hits.x)
    np.testing.assert_array_equal(hits.score, old.probs[rows, cols, hits.label])


def test_a_grid_file_from_before_refinements_loads_without_them(tmp_path):
    probs = np.full((2, 3, 3), 1 / 3, dtype=np.float32)
    np.savez(tmp_path / "old.npz", ys=np.array([0, 16]), xs=np.array([0, 16, 32]), probs=probs,
             classes=np.array('["car", "boat", "negative"]'), window=np.int64(32),
             step=np.int64(16))  # fmt: skip
    grid = ScoreGrid.load(tmp_path / "old.npz")
    assert grid.boxes is None and grid.centredness is None and grid.classes == CLASSES


def write_refined_model(path, classes, window):
    return export_box_model(path, classes=classes, window=window)


@pytest.mark.django_db
def test_database_detections_feed_and_coco_export_use_the_refined_box(project, storage_dir):
    from labeling.models import Detection
    from labeling.review.feed import detections_feed
    from labeling.scoring.coco_results import export_run_results
    from labeling.scoring.results import load_grid
    from tests.review_helpers import make_scored_scene

    scene, run = make_scored_scene(project, 256, 256, seed=2, model=write_refined_model)
    grid = load_grid(run)
    assert grid.boxes is not None and grid.centredness is not None  # kept in storage
    dx, dy = OFFSET
    merged = list(Detection.objects.filter(run=run, kind="merged"))
    assert merged
    for d in merged:
        # The box is the kept window's refined box: a grid window shifted by the offset.
        i, j = list(grid.ys).index(d.y - dy), list(grid.xs).index(d.x - dx)
        assert (d.w, d.h) == (32, 32)
        # Its stored score is the class probability, what the thresholds and slider compare.
        assert d.score == pytest.approx(float(grid.probs[i, j, CLASSES.index(d.label)]))
    windows = list(Detection.objects.filter(run=run, kind="window"))
    assert windows and all(d.x in grid.xs and d.y in grid.ys for d in windows)
    feed = detections_feed(scene, run, "merged")
    assert sorted(zip(feed["x"], feed["y"])) == sorted((d.x, d.y) for d in merged)
    results = export_run_results(run)  # the ranked boxes COCO AP is computed on
    assert results
    for r in results:
        x, y, w, h = r["bbox"]
        i, j = list(grid.ys).index(y - dy), list(grid.xs).index(x - dx)
        label = CLASSES[r["category_id"] - 1]
        rank = grid.probs[i, j, CLASSES.index(label)] * grid.centredness[i, j]
        assert (w, h) == (32, 32) and r["rank_score"] == pytest.approx(float(rank), abs=1e-5)
        # "score" is the class probability, as everywhere else (the rank score is named so).
        prob = grid.probs[i, j, CLASSES.index(label)]
        assert r["score"] == pytest.approx(float(prob), abs=1e-5)
    assert {tuple(r["bbox"][:2]) for r in export_run_results(run, "merged")} == {
        (float(d.x), float(d.y)) for d in merged}  # fmt: skip

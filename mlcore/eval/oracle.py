"""The simulated reviewer's answers: the true class of a window, by the rule the metrics use
(mlcore.eval.metrics.window_truth over every ground-truth box, negative tiles too: the class of
the top-most tile holding the window's centre, else the negative class). manage.py simulate_review
(through the app's review queue) and bench/bench_loop.py (mlcore alone) both answer with it."""

from __future__ import annotations

from mlcore.eval.metrics import window_truth


class Oracle:
    """Answers for one scene with ground truth ``truth``; a label outside ``classes`` (when
    given) counts as negative."""

    def __init__(self, truth: list[dict], negative: str, classes=None):
        self.boxes = list(truth)
        self.negative = negative
        labels = [negative] + sorted({str(g["label"]) for g in self.boxes} - {negative})
        self.classes = list(classes) if classes is not None else labels
        if negative not in self.classes:
            self.classes.append(negative)

    def label(self, x: int, y: int, w: int, h: int) -> str:
        """The answer for one window (any w x h box): the class under its centre."""
        # A window of size 0 at the centre: window_truth's centre rule for any w x h box.
        truth = window_truth([y + h / 2.0], [x + w / 2.0], 0, self.boxes, self.classes,
                             self.negative)  # fmt: skip
        return self.classes[int(truth[0, 0])]

    def answers(self, grid, picks) -> list[str]:
        """The answers for windows of a ScoreGrid picked by the queue (``.y``, ``.x`` origins),
        the grid's truth computed once (window_truth wants the sorted origins)."""
        label = window_truth(grid.ys, grid.xs, grid.window, self.boxes, self.classes, self.negative)
        row = {int(y): i for i, y in enumerate(grid.ys)}
        col = {int(x): j for j, x in enumerate(grid.xs)}
        return [self.classes[int(label[row[p.y], col[p.x]])] for p in picks]

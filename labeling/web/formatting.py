"""One way to print a score, probability or threshold: three decimals, ties away from zero on
the float's exact value, which is what JavaScript's ``Number.prototype.toFixed(3)`` does (the
pages' scripts use LabelingApi.fixed3). So a threshold of 0.575 reads 0.575 on the dashboard,
the metrics page, the viewer and the review queue alike."""

from __future__ import annotations

from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

DECIMALS = 3


def fixed3(value) -> str:
    """``value`` with three decimals ("0.575"); "—" for None or anything that is not a number."""
    try:
        exact = Decimal(float(value))  # the float's exact binary value, as toFixed reads it
    except (TypeError, ValueError):
        return "—"
    if not exact.is_finite():
        return "—"
    return str(exact.quantize(Decimal(1).scaleb(-DECIMALS), rounding=ROUND_HALF_UP))


def signed3(value) -> str:
    """A change with its sign: "+0.043", "-0.012", "+0.000"."""
    text = fixed3(value)
    return text if text.startswith("-") or text == "—" else "+" + text


def share3(share) -> str:
    """A share (0..1) with three decimals like every figure, rounded down: "0.995"; 1.000 only
    when nothing is missing. "—" for None or anything that is not a number."""
    try:
        exact = Decimal(float(share))
    except (TypeError, ValueError):
        return "—"
    if not exact.is_finite():
        return "—"
    return str(exact.quantize(Decimal(1).scaleb(-DECIMALS), rounding=ROUND_FLOOR))

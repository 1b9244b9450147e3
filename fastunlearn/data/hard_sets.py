"""Forget sets chosen by a per-example score: ``memorized:`` (the most memorized examples) and
``mixed:`` (equal thirds of high, middle and low memorization, the layout of Zhao et al.,
NeurIPS 2024, kairanzhao/RUM). The scores come from elsewhere (a pool of selection models or the
training proxy, :mod:`fastunlearn.evaluate.memorization`); this module only turns scores into a
sorted index list, deterministically (ties go to the lower index).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["HARD_KINDS", "hard_count", "parse_hard_spec", "select_by_scores"]

#: forget-set kinds chosen by a per-example score (or, ``worst``, by a search on a model)
HARD_KINDS = ("memorized", "mixed", "worst")
_EXAMPLES = {"memorized": "memorized:5% or memorized:500", "mixed": "mixed:600",
             "worst": "worst:5% or worst:500"}


def parse_hard_spec(text: str) -> dict[str, Any]:
    """``"memorized:5%"`` / ``"memorized:500"`` / ``"mixed:600"`` / ``"worst:5%"`` (also a
    fraction such as ``memorized:0.05``) → ``{"type": kind, "fraction"|"count": ...}``; a
    one-line ValueError saying what is wrong otherwise."""
    kind, _, arg = str(text).partition(":")
    kind, arg = kind.strip().lower(), arg.strip()
    if kind not in HARD_KINDS:
        raise ValueError(f"bad forget spec {text!r}: the kind must be one of "
                         f"{', '.join(HARD_KINDS)}")
    example = _EXAMPLES[kind]
    try:
        if arg.endswith("%"):
            frac = float(arg[:-1]) / 100
            if not 0 < frac < 1:
                raise ValueError
            return {"type": kind, "fraction": frac}
        value = float(arg)
    except ValueError:
        raise ValueError(f"bad forget spec {text!r}: {kind} needs a count or a percentage in "
                         f"(0, 100), e.g. {example}") from None
    if 0 < value < 1:
        return {"type": kind, "fraction": value}
    if value >= 1 and value == int(value):
        if kind == "mixed" and int(value) < 3:
            raise ValueError(f"bad forget spec {text!r}: mixed needs at least 3 examples "
                             "(thirds of high, middle and low memorization)")
        return {"type": kind, "count": int(value)}
    raise ValueError(f"bad forget spec {text!r}: use {example}")


def hard_count(spec: Mapping[str, Any], n: int) -> int:
    """The number of examples a ``memorized`` / ``mixed`` / ``worst`` spec asks for out of ``n``
    training examples (one-line ValueError when it is out of range)."""
    kind = spec.get("type")
    if "fraction" in spec:
        count = max(1, round(float(spec["fraction"]) * n))
    elif "count" in spec:
        count = int(spec["count"])
    else:
        raise ValueError(f"a {kind} forget spec needs a fraction or a count")
    low = 3 if kind == "mixed" else 1
    if not low <= count < n:
        raise ValueError(f"forget spec {kind} asks for {count} examples; the training set has "
                         f"{n}: use between {low} and {n - 1}")
    return count


def select_by_scores(scores: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    """Sorted int64 indices of the examples ``spec`` selects by ``scores`` (higher = more
    memorized; NaN scores are never chosen).

    ``memorized``: the ``count`` highest. ``mixed``: ``count // 3`` lowest, ``count // 3``
    around the median and the rest (``count - 2 * (count // 3)``) highest, without overlap."""
    scores = np.asarray(scores, dtype=np.float64)
    kind = spec.get("type")
    ok = np.flatnonzero(np.isfinite(scores))
    count = hard_count(spec, len(scores))
    if count > len(ok):
        raise ValueError(f"only {len(ok)} examples have a memorization score; {kind} asks "
                         f"for {count}")
    # descending by score, ties to the lower index (lexsort: last key is the primary one)
    order = ok[np.lexsort((ok, -scores[ok]))]
    if kind == "memorized":
        chosen = order[:count]
    elif kind == "mixed":
        third = count // 3
        high = order[: count - 2 * third]
        low = order[len(order) - third:] if third else order[:0]
        mid_start = max(len(high), (len(order) - third) // 2)
        mid = order[mid_start: mid_start + third]
        chosen = np.concatenate([high, mid, low])
        if len(np.unique(chosen)) != count:
            raise ValueError(f"mixed:{count} needs more scored examples than {len(order)}")
    else:
        raise ValueError(f"select_by_scores takes a memorized or mixed spec, got {kind!r}")
    return np.sort(chosen).astype(np.int64)

"""Result tables: flat rows, CSV files, mean ± 95 % confidence intervals over seeds."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fastunlearn._atomic import atomic_write_bytes
from fastunlearn.studies.keys import _canonical


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested metric dicts → ``{"a.b": v}`` with scalar values (lists are dropped)."""
    flat: dict[str, Any] = {}
    for k, v in metrics.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            flat.update(flatten(v, name + "."))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            flat[name] = v
    return flat


def result_rows(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per result: run fields (``tag.*`` for tags), ``status`` (``ok`` /
    ``failed``), ``failed`` and ``failure`` (the reason), then every scalar metric — a failed
    run has no quality metrics (empty cells, "—" in tables)."""
    rows = []
    for res in results:
        run = res["run"]
        status = res.get("status", "ok")
        row: dict[str, Any] = {
            "key": res["key"], "dataset": run["dataset"], "model": run["model"],
            "forget": _canonical(run["forget"]), "method": run["method"],
            "config": _canonical(run["config"]), "variant": _canonical(run["variant"]),
            "seed": run["seed"], "status": status, "failed": status == "failed",
            "failure": res.get("failure") or "",
        }
        row.update({f"tag.{k}": v for k, v in run.get("tags", {}).items()})
        row.update(flatten(res["metrics"]))
        row["wall_s"] = res.get("wall_s")
        rows.append(row)
    return rows


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Write ``rows`` as CSV (the union of their columns, in first-seen order) atomically."""
    import csv
    import io

    columns: list[str] = []
    for r in rows:
        columns.extend(c for c in r if c not in columns)
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=columns, restval="")
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())
    return path


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, int]:
    """Mean and the half-width of its two-sided ``level`` confidence interval (Student t, the
    sample standard deviation); NaN half-width for fewer than two finite values."""
    from scipy import stats

    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(xs) / n
    if n < 2:
        return mean, math.nan, n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean, half, n


def aggregate(rows: Sequence[Mapping[str, Any]], by: Sequence[str],
              metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Group rows by the ``by`` columns (over seeds) → ``{by..., n, m_mean, m_ci95}``, in the
    order groups first appear."""
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(b) for b in by), []).append(r)
    out = []
    for gkey, members in groups.items():
        agg: dict[str, Any] = dict(zip(by, gkey))
        agg["n"] = len(members)
        for m in metrics:
            vals = [r.get(m) for r in members]
            vals = [v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
            mean, half, _ = mean_ci(vals)
            agg[f"{m}_mean"], agg[f"{m}_ci95"] = mean, half
        out.append(agg)
    return out


def fmt(mean: Any, half: Any = math.nan, nd: int = 2) -> str:
    """``mean ± half`` to ``nd`` decimals (just the mean when the half-width is NaN; "—" when
    the mean is missing or not finite; never "-0.00")."""
    if isinstance(mean, bool) or not isinstance(mean, (int, float)) or not math.isfinite(mean):
        return "—"
    text = f"{mean:.{nd}f}"
    if float(text) == 0:
        text = text.lstrip("-")
    if isinstance(half, (int, float)) and math.isfinite(half):
        return f"{text} ± {half:.{nd}f}"
    return text


def md_table(header_row: Sequence[str], rows: Sequence[Sequence[str]],
             align: Sequence[str] | None = None) -> str:
    """A Markdown table of pre-formatted cells (Markdown in them is kept); ``align``: one
    ``---`` / ``---:`` / ``:---:`` per column (default: the first left, the rest right)."""
    align = list(align) if align else ["---"] + ["---:"] * (len(header_row) - 1)
    if len(align) != len(header_row):
        raise ValueError(f"align has {len(align)} entries for {len(header_row)} columns")
    lines = ["| " + " | ".join(header_row) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"

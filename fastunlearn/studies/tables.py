"""Result tables: flat rows, CSV files, mean ± 95 % confidence intervals over seeds."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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
    import csv

    columns: list[str] = []
    for r in rows:
        columns.extend(c for c in r if c not in columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, restval="")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)
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
    """``mean ± half`` (just the mean when the half-width is NaN)."""
    if not isinstance(mean, (int, float)) or not math.isfinite(mean):
        return "—"
    if isinstance(half, (int, float)) and math.isfinite(half):
        return f"{mean:.{nd}f} ± {half:.{nd}f}"
    return f"{mean:.{nd}f}"

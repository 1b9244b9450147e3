"""Running a study (:func:`run`) and the helpers study reports share.

A study turns a :class:`~fastunlearn.studies.config.StudyConfig` into runs (``plan``), lets the
engine execute them (:func:`fastunlearn.studies.executors.execute`) and turns the finished rows
into a report (``report``): ``results.csv`` (one row per run, every metric), ``summary.csv``
(mean ± 95 % CI over seeds), ``report.md`` and PNG plots, all in the study's output directory.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastunlearn._atomic import atomic_write_bytes
from fastunlearn.studies.config import StudyConfig
from fastunlearn.studies.executors import execute
from fastunlearn.studies.keys import DO_NOTHING, make_run
from fastunlearn.studies.registry import Study, get_study
from fastunlearn.studies.tables import aggregate, fmt, result_rows, write_csv

log = logging.getLogger(__name__)


@dataclass
class StudyContext:
    """What a study's ``report`` gets: the config, the dataset, the finished results (run order),
    their flat rows, and the output directory for plots."""

    config: StudyConfig
    data: Any
    results: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    out: Path
    counts: dict[str, int]
    wall_s: float = 0.0


@dataclass
class StudyResult:
    name: str
    out: Path
    rows: list[dict[str, Any]]
    counts: dict[str, int]
    report: Path
    wall_s: float



def run(name: str, config: StudyConfig | None = None, *, split: Any = None,
        model_fn: Any = None, **options: Any) -> StudyResult:
    """Run study ``name`` (``fu.studies.run("cost-quality", dataset="digits", epochs=1)``):
    plan → execute (resumable) → ``results.csv``, ``summary.csv``, ``report.md``, PNGs.

    Your own data and model: ``split=`` (a :class:`~fastunlearn.data.ForgetSplit`, e.g. from
    ``ForgetSplit.from_datasets``) and ``model_fn=`` (zero arguments → a fresh model) replace
    ``dataset``, ``model`` and ``forget`` (:mod:`fastunlearn.studies.user`; local executor)."""
    from fastunlearn.data import load_dataset

    study = get_study(name)
    if config is None:
        config = StudyConfig(**options)
    elif options:
        raise ValueError("pass either a StudyConfig or keyword options, not both")
    if split is not None:
        from fastunlearn.studies.user import user_task

        config = dataclasses.replace(config, **user_task(split, model_fn, config.executor,
                                                         f"study {name!r}"))
    elif model_fn is not None:
        raise ValueError("model_fn= goes with split= (your own data); for a built-in dataset "
                         "pass model=NAME")
    if not config.methods and study.default_methods:
        config.methods = study.default_methods
    study.parse_options(config.options)  # unknown keys and bad values fail before any work
    out = Path(config.out) if config.out else Path("runs") / "studies" / name
    t0 = time.perf_counter()
    data = load_dataset(config.dataset)
    config = _resolve_hard_forget(config, data, out)
    runs = study.plan(config, data)
    if not runs:
        raise ValueError(f"study {name!r} planned no runs; check --methods / options")
    methods = {r["method"] for r in runs} - {"retrain", DO_NOTHING}
    stray = sorted(set(config.method_options) - methods)
    if stray:
        raise ValueError(f"options are set for {stray[0]!r}, which this study does not run "
                         f"(methods: {', '.join(sorted(methods))})")
    for m in sorted(methods):
        config.check_method_config(m)
    log.info("study %s: %d runs into %s", name, len(runs), out)
    results, counts = execute(
        runs, out, pool_dir=config.pool, executor=config.executor, workers=config.workers,
        device=config.device, threads=config.threads, cpus_per_run=config.cpus_per_run,
        gpus_per_run=config.gpus_per_run,
        eval_options={**config.eval_options(), **study.eval_options},
        progress=config.progress,
    )
    rows = result_rows(results)
    write_csv(rows, out / "results.csv")
    ctx = StudyContext(config, data, results, rows, out, counts, time.perf_counter() - t0)
    body = study.report(ctx)
    report = out / "report.md"
    atomic_write_bytes(report, (header(study, ctx) + body).encode())
    return StudyResult(name, out, rows, counts, report, time.perf_counter() - t0)


def _resolve_hard_forget(config: StudyConfig, data: Any, out: Path) -> StudyConfig:
    """A ``memorized:`` / ``mixed:`` / ``worst:`` forget spec resolved to its index list by
    selection models trained (once, into the pool) with the study's own model and recipe."""
    from fastunlearn.studies.config import parse_forget
    from fastunlearn.studies.selection import Selection, is_hard, resolve_hard_forget

    if not config.forget:
        return config
    spec = parse_forget(config.forget, data.classes)
    if not is_hard(spec):
        return config
    sel = Selection(config.dataset, config.model, {**config.train_config(), "eval_every": 0})
    pool = Path(config.pool) if config.pool else out.parent / "pool"
    resolved = resolve_hard_forget(spec, sel, pool, executor=config.executor,
                                   workers=config.workers, device=config.device,
                                   threads=config.threads, progress=config.progress)
    return dataclasses.replace(config, forget=resolved)


# ------------------------------------------------------------------ report bits
def header(study: Study, ctx: StudyContext) -> str:
    cfg = ctx.config
    machine = ctx.results[0].get("machine", "?") if ctx.results else "?"
    models = ", ".join(cfg.models) if cfg.models else cfg.model
    c = ctx.counts
    # the methods the study actually ran (a study may pick its own default list)
    ran = list(dict.fromkeys(r["method"] for r in ctx.rows
                             if r.get("method") not in ("retrain", DO_NOTHING)))
    return (
        f"# Study `{study.name}`\n\n**Question.** {study.question}\n\n"
        f"**Setup.** dataset `{cfg.dataset}`, model(s) `{models}`, methods "
        f"{', '.join(f'`{m}`' for m in ran or cfg.method_list())}; originals and gold "
        "retrains trained "
        f"{cfg.epochs} epoch(s); {cfg.seeds} seed(s) (mean ± 95 % CI, Student t, when > 1); "
        f"executor `{cfg.executor}`; machine: {machine}. {c['runs']} runs ({c['ran']} run now, "
        f"{c['skipped']} reused from an earlier invocation; {c['pool_trained']} pool models "
        f"trained now). Wall time of this invocation {ctx.wall_s:.0f} s; the runs themselves took "
        f"{sum(r.get('wall_s') or 0 for r in ctx.results):.0f} s in all (unlearning and "
        "evaluation, pool training excluded). Every RTE ratio divides a method's "
        "wall time by its gold retrain's training time (recorded when the pool model was "
        "trained, on the machine named in its checkpoint).\n\n"
        + failed_runs(ctx)
    )


def failed_runs(ctx: StudyContext) -> str:
    """A report paragraph listing the runs that failed (their metrics show as "—")."""
    failed = [r for r in ctx.results if r.get("status") == "failed"]
    if not failed:
        return ""
    from fastunlearn.evaluate.report import _md

    items = [f"- {_md(r['run']['method'])} (seed {r['run']['seed']}, run {_md(r['key'])}): "
             f"{_md(r.get('failure') or 'failed')}" for r in failed]
    return (f"**Failed runs.** {len(failed)} run(s) failed and are shown as \"—\"; the study "
            "went on without them (delete `runs/<key>` to retry one):\n\n"
            + "\n".join(items) + "\n\n")


HEADLINE_METRICS = ("forget_acc", "retain_acc", "test_acc", "mia_efficacy", "avg_gap",
                    "js_to_retrain", "rte_ratio", "rte_s")


def summarise(ctx: StudyContext, by: Sequence[str], metrics: Sequence[str] = HEADLINE_METRICS,
              ) -> list[dict[str, Any]]:
    """Aggregate over seeds and write ``summary.csv``."""
    summary = aggregate(ctx.rows, by, metrics)
    write_csv(summary, ctx.out / "summary.csv")
    return summary


def cell(row: Mapping[str, Any], metric: str, nd: int = 2) -> str:
    """``mean ± ci95`` of ``metric`` in an :func:`~fastunlearn.studies.tables.aggregate` row."""
    return fmt(row.get(f"{metric}_mean", math.nan), row.get(f"{metric}_ci95", math.nan), nd)


def relpath(path: Path, ctx: StudyContext) -> str:
    """``path`` relative to the study directory (for links in ``report.md``)."""
    return path.relative_to(ctx.out).as_posix()


def savefig(fig: Any, path: Path) -> Path:
    """Save ``fig`` as a PNG at ``path`` and close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def figure(width: float = 6.4, height: float = 4.2, *, nrows: int = 1, ncols: int = 1,
           **kwargs: Any) -> tuple[Any, Any]:
    """``plt.subplots(nrows, ncols, figsize=(width, height), **kwargs)`` on the Agg backend
    (no display needed): the one way study plots make a figure."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=(width, height), **kwargs)


def task_runs(config: StudyConfig, *, dataset: str, model: str, forget: Mapping[str, Any],
              methods: Sequence[str], variant: Mapping[str, Any] | None = None,
              tags: Mapping[str, Any] | None = None, with_retrain: bool | None = None,
              ) -> list[dict[str, Any]]:
    """The runs of ``methods`` (and the retrain reference row) on one task, for every seed."""
    runs = []
    with_retrain = config.include_retrain if with_retrain is None else with_retrain
    for seed in range(config.seeds):
        names = (["retrain"] if with_retrain else []) + list(methods)
        for m in names:
            runs.append(make_run(
                dataset=dataset, model=model, forget=forget, method=m,
                train=config.train_config(),
                config={} if m == "retrain" else config.method_config(m), seed=seed,
                variant=variant if m != "retrain" else None, tags=tags,
            ))
    return runs

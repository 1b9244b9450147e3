"""Studies: a registry, the options every study shares, and :func:`run`.

A study turns a :class:`StudyConfig` into runs (``plan``), lets the engine execute them
(:func:`fastunlearn.studies.executors.execute`) and turns the finished rows into a report
(``report``): ``results.csv`` (one row per run, every metric), ``summary.csv`` (mean ± 95 % CI
over seeds), ``report.md`` and PNG plots, all in the study's output directory.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fastunlearn.studies.executors import EXECUTORS, execute
from fastunlearn.studies.keys import DO_NOTHING, make_run
from fastunlearn.studies.tables import aggregate, fmt, result_rows, write_csv

log = logging.getLogger(__name__)

# Methods cheap enough for a CPU study (≤ 0.35 × retrain in the recipe tables) and usable on
# any plain model (sisa needs a SISA-trained ensemble, retrain is the reference row).
FAST_METHODS = ("ft", "ga", "neggrad_plus", "rl", "salun", "boundary_shrink", "scrub",
                "two_stage", "fisher", "influence", "zero_shot")
# the default of cost-quality: the fast ones plus methods III (issue 16)
COST_QUALITY_METHODS = FAST_METHODS + ("ssd", "sfr_on", "rum", "msg", "ct", "delete")
NOT_FOR_STUDIES = ("retrain", "sisa")
EXECUTORS = EXECUTORS


@dataclass
class StudyConfig:
    """Options every study shares (``fastunlearn study NAME --help`` lists them).

    ``forget``: ``"class:NAME[,NAME]"``, ``"random:10%"`` or ``"random:500"`` (default: the
    first class). ``methods``: registered method names (default: :data:`FAST_METHODS`).
    ``epochs``: training epochs of the original and retrained models; ``method_epochs``
    overrides every method's own ``epochs``; ``method_options`` maps a method to config
    overrides. ``seeds``: number of seeds (0 … seeds−1), each with its own original/retrain
    models. ``out``: the study directory (default ``runs/studies/NAME``); ``pool``: where
    original/retrained models are kept (default: ``pool`` beside ``out``, shared by studies).
    ``options``: study-specific settings (see each study's docstring).
    """

    dataset: str = "fashion-mnist"
    model: str = "small_cnn"
    models: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    forget: str | None = None
    seeds: int = 1
    epochs: int = 5
    method_epochs: int | None = None
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    out: str | None = None
    pool: str | None = None
    executor: str = "local"
    workers: int = 1
    cpus_per_run: float = 1
    gpus_per_run: float = 0
    device: str = "auto"
    threads: int | None = None
    batch_size: int | None = None
    mia_samples: int = 2000
    cka: bool = True
    include_retrain: bool = True
    progress: bool = True
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.models = tuple(self.models)
        self.methods = tuple(self.methods)
        if int(self.seeds) != self.seeds or self.seeds < 1:
            raise ValueError(f"seeds must be a positive integer, got {self.seeds}")
        if int(self.epochs) != self.epochs or self.epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {self.epochs}")
        if self.method_epochs is not None and (
            int(self.method_epochs) != self.method_epochs or self.method_epochs < 0
        ):
            raise ValueError(f"method_epochs must be a non-negative integer, got "
                             f"{self.method_epochs}")
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got "
                             f"{self.executor!r}")
        if int(self.workers) != self.workers or self.workers < 1:
            raise ValueError(f"workers must be a positive integer, got {self.workers}")
        if self.threads is not None and (isinstance(self.threads, bool)
                                         or int(self.threads) != self.threads
                                         or self.threads < 1):
            raise ValueError(f"threads must be a positive integer, got {self.threads}")
        if self.mia_samples < 10:
            raise ValueError(f"mia_samples must be ≥ 10, got {self.mia_samples}")
        from fastunlearn.unlearn import list_methods

        known = list_methods()
        for m in (*self.methods, *self.method_options):
            if m not in known:
                raise ValueError(f"unknown method {m!r}; known: {', '.join(sorted(known))}")
            if m in NOT_FOR_STUDIES:
                raise ValueError(f"method {m!r} cannot be a study method (retrain is the "
                                 "reference row; sisa needs a SISA-trained ensemble)")
        if self.forget is not None:
            parse_forget(self.forget)
        for m in self.method_options:  # each method's options build a valid config now
            self.check_method_config(m)

    def check_method_config(self, method: str) -> None:
        """ValueError (one line) unless ``method``'s config with this study's overrides is
        valid: unknown options, wrong types and out-of-range values fail before any work."""
        from fastunlearn.unlearn import make_config

        make_config(method, **self.method_config(method))

    # ------------------------------------------------------------------ derived
    def method_list(self) -> tuple[str, ...]:
        return self.methods or FAST_METHODS

    def method_config(self, method: str) -> dict[str, Any]:
        cfg: dict[str, Any] = {}
        if self.method_epochs is not None:
            cfg["epochs"] = int(self.method_epochs)
        if self.batch_size is not None:
            cfg["batch_size"] = int(self.batch_size)
        cfg.update(self.method_options.get(method, {}))
        return cfg

    def train_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"epochs": int(self.epochs)}
        if self.batch_size is not None:
            cfg["batch_size"] = int(self.batch_size)
        return cfg

    def eval_options(self) -> dict[str, Any]:
        return {"max_samples": int(self.mia_samples), "cka": bool(self.cka)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_forget(text: str, classes: Sequence[str] | None = None) -> dict[str, Any]:
    """``"class:Coat,Shirt"`` → class spec; ``"random:10%"`` / ``"random:0.1"`` → fraction;
    ``"random:500"`` → count. One-line ValueError otherwise."""
    kind, _, arg = text.partition(":")
    kind, arg = kind.strip().lower(), arg.strip()
    if kind == "class" and arg:
        names = [a.strip() for a in arg.split(",") if a.strip()]
        if classes is not None:
            bad = [n for n in names if n not in classes and not (n.isdigit() and
                                                                  int(n) < len(classes))]
            if bad:
                raise ValueError(f"forget class {bad[0]!r} is not a class of the dataset; "
                                 f"classes: {', '.join(classes)}")
            names = [classes[int(n)] if n not in classes else n for n in names]
        return {"type": "class", "classes": names}
    if kind == "random" and arg:
        try:
            if arg.endswith("%"):
                frac = float(arg[:-1]) / 100
                if not 0 < frac < 1:
                    raise ValueError
                return {"type": "random", "fraction": frac}
            value = float(arg)
        except ValueError:
            raise ValueError(f"bad forget spec {text!r}: random needs a count, a fraction in "
                             "(0, 1) or a percentage, e.g. random:10%") from None
        if 0 < value < 1:
            return {"type": "random", "fraction": value}
        if value >= 1 and value == int(value):
            return {"type": "random", "count": int(value)}
        raise ValueError(f"bad forget spec {text!r}: use random:10%, random:0.1 or random:500")
    raise ValueError(f"bad forget spec {text!r}; use class:NAME[,NAME], random:10% or random:500")


def default_forget(config: StudyConfig, data: Any) -> dict[str, Any]:
    """The study's forget spec: ``config.forget``, or the dataset's first class."""
    return parse_forget(config.forget or f"class:{data.classes[0]}", data.classes)


# --------------------------------------------------------------------- registry
@dataclass
class Study:
    """A registered study. ``options``: the ``config.options`` keys it understands (the
    class's or its module's ``OPTIONS``; none when it declares none) — any other key is
    refused by :func:`run` before any work."""

    name: str
    question: str
    plan: Callable[[StudyConfig, Any], list[dict[str, Any]]]
    report: Callable[[StudyContext], str]
    default_methods: tuple[str, ...] | None = None
    options: tuple[str, ...] = ()


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


_STUDIES: dict[str, Study] = {}


def register_study(name: str, question: str, *, default_methods: tuple[str, ...] | None = None,
                   ) -> Callable[[type], type]:
    """Class decorator: the class defines ``plan(config, data)`` and ``report(ctx)``
    (static methods)."""

    def deco(cls: type) -> type:
        if name in _STUDIES:
            raise ValueError(f"study {name!r} is already registered")
        import sys

        options = getattr(cls, "OPTIONS", None)
        if options is None:
            options = getattr(sys.modules.get(cls.__module__), "OPTIONS", ())
        _STUDIES[name] = Study(name, question, cls.plan, cls.report, default_methods,
                               tuple(options))
        return cls

    return deco


def _ensure_builtin() -> None:
    import fastunlearn.studies.collateral
    import fastunlearn.studies.cost_quality
    import fastunlearn.studies.cross_arch
    import fastunlearn.studies.forget_scaling
    import fastunlearn.studies.layer_sensitivity  # noqa: F401


def list_studies() -> dict[str, str]:
    """``{name: question}`` of every registered study."""
    _ensure_builtin()
    return {n: s.question for n, s in sorted(_STUDIES.items())}


def get_study(name: str) -> Study:
    _ensure_builtin()
    if name not in _STUDIES:
        raise ValueError(f"unknown study {name!r}; studies: {', '.join(sorted(_STUDIES))}")
    return _STUDIES[name]


def run(name: str, config: StudyConfig | None = None, **options: Any) -> StudyResult:
    """Run study ``name`` (``fu.studies.run("cost-quality", dataset="digits", epochs=1)``):
    plan → execute (resumable) → ``results.csv``, ``summary.csv``, ``report.md``, PNGs."""
    from fastunlearn.data import load_dataset

    study = get_study(name)
    if config is None:
        config = StudyConfig(**options)
    elif options:
        raise ValueError("pass either a StudyConfig or keyword options, not both")
    if not config.methods and study.default_methods:
        config.methods = study.default_methods
    unknown = sorted(set(config.options) - set(study.options))
    if unknown:
        known = ", ".join(study.options) if study.options else "none"
        raise ValueError(f"unknown {name} option {unknown[0]!r}; options: {known}")
    out = Path(config.out) if config.out else Path("runs") / "studies" / name
    t0 = time.perf_counter()
    data = load_dataset(config.dataset)
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
        gpus_per_run=config.gpus_per_run, eval_options=config.eval_options(),
        progress=config.progress,
    )
    rows = result_rows(results)
    write_csv(rows, out / "results.csv")
    ctx = StudyContext(config, data, results, rows, out, counts, time.perf_counter() - t0)
    body = study.report(ctx)
    report = out / "report.md"
    tmp = report.with_name(".report.md.tmp")
    tmp.write_text(header(study, ctx) + body)
    tmp.replace(report)
    return StudyResult(name, out, rows, counts, report, time.perf_counter() - t0)


# ------------------------------------------------------------------ report bits
def header(study: Study, ctx: StudyContext) -> str:
    cfg = ctx.config
    machine = ctx.results[0].get("machine", "?") if ctx.results else "?"
    models = ", ".join(cfg.models) if cfg.models else cfg.model
    c = ctx.counts
    return (
        f"# Study `{study.name}`\n\n**Question.** {study.question}\n\n"
        f"**Setup.** dataset `{cfg.dataset}`, model(s) `{models}`, methods "
        f"{', '.join(f'`{m}`' for m in cfg.method_list())}; originals and gold retrains trained "
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


def md_table(header_row: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header_row) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header_row))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


HEADLINE_METRICS = ("forget_acc", "retain_acc", "test_acc", "mia_efficacy", "avg_gap",
                    "js_to_retrain", "rte_ratio", "rte_s")


def summarise(ctx: StudyContext, by: Sequence[str], metrics: Sequence[str] = HEADLINE_METRICS,
              ) -> list[dict[str, Any]]:
    """Aggregate over seeds and write ``summary.csv``."""
    summary = aggregate(ctx.rows, by, metrics)
    write_csv(summary, ctx.out / "summary.csv")
    return summary


def cell(row: Mapping[str, Any], metric: str, nd: int = 2) -> str:
    return fmt(row.get(f"{metric}_mean", math.nan), row.get(f"{metric}_ci95", math.nan),
                      nd)


def relpath(path: Path, ctx: StudyContext) -> str:
    return path.relative_to(ctx.out).as_posix()


def savefig(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def figure(width: float = 6.4, height: float = 4.2) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


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

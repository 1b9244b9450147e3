"""The options every study shares (:class:`StudyConfig`) and forget-spec parsing.

A leaf of the studies package: it imports no study, the registry or the runner, so every
study module can import it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from fastunlearn.data.hard_sets import HARD_KINDS, parse_hard_spec
from fastunlearn.studies.executors import EXECUTORS
from fastunlearn.studies.options import StudyOptions

# Methods cheap enough for a CPU study (≤ 0.35 × retrain in the recipe tables) and usable on
# any plain model (sisa needs a SISA-trained ensemble, retrain is the reference row).
FAST_METHODS = ("ft", "ga", "neggrad_plus", "rl", "salun", "boundary_shrink", "scrub",
                "two_stage", "fisher", "influence", "zero_shot")
# the default of cost-quality: the fast ones, the retrain-free and partial-retrain methods
# (ssd, sfr_on, rum, msg, ct, delete) and the two remaining baselines (l1_sparse ≈ 0.4 ×
# retrain, bad_teacher)
COST_QUALITY_METHODS = FAST_METHODS + ("ssd", "sfr_on", "rum", "msg", "ct", "delete",
                                       "l1_sparse", "bad_teacher")
NOT_FOR_STUDIES = ("retrain", "sisa")


@dataclass
class StudyConfig:
    """Options every study shares (``fastunlearn study NAME --help`` lists them).

    ``forget``: ``"class:NAME[,NAME]"``, ``"random:10%"`` or ``"random:500"`` (default: the
    first class), or a split spec mapping (a user split's forget indices; see
    :mod:`fastunlearn.studies.user`). ``methods``: registered method names (default:
    :data:`FAST_METHODS`).
    ``epochs``: training epochs of the original and retrained models; ``method_epochs``
    overrides every method's own ``epochs``; ``method_options`` maps a method to config
    overrides. ``seeds``: number of seeds (0 … seeds−1), each with its own original/retrain
    models. ``out``: the study directory (default ``runs/studies/NAME``); ``pool``: where
    original/retrained models are kept (default: ``pool`` beside ``out``, shared by studies).
    ``options``: study-specific settings — a mapping of option keys (``--option KEY=VALUE``) or
    the study's typed options (:class:`~fastunlearn.studies.options.StudyOptions`; see each
    study's options class).
    """

    dataset: str = "fashion-mnist"
    model: str = "small_cnn"
    models: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    forget: str | dict[str, Any] | None = None
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
    options: dict[str, Any] | StudyOptions = field(default_factory=dict)

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
        if not isinstance(self.options, (Mapping, StudyOptions)):
            raise ValueError(f"options must be a mapping of study options, got {self.options!r}")
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


def parse_forget(text: str | Mapping[str, Any],
                 classes: Sequence[str] | None = None) -> dict[str, Any]:
    """``"class:Coat,Shirt"`` → class spec; ``"random:10%"`` / ``"random:0.1"`` → fraction;
    ``"random:500"`` → count; a spec mapping (``{"type": "indices", "ids": [...]}``, as a
    user split's :func:`~fastunlearn.studies.user.user_forget_spec` gives, or any
    ``class``/``random`` spec) is checked and returned. One-line ValueError otherwise."""
    if isinstance(text, Mapping):
        return _check_spec(dict(text), classes)
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
    if kind in HARD_KINDS and arg:
        return parse_hard_spec(text)
    raise ValueError(f"bad forget spec {text!r}; use class:NAME[,NAME], random:10%, random:500, "
                     "memorized:5%, mixed:600 or worst:5%")


def _check_spec(spec: dict[str, Any], classes: Sequence[str] | None) -> dict[str, Any]:
    kind = spec.get("type")
    if kind == "indices":
        ids = spec.get("ids")
        if not isinstance(ids, (list, tuple)) or not ids or not all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
            raise ValueError("an indices forget spec needs 'ids': a non-empty list of train "
                             "indices (non-negative integers)")
        out: dict[str, Any] = {"type": "indices", "ids": [int(i) for i in ids]}
        if isinstance(spec.get("selected"), Mapping):  # how a hard set was chosen
            out["selected"] = dict(spec["selected"])
        return out
    if kind == "class":
        names = spec.get("classes")
        if not isinstance(names, (list, tuple)) or not names:
            raise ValueError("a class forget spec needs 'classes': a non-empty list of names")
        return parse_forget("class:" + ",".join(str(n) for n in names), classes)
    if kind == "random":
        if "fraction" in spec:
            out = parse_forget(f"random:{spec['fraction']}", classes)
        elif "count" in spec:
            out = parse_forget(f"random:{spec['count']}", classes)
        else:
            raise ValueError("a random forget spec needs 'fraction' or 'count'")
        if "seed" in spec:
            out["seed"] = int(spec["seed"])
        return out
    if kind in HARD_KINDS:
        if "fraction" in spec:
            out = parse_forget(f"{kind}:{spec['fraction']}", classes)
        elif "count" in spec:
            out = parse_forget(f"{kind}:{spec['count']}", classes)
        else:
            raise ValueError(f"a {kind} forget spec needs 'fraction' or 'count'")
        return out
    raise ValueError(f"unknown forget spec type {kind!r}; expected class, random, indices, "
                     "memorized, mixed or worst")


def forget_label(forget: str | Mapping[str, Any] | None) -> str:
    """A short readable name of a forget setting (directory names, report headers)."""
    if forget is None or isinstance(forget, str):
        return str(forget)
    if "selected" in forget:  # a resolved hard set keeps the name it was asked by
        return forget_label(forget["selected"])
    if forget.get("type") == "indices":
        return f"indices:{len(forget.get('ids', []))}"
    if forget.get("type") == "class":
        return "class:" + ",".join(str(c) for c in forget.get("classes", []))
    kind = forget.get("type", "random")
    if kind == "random":
        return "random:" + str(forget.get("fraction", forget.get("count")))
    if "fraction" in forget:
        return f"{kind}:{100 * float(forget['fraction']):g}%"
    return f"{kind}:{forget.get('count')}"


def default_forget(config: StudyConfig, data: Any) -> dict[str, Any]:
    """The study's forget spec: ``config.forget``, or the dataset's first class."""
    return parse_forget(config.forget or f"class:{data.classes[0]}", data.classes)

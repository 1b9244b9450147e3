"""The demo: original + gold model, one class forgotten with ``ft`` and ``ga``, one table.

Used by ``make demo`` / ``fastunlearn demo``. Writes ``results.md``, ``results.json`` and the
checkpoints to the output directory and returns the markdown table. With ``progress`` each
phase (original, gold retrain, each method, evaluation) ends with one line on stderr —
``demo [2/5] gold retrain (small_cnn, 5 epochs): trained in 41.3 s (elapsed 83 s)`` — and
the long ones show a tqdm bar while they run (:class:`PhaseLog`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import torch

from fastunlearn._atomic import atomic_write_bytes, jsonable
from fastunlearn._device import resolve_device
from fastunlearn.checkpoint import load_checkpoint, save_checkpoint
from fastunlearn.data import DatasetNotFoundError, forget_classes, load_dataset
from fastunlearn.evaluate.accuracy import accuracy_metrics
from fastunlearn.studies.keys import make_run, original_key, retrain_key
from fastunlearn.studies.pool import build_pool_model, pool_path
from fastunlearn.train import TrainConfig
from fastunlearn.unlearn import FTConfig, GAConfig, RetrainConfig, UnlearnResult, unlearn

log = logging.getLogger(__name__)

COLUMNS = ("forget_acc", "retain_acc", "test_acc", "test_forget_acc")
#: the checkpoints and tables the demo writes into its output directory
OUTPUTS = ("original", "retrain", "ft", "ga")


class PhaseLog:
    """One progress line per finished phase, on ``stream`` (stderr): ``PREFIX [i/n] NAME:
    NOTE S s (elapsed T s)`` — S the phase's seconds, T the seconds since the log was made.
    Written with ``tqdm.write`` so that it does not tear a running bar; also logged at INFO.
    ``enabled=False`` writes nothing (the log line stays)."""

    def __init__(self, total: int, *, prefix: str = "demo", enabled: bool = True,
                 stream: TextIO | None = None) -> None:
        self.total, self.prefix, self.enabled = total, prefix, enabled
        self.stream = stream
        self.done = 0
        self.t0 = time.perf_counter()

    @contextmanager
    def phase(self, name: str) -> Iterator[dict[str, str]]:
        """Time the block as phase ``name``; the block may set ``note["text"]`` (e.g.
        ``"trained"``) to say what happened. The line is written when the block ends."""
        note = {"text": ""}
        t = time.perf_counter()
        yield note
        self.done += 1
        now = time.perf_counter()
        text = f"{note['text']} in " if note["text"] else ""
        line = (f"{self.prefix} [{self.done}/{self.total}] {name}: {text}{now - t:.1f} s "
                f"(elapsed {now - self.t0:.0f} s)")
        log.info("%s", line)
        if self.enabled:
            from tqdm.auto import tqdm

            tqdm.write(line, file=self.stream if self.stream is not None else sys.stderr)


def existing_outputs(out: str | Path) -> list[Path]:
    """The demo files already in ``out`` (checkpoints, sidecars, result tables)."""
    out = Path(out)
    names = [f"{n}{ext}" for n in OUTPUTS for ext in (".safetensors", ".json")]
    names += ["results.md", "results.json"]
    return [out / n for n in names if (out / n).exists()]


def run_demo(
    out: str | Path = "runs/demo",
    *,
    dataset: str = "fashion-mnist",
    model: str = "small_cnn",
    forget_class: str = "Coat",
    epochs: int = 5,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    pool: str | Path | None = None,
    force: bool = False,
) -> str:
    """Run the demo and return its markdown table (also written to ``out/results.md``).

    The original and gold models are taken from (or trained into) the study model pool
    ``pool`` (default: ``pool`` beside ``out``), keyed exactly as the studies key them.
    An ``out`` that already holds a demo raises ``FileExistsError`` before any work unless
    ``force``. ``progress``: tqdm bars while models train and one line per finished phase
    on stderr (:class:`PhaseLog`)."""
    t_start = time.perf_counter()
    methods = (FTConfig, GAConfig)
    phases = PhaseLog(2 + len(methods) + 1, enabled=progress)  # pool ×2, methods, evaluation
    out = Path(out)
    existing = existing_outputs(out)
    if existing and not force:
        raise FileExistsError(f"{existing[0]} exists; pass force=True (--force) to overwrite "
                              f"the demo in {out}")
    dataset_name = dataset
    try:
        data = load_dataset(dataset)
    except DatasetNotFoundError as err:
        log.warning("%s — falling back to the bundled digits dataset", err)
        data, forget_class, dataset_name = load_dataset("digits"), "3", "digits"
    split = forget_classes(data, [forget_class])
    # original and gold model come from the study engine's pool: trained once, then reused by
    # `fastunlearn study cost-quality` on the same task (and by later demos)
    pool = Path(pool) if pool is not None else out.parent / "pool"
    run = make_run(dataset=dataset_name, model=model, forget=split.spec, method="retrain",
                   train={"epochs": epochs}, seed=seed)
    models = {}
    what = f"{model}, {epochs} epoch{'' if epochs == 1 else 's'}"
    for role, key, name in (("original", original_key(run), "original model"),
                            ("retrain", retrain_key(run), "gold retrain")):
        with phases.phase(f"{name} ({what})") as note:
            job = {"key": key, "role": role, "run": run, "progress": progress}
            built = build_pool_model(job, str(pool), device)
            ck = load_checkpoint(pool_path(pool, key).with_suffix(".safetensors"),
                                 device=resolve_device(device))
            models[role] = (ck.model, built["train_s"])
            note["text"] = "trained" if built["trained"] else "taken from the pool"
    original, train_s = models["original"]
    gold_model, gold_s = models["retrain"]
    tcfg = TrainConfig(epochs=epochs, seed=seed, device=device, progress=progress)
    save_checkpoint(
        out / "original", original, dataset=data, seed=seed, train_config=tcfg.to_dict(),
        metrics={"rte_s": train_s},
    )
    gold = UnlearnResult(gold_model, "retrain", RetrainConfig(epochs=epochs, seed=seed),
                         rte_s=gold_s)
    save_checkpoint(
        out / "retrain", gold.model, dataset=data, forget=split.spec, seed=seed,
        train_config=tcfg.to_dict(), metrics=gold.summary(), extra={"role": "retrain"},
    )
    common = {"seed": seed, "device": device, "progress": progress}
    results = [gold]
    for config_cls in methods:
        cfg = config_cls(**common)
        with phases.phase(cfg.method) as note:
            res = unlearn(original, split, cfg)
            save_checkpoint(
                out / cfg.method, res.model, dataset=data, forget=split.spec, seed=seed,
                metrics=res.summary(),
                extra={"role": "unlearned", "unlearn_config": cfg.to_dict()},
            )
            note["text"] = "unlearned"
        results.append(res)

    from tqdm.auto import tqdm

    rows: list[dict[str, Any]] = []
    with phases.phase(f"evaluation ({1 + len(results)} models)"):
        judged = [("original", original, train_s, None), *(
            (r.method, r.model, r.rte_s, r) for r in results)]
        for name, net, secs, res in tqdm(judged, desc="evaluation", leave=False,
                                         disable=not progress):
            m = accuracy_metrics(net, split)
            row = {"model": name, **{k: m[k] for k in COLUMNS}, "time_s": secs}
            if res is not None:
                row.update(x_retrain=secs / gold.rte_s, info=res.info.get("stop_reason", ""))
            rows.append(row)
    table = format_table(rows, data.name, model, split.describe())
    total = time.perf_counter() - t_start
    table += f"\nTotal demo wall time: {total:.0f} s on {_machine(device)}.\n"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "results.md", table.encode())
    atomic_write_bytes(out / "results.json",
                       json.dumps(jsonable({"rows": rows, "total_s": total}), indent=2).encode())
    return table


def format_table(rows: list[dict[str, Any]], dataset: str, model: str, forget: str) -> str:
    head = (
        f"Dataset {dataset}, model {model}, forget {forget}\n\n"
        "| model | forget acc | retain acc | test acc | test-forget acc | time (s) | × retrain |\n"
        "|---|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        ratio = f"{r['x_retrain']:.3f}" if "x_retrain" in r else "—"
        lines.append(
            f"| {r['model']} | {r['forget_acc']:.2f} | {r['retain_acc']:.2f} | {r['test_acc']:.2f}"
            f" | {r['test_forget_acc']:.2f} | {r['time_s']:.1f} | {ratio} |"
        )
    return head + "\n".join(lines) + "\n"


def _machine(device: str) -> str:
    import os
    import platform

    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.machine()}, {torch.get_num_threads()} threads, {os.cpu_count()} cores)"

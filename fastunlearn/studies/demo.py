"""The demo: original + gold model, one class forgotten with ``ft`` and ``ga``, one table.

Used by ``make demo`` / ``fastunlearn demo``. Writes ``results.md``, ``results.json`` and the
checkpoints to the output directory and returns the markdown table.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from fastunlearn._device import resolve_device
from fastunlearn.checkpoint import load_checkpoint, save_checkpoint
from fastunlearn.data import DatasetNotFoundError, forget_classes, load_dataset
from fastunlearn.evaluate.accuracy import accuracy_metrics
from fastunlearn.studies.engine import (
    build_pool_model,
    make_run,
    original_key,
    pool_path,
    retrain_key,
)
from fastunlearn.train import TrainConfig
from fastunlearn.unlearn import FTConfig, GAConfig, RetrainConfig, UnlearnResult, unlearn

log = logging.getLogger(__name__)

COLUMNS = ("forget_acc", "retain_acc", "test_acc", "test_forget_acc")
#: the checkpoints and tables the demo writes into its output directory
OUTPUTS = ("original", "retrain", "ft", "ga")


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
    ``force``."""
    t_start = time.perf_counter()
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
    for role, key in (("original", original_key(run)), ("retrain", retrain_key(run))):
        job = {"key": key, "role": role, "run": run, "progress": progress}
        built = build_pool_model(job, str(pool), device)
        ck = load_checkpoint(pool_path(pool, key).with_suffix(".safetensors"),
                             device=resolve_device(device))
        models[role] = (ck.model, built["train_s"])
        log.info("%s: %s (%.1f s)", role, "trained" if built["trained"] else "from the pool",
                 built["train_s"])
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
    for cfg in (FTConfig(**common), GAConfig(**common)):
        res = unlearn(original, split, cfg)
        save_checkpoint(
            out / cfg.method, res.model, dataset=data, forget=split.spec, seed=seed,
            metrics=res.summary(), extra={"role": "unlearned", "unlearn_config": cfg.to_dict()},
        )
        results.append(res)

    rows: list[dict[str, Any]] = []
    m = accuracy_metrics(original, split)
    rows.append({"model": "original", **{k: m[k] for k in COLUMNS}, "time_s": train_s})
    for res in results:
        m = accuracy_metrics(res.model, split)
        rows.append(
            {
                "model": res.method,
                **{k: m[k] for k in COLUMNS},
                "time_s": res.rte_s,
                "x_retrain": res.rte_s / gold.rte_s,
                "info": res.info.get("stop_reason", ""),
            }
        )
    table = format_table(rows, data.name, model, split.describe())
    total = time.perf_counter() - t_start
    table += f"\nTotal demo wall time: {total:.0f} s on {_machine(device)}.\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps({"rows": rows, "total_s": total}, indent=2))
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

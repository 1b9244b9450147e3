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

from fastunlearn.checkpoint import save_checkpoint
from fastunlearn.data import DatasetNotFoundError, forget_classes, load_dataset
from fastunlearn.evaluate.accuracy import accuracy_metrics
from fastunlearn.models import create_model
from fastunlearn.train import TrainConfig, train
from fastunlearn.unlearn import FTConfig, GAConfig, RetrainConfig, unlearn

log = logging.getLogger(__name__)

COLUMNS = ("forget_acc", "retain_acc", "test_acc", "test_forget_acc")


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
) -> str:
    """Run the demo and return its markdown table (also written to ``out/results.md``)."""
    t_start = time.perf_counter()
    out = Path(out)
    try:
        data = load_dataset(dataset)
    except DatasetNotFoundError as err:
        log.warning("%s — falling back to the bundled digits dataset", err)
        data, forget_class = load_dataset("digits"), "3"
    split = forget_classes(data, [forget_class])
    torch.manual_seed(seed)
    net = create_model(model, data)
    tcfg = TrainConfig(epochs=epochs, seed=seed, device=device, progress=progress)
    t0 = time.perf_counter()
    original = train(net, split.full, tcfg, eval_on={})
    train_s = time.perf_counter() - t0
    save_checkpoint(
        out / "original", original, dataset=data, seed=seed, train_config=tcfg.to_dict()
    )

    common = {"seed": seed, "device": device, "progress": progress}
    gold = unlearn(original, split, RetrainConfig(epochs=epochs, **common))
    save_checkpoint(
        out / "retrain", gold.model, dataset=data, forget=split.spec, seed=seed,
        metrics=gold.summary(), extra={"role": "retrain"},
    )
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

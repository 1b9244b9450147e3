"""Recipe table of the unlearning methods of issue 5 on the demo setting.

Fashion-MNIST, ``small_cnn`` trained with ``fu.TrainConfig()`` (5 epochs), two forget sets —
class "Coat" and 10 % random samples (seed 0). For each: the gold retrain (``RetrainConfig``
defaults, timed in the same run) and every method with its default config; forget / retain /
test accuracy and wall time, also as a ratio to the retrain of the same run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/recipes_methods1.py \
        [--original /tmp/fmnist_orig] [--methods ft,rl,...] [--out benchmarks/results/...]

The original model is loaded from ``--original`` when that checkpoint exists, otherwise
trained and saved there. Prints a markdown table; writes one CSV row per (split, method).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import platform
import time
from pathlib import Path

import torch

import fastunlearn as fu
from fastunlearn.checkpoint import CheckpointError, load_checkpoint
from fastunlearn.evaluate.accuracy import accuracy_metrics
from fastunlearn.unlearn import make_config

# (row label, method, config overrides): defaults only, plus two mask compositions
RUNS: list[tuple[str, str, dict]] = [
    ("ft", "ft", {}),
    ("ga", "ga", {}),
    ("rl", "rl", {}),
    ("salun", "salun", {}),
    ("ig_salun", "ig_salun", {}),
    ("neggrad_plus", "neggrad_plus", {}),
    ("l1_sparse", "l1_sparse", {}),
    ("two_stage", "two_stage", {}),
    ("scrub", "scrub", {}),
    ("bad_teacher", "bad_teacher", {}),
    ("boundary_shrink", "boundary_shrink", {}),
    ("ft --mask salun", "ft", {"mask": "salun"}),
    ("ga --mask ig", "ga", {"mask": "ig"}),
]

FIELDS = [
    "forget", "method", "forget_acc", "retain_acc", "test_acc", "test_forget_acc", "rte_s",
    "ratio_to_retrain", "device", "threads", "torch", "date",
]


def original_model(data: fu.ImageDataset, path: str) -> torch.nn.Module:
    try:
        return load_checkpoint(path).model
    except CheckpointError:
        pass
    torch.manual_seed(0)
    model = fu.create_model("small_cnn", data)
    fu.train(model, data.train, fu.TrainConfig(device="cpu", progress=False))
    fu.save_checkpoint(path, model, dataset=data, seed=0, train_config=fu.TrainConfig().to_dict())
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--original", default="/tmp/fmnist_orig")
    ap.add_argument("--methods", default="", help="comma-separated row labels (default: all)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results/recipes_methods1.csv"))
    args = ap.parse_args()
    wanted = {m.strip() for m in args.methods.split(",") if m.strip()}
    runs = [r for r in RUNS if not wanted or r[0] in wanted]

    data = fu.load_dataset("fashion-mnist")
    orig = original_model(data, args.original)
    splits = {
        "class Coat": fu.forget_classes(data, ["Coat"]),
        "random 10%": fu.forget_random(data, fraction=0.1, seed=0),
    }
    device = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared)"
    stamp = dt.datetime.now().isoformat(timespec="seconds")
    rows = []
    for fname, split in splits.items():
        base = accuracy_metrics(orig, split)
        rows.append({"forget": fname, "method": "original", **_acc(base)})
        t0 = time.perf_counter()
        gold = fu.unlearn(orig, split, make_config("retrain", device="cpu", progress=False))
        retrain_s = gold.rte_s
        rows.append({
            "forget": fname, "method": "retrain", **_acc(accuracy_metrics(gold.model, split)),
            "rte_s": retrain_s, "ratio_to_retrain": 1.0,
        })
        print(f"[{fname}] retrain {retrain_s:.1f}s ({time.perf_counter() - t0:.0f}s)", flush=True)
        for label, method, overrides in runs:
            cfg = make_config(method, device="cpu", progress=False, **overrides)
            res = fu.unlearn(orig, split, cfg)
            row = {
                "forget": fname, "method": label, **_acc(accuracy_metrics(res.model, split)),
                "rte_s": res.rte_s, "ratio_to_retrain": res.rte_s / retrain_s,
            }
            rows.append(row)
            print(f"[{fname}] {_fmt(row)}", flush=True)
    meta = {"device": device, "threads": torch.get_num_threads(), "torch": torch.__version__}
    for r in rows:
        r.update(meta, date=stamp)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: _round(r.get(k, "")) for k in FIELDS})
    print(markdown(rows))
    print(f"wrote {out}")


def _acc(m: dict) -> dict:
    return {k: m[k] for k in ("forget_acc", "retain_acc", "test_acc", "test_forget_acc")}


def _round(v: object) -> object:
    return round(v, 3) if isinstance(v, float) else v


def _fmt(r: dict) -> str:
    return (
        f"{r['method']:18s} FA {r['forget_acc']:5.1f} RA {r['retain_acc']:5.1f} "
        f"TA {r['test_acc']:5.1f} {r.get('rte_s', 0):6.1f}s ×{r.get('ratio_to_retrain', 0):.2f}"
    )


def markdown(rows: list[dict]) -> str:
    lines = [
        "| forget set | method | forget acc | retain acc | test acc | time (s) | × retrain |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        t = f"{r['rte_s']:.1f}" if "rte_s" in r else "–"
        x = f"{r['ratio_to_retrain']:.2f}" if "ratio_to_retrain" in r else "–"
        lines.append(
            f"| {r['forget']} | {r['method']} | {r['forget_acc']:.1f} | {r['retain_acc']:.1f} "
            f"| {r['test_acc']:.1f} | {t} | {x} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()

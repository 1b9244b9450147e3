"""The audit's shadow recipes side by side: seconds per shadow model and the memorization each
gives, measured in one run (run it alone on the machine).

Per recipe, ``--shadows`` original shadow models are trained on the audit's seeded random halves
of the training set (the audit's layout, :func:`fastunlearn.studies.audit.membership`). Each row:
the median seconds per model (after a warm-up model that is not counted) and its ratio to the
first recipe's, the mean train accuracy on each shadow's half, the mean test accuracy, and
do-nothing's U-LiRA AUC on a ``memorized:5%`` forget set — the same set for every recipe, chosen
by selection models (8, the first recipe) that are not among the measured shadows.

    .venv/bin/python benchmarks/bench_pool.py [--shadows 16] [--out benchmarks/results/pool.csv]

The last column estimates an N = 64 audit pool (64 originals, 64 gold models, 64 second gold
models for the ceiling) at the median time per model.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

RECIPES = {  # name: (model, training recipe)
    "small_cnn-30ep": ("small_cnn", {"epochs": 30, "lr": 0.05, "batch_size": 128}),
    "narrow-24ep-bs128": ("small_cnn_narrow", {"epochs": 24, "lr": 0.1, "batch_size": 128,
                                               "weight_decay": 0.0, "schedule": "linear",
                                               "warmup_epochs": 1.0}),
    "narrow-18ep-bs64": ("small_cnn_narrow", {"epochs": 18, "lr": 0.05, "batch_size": 64,
                                              "weight_decay": 0.0, "schedule": "linear",
                                              "warmup_epochs": 1.0}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="fashion-mnist-10k")
    ap.add_argument("--shadows", type=int, default=16)
    ap.add_argument("--forget", default="memorized:5%")
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--pool", default="runs/bench_pool/pool", help="selection models' pool")
    ap.add_argument("--out", default="benchmarks/results/pool.csv")
    args = ap.parse_args()

    from fastunlearn._timing import measure
    from fastunlearn.data import load_dataset
    from fastunlearn.data.base import DataPart
    from fastunlearn.evaluate import audit as A
    from fastunlearn.evaluate.report import machine_description
    from fastunlearn.inference import accuracy, predict_logits
    from fastunlearn.models import create_model
    from fastunlearn.studies.audit import membership, ulira_by_target
    from fastunlearn.studies.config import parse_forget
    from fastunlearn.studies.pool import _warm_up
    from fastunlearn.studies.selection import Selection, resolve_hard_forget
    from fastunlearn.train import TrainConfig, train

    data = load_dataset(args.dataset)
    n = len(data.train_labels)
    first_model, first_train = RECIPES[args.recipes[0]]
    sel = Selection(args.dataset, first_model, {**first_train, "eval_every": 0}, seed=0)
    spec = resolve_hard_forget(parse_forget(args.forget), sel, Path(args.pool), progress=True)
    forget = torch.tensor(spec["ids"])
    member = membership(n, args.shadows, 0)  # the audit's layout (seed 0)
    view = DataPart(data, "train", forget)
    _warm_up()
    rows, base = [], None
    for name in args.recipes:
        model, recipe = RECIPES[name]
        secs, train_acc, test_acc, phi = [], [], [], []
        for i in range(-1, args.shadows):  # i = -1: the warm-up model, not counted
            h = torch.nonzero(member[max(i, 0)]).flatten()
            sub = dataclasses.replace(data, train_images=data.train_images[h],
                                      train_labels=data.train_labels[h])
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(i)
                net = create_model(model, sub)
            cfg = TrainConfig(**recipe, seed=1000 + i, progress=False, eval_every=0)
            with measure(torch.device("cpu")) as m:
                train(net, sub.train, cfg, eval_on={})
            if i < 0:
                continue
            secs.append(m.seconds)
            train_acc.append(accuracy(net, sub.train))
            test_acc.append(accuracy(net, sub.test))
            phi.append(np.asarray(A.logit_scaled_confidence(predict_logits(net, view),
                                                            view.labels), dtype=np.float64))
            print(f"{name} shadow {i}: {m.seconds:.1f} s, train {train_acc[-1]:.2f} %, "
                  f"test {test_acc[-1]:.2f} %", flush=True)
        pos, neg = ulira_by_target(np.stack(phi), member[:, forget].numpy())
        auc = A.ulira_attack(np.concatenate(pos), np.concatenate(neg))["auc"]
        lo, hi = A.auc_ci_over_groups(pos, neg)
        med = float(np.median(secs))
        base = base or med
        rows.append({
            "recipe": name, "model": model, **{k: recipe.get(k, "") for k in (
                "epochs", "lr", "batch_size", "weight_decay", "schedule", "warmup_epochs")},
            "shadows": args.shadows, "s_per_model_median": round(med, 2),
            "s_per_model_min": round(min(secs), 2), "s_per_model_max": round(max(secs), 2),
            "speedup_vs_first": round(base / med, 2),
            "train_acc": round(float(np.mean(train_acc)), 2),
            "test_acc": round(float(np.mean(test_acc)), 2),
            "forget": args.forget, "forget_size": len(forget),
            "do_nothing_ulira_auc": round(float(auc), 4),
            "ulira_auc_lo": round(float(lo), 4), "ulira_auc_hi": round(float(hi), 4),
            "n64_pool_min_est": round(3 * 64 * med / 60, 1),
            "machine": machine_description(torch.device("cpu")),
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
        })
        print(rows[-1], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

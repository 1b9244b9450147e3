"""How well the single-run memorization proxy ranks examples like the pool estimate.

The pool estimate: the Feldman–Zhang memorization of every training example from the selection
models an audit or ``bench_pool.py`` trained (``--models`` models on random halves, the given
recipe; trained here if the pool lacks them). The proxy: one model trained on all of the
training set with the same recipe, its mean true-class confidence over the epochs
(``history.confidence``, recorded by ``fu.train``). Prints and appends one CSV row per dataset:
Spearman's ρ over all examples, and the overlap of the two top-5 % sets.

    .venv/bin/python benchmarks/memorization_proxy.py --dataset fashion-mnist-10k \\
        --pool runs/bench_pool/pool --csv benchmarks/results/memorization_proxy.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="fashion-mnist-10k")
    ap.add_argument("--model", default="small_cnn")
    ap.add_argument("--recipe", default='{"epochs": 30, "lr": 0.05, "batch_size": 128}',
                    help="training recipe (JSON) of the selection models and the proxy model")
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--pool", default="runs/bench_pool/pool")
    ap.add_argument("--csv", default="benchmarks/results/memorization_proxy.csv")
    args = ap.parse_args()

    import fastunlearn as fu
    from fastunlearn.evaluate.memorization import proxy_scores, spearman
    from fastunlearn.evaluate.report import machine_description
    from fastunlearn.studies.selection import Selection, resolve_hard_forget

    recipe = {**json.loads(args.recipe), "eval_every": 0}
    sel = Selection(args.dataset, args.model, recipe, seed=0, models=args.models)
    pool = Path(args.pool)
    resolve_hard_forget({"type": "memorized", "fraction": 0.05}, sel, pool)  # trains if needed
    from fastunlearn.studies.selection import memorization

    scores = memorization(sel, pool)["scores"]
    data = fu.load_dataset(args.dataset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = fu.create_model(args.model, data)
    t0 = time.perf_counter()
    fu.train(net, data.train, fu.TrainConfig(**recipe, progress=False, seed=0))
    seconds = time.perf_counter() - t0
    proxy = proxy_scores(net.fastunlearn_history.confidence.numpy())
    rho = spearman(proxy, scores)
    k = max(1, round(0.05 * len(scores)))
    top_pool = set(np.argsort(-scores, kind="stable")[:k].tolist())
    top_proxy = set(np.argsort(-proxy, kind="stable")[:k].tolist())
    row = {"dataset": args.dataset, "model": args.model, "recipe": json.dumps(recipe),
           "selection_models": args.models, "spearman": round(rho, 4),
           "top5pct_overlap": round(len(top_pool & top_proxy) / k, 4),
           "proxy_model_s": round(seconds, 1),
           "machine": machine_description(torch.device("cpu")), "date": time.strftime("%Y-%m-%d")}
    print(row)
    path = Path(args.csv)
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


if __name__ == "__main__":
    main()

"""Recipe table of the unlearning methods of issue 7 on the demo setting.

Fashion-MNIST, ``small_cnn`` trained with ``fu.TrainConfig()`` (5 epochs, seed 0), two forget
sets — class "Coat" and 10 % random samples (seed 0). For each: the gold retrain
(``RetrainConfig`` defaults, timed in the same run) and every method with its default config;
forget / retain / test accuracy and wall time, also as a ratio to the retrain of the same run.

SISA needs its own original: a 5-shard × 4-slice ensemble of ``small_cnn`` (2 epochs per
incremental stage, i.e. the sample passes of 5 ordinary epochs), trained once with
``train_sisa`` (timed) and unlearned with ``sisa``; a third forget set of 10 random samples
shows the case SISA is made for (its ratio is to the random-10 % retrain of the same run).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/recipes_methods2.py \
        [--original /tmp/fmnist_orig_m2] [--methods fisher,ssd,...] [--out ...csv]

Checkpoints are loaded from ``--original`` (a directory) when present, otherwise trained and
saved there. Prints a markdown table; writes one CSV row per (forget set, method).
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
from fastunlearn.unlearn.sisa import train_sisa

# (row label, method, config overrides, forget sets it runs on)
BOTH = ("class Coat", "random 10%")
RUNS: list[tuple[str, str, dict, tuple[str, ...]]] = [
    ("fisher", "fisher", {}, BOTH),
    ("influence", "influence", {}, BOTH),
    ("influence (diag)", "influence", {"hessian": "diag"}, BOTH),
    ("ssd", "ssd", {}, BOTH),
    ("zero_shot", "zero_shot", {}, ("class Coat",)),
    ("zero_shot (input)", "zero_shot", {"space": "input", "lr": 0.01, "epochs": 5},
     ("class Coat",)),
    ("prune (omp) + ga", "prune", {}, BOTH),
    ("prune (imp) + ga", "prune", {"kind": "imp"}, BOTH),
    ("prune (omp) + lora_ft", "prune", {"base": "lora_ft"}, BOTH),
    ("lora_ft", "lora_ft", {}, BOTH),
    ("sisa", "sisa", {}, BOTH + ("random 10",)),
]
SISA_SHARDS, SISA_SLICES, SISA_EPOCHS = 5, 4, 2
INFO_KEYS = ("alpha", "sparsity", "dampened_fraction", "shards_retrained", "retrained_samples",
             "full_training_samples", "merge_dropped_fraction", "base_stop_reason")

FIELDS = [
    "forget", "method", "forget_acc", "retain_acc", "test_acc", "test_forget_acc", "rte_s",
    "ratio_to_retrain", "info", "device", "threads", "torch", "date",
]


def original_model(data: fu.ImageDataset, root: Path) -> torch.nn.Module:
    path = root / "original.safetensors"
    try:
        return load_checkpoint(path).model
    except CheckpointError:
        pass
    torch.manual_seed(0)
    model = fu.create_model("small_cnn", data)
    fu.train(model, data.train, fu.TrainConfig(device="cpu", progress=False))
    fu.save_checkpoint(path, model, dataset=data, seed=0, train_config=fu.TrainConfig().to_dict())
    return model


def sisa_model(data: fu.ImageDataset, root: Path) -> tuple[torch.nn.Module, float | None]:
    """The SISA ensemble and its training time (None when loaded from an earlier run)."""
    path = root / f"sisa_{SISA_SHARDS}x{SISA_SLICES}.safetensors"
    try:
        ck = load_checkpoint(path)
        return ck.model, ck.meta.get("metrics", {}).get("train_seconds")
    except CheckpointError:
        pass
    cfg = fu.TrainConfig(epochs=SISA_EPOCHS, device="cpu", progress=False, eval_every=0)
    t0 = time.perf_counter()
    ens = train_sisa("small_cnn", data, SISA_SHARDS, SISA_SLICES, cfg)
    seconds = time.perf_counter() - t0
    fu.save_checkpoint(path, ens, dataset=data, seed=0, train_config=cfg.to_dict(),
                       metrics={"train_seconds": seconds})
    return ens, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--original", default="/tmp/fmnist_orig_m2", help="checkpoint directory")
    ap.add_argument("--methods", default="", help="comma-separated row labels (default: all)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results/recipes_methods2.csv"))
    args = ap.parse_args()
    wanted = {m.strip() for m in args.methods.split(",") if m.strip()}
    runs = [r for r in RUNS if not wanted or r[0] in wanted]

    root = Path(args.original)
    data = fu.load_dataset("fashion-mnist")
    orig = original_model(data, root)
    ens, sisa_train_s = (sisa_model(data, root) if any(r[1] == "sisa" for r in runs)
                         else (None, None))
    splits = {
        "class Coat": fu.forget_classes(data, ["Coat"]),
        "random 10%": fu.forget_random(data, fraction=0.1, seed=0),
        "random 10": fu.forget_random(data, count=10, seed=0),
    }
    device = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, shared)"
    stamp = dt.datetime.now().isoformat(timespec="seconds")
    rows = []
    retrain_s: dict[str, float] = {}
    for fname, split in splits.items():
        todo = [r for r in runs if fname in r[3]]
        if not todo:
            continue
        if fname != "random 10":
            rows.append({"forget": fname, "method": "original",
                         **_acc(accuracy_metrics(orig, split))})
            gold = fu.unlearn(orig, split, make_config("retrain", device="cpu", progress=False))
            retrain_s[fname] = gold.rte_s
            rows.append({"forget": fname, "method": "retrain", "rte_s": gold.rte_s,
                         "ratio_to_retrain": 1.0, **_acc(accuracy_metrics(gold.model, split))})
            print(f"[{fname}] {_fmt(rows[-1])}", flush=True)
        ref = retrain_s.get(fname, retrain_s.get("random 10%", float("nan")))
        for label, method, overrides, _ in todo:
            model = ens if method == "sisa" else orig
            if method == "sisa":
                info = f"{SISA_SHARDS} shards x {SISA_SLICES} slices"
                if sisa_train_s:
                    info += f"; ensemble trained in {sisa_train_s:.0f} s"
                rows.append({"forget": fname, "method": "sisa original", "info": info,
                             **_acc(accuracy_metrics(model, split))})
            cfg = make_config(method, device="cpu", progress=False, **overrides)
            res = fu.unlearn(model, split, cfg)
            info = "; ".join(f"{k}={_short(res.info[k])}" for k in INFO_KEYS if k in res.info)
            rows.append({
                "forget": fname, "method": label, **_acc(accuracy_metrics(res.model, split)),
                "rte_s": res.rte_s, "ratio_to_retrain": res.rte_s / ref, "info": info,
            })
            print(f"[{fname}] {_fmt(rows[-1])} {info}", flush=True)
            del res
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


def _short(v: object) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _round(v: object) -> object:
    return round(v, 3) if isinstance(v, float) else v


def _fmt(r: dict) -> str:
    return (
        f"{r['method']:22s} FA {r['forget_acc']:5.1f} RA {r['retain_acc']:5.1f} "
        f"TA {r['test_acc']:5.1f} {r.get('rte_s', 0):7.1f}s ×{r.get('ratio_to_retrain', 0):.3f}"
    )


def markdown(rows: list[dict]) -> str:
    lines = [
        "| forget set | method | forget acc | retain acc | test acc | time (s) | × retrain |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        t = f"{r['rte_s']:.1f}" if "rte_s" in r else "–"
        x = f"{r['ratio_to_retrain']:.3f}" if "ratio_to_retrain" in r else "–"
        lines.append(
            f"| {r['forget']} | {r['method']} | {r['forget_acc']:.1f} | {r['retain_acc']:.1f} "
            f"| {r['test_acc']:.1f} | {t} | {x} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()

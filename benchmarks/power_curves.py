"""Power of the audit: the forget score and U-LiRA AUC against the number of shadow models N,
from shadows subsampled out of one finished audit (one pool), with the smallest difference
between two rows that each N resolves.

Per audit directory (one forget set) and row (method, do-nothing, ceiling), for each N' in
``--sizes`` below the audit's N, ``--draws`` random draws:

* forget score — per forget example, N'/2 of the shadows that trained on it, drawn without
  replacement (the score is per example, so each example may use its own shadows), their
  unlearned and retrained φ give ε; the score × the audit's utility factor; on a fixed seeded
  subset of ``--examples`` forget examples (ε is the slow part), the same in every draw;
* U-LiRA AUC — N' shadows drawn without replacement; every one of them is the target once,
  Gaussians from the other N' − 1 (examples with no model on a side among them are left out).

The mean and standard deviation over the draws; at the audit's own N, the audit's value and the
standard deviation from its 95 % bootstrap interval. ``resolves`` = 1.96 · √2 · sd: the smallest
difference between two independent rows that is significant at 5 % with that N.

    .venv/bin/python benchmarks/power_curves.py runs/audit/fmnist10k-memorized-5 ... \\
        --csv benchmarks/results/power.csv --plot docs/img/power_curves.png
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np


def _load(audit_dir: Path) -> tuple[dict, dict[str, dict[int, dict[str, np.ndarray]]], dict]:
    from fastunlearn.studies.audit import CEILING, Task, _load_arrays, layout

    payload = json.loads((audit_dir / "audit.json").read_text())
    task = Task(**payload["task"])
    runs: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    for res_path in (audit_dir / "runs").glob("*/result.json"):
        res = json.loads(res_path.read_text())
        if res.get("key") is None:
            continue
        arrays = _load_arrays(res_path.parent)
        runs.setdefault(res["method"], {})[int(res["index"])] = arrays
    lay = layout(task)
    member_f = lay["member"][:, lay["F"]].numpy()
    gold = {i: {"forget": a["gold_forget"]} for i, a in runs[CEILING].items()}
    return payload, runs, {"member": member_f, "gold": gold, "task": task}


def _stack(runs: dict[int, dict[str, np.ndarray]], n: int, key: str = "forget") -> np.ndarray:
    return np.stack([runs[i][key] for i in range(n)])


def curves(audit_dir: Path, methods: list[str], sizes: list[int], draws: int, seed: int,
           examples: int = 0) -> list[dict]:
    from fastunlearn.evaluate import audit as A
    from fastunlearn.studies.audit import ulira_by_target

    payload, runs, ctx = _load(audit_dir)
    task, member = ctx["task"], ctx["member"]
    n_total = task.shadows
    rows_by_method = {r["method"]: r for r in payload["rows"]}
    r_f = _stack(ctx["gold"], n_total)
    rng = np.random.default_rng(seed)
    # the forget score's ε costs ~5 ms per example and draw: a fixed seeded subset of the
    # forget examples (the same in every draw, so the spread over draws is the shadows' alone)
    n_f = member.shape[1]
    keep = (np.sort(rng.choice(n_f, size=examples, replace=False)) if 0 < examples < n_f
            else np.arange(n_f))
    out = []
    label = payload["config"]["forget"]
    for m in methods:
        if m not in runs or len(runs[m]) < n_total:
            raise SystemExit(f"{audit_dir}: method {m!r} has no complete set of runs")
        u_f = _stack(runs[m], n_total)
        row = rows_by_method[m]
        factor = row["forget_score"] / row["forget_score_raw"] if row["forget_score_raw"] else 1.0
        # the shadows that trained on each example: [N/2, n] indices
        in_idx = np.argsort(~member, axis=0, kind="stable")[: n_total // 2]
        for size in sizes:
            if size > n_total:
                continue
            if size == n_total:
                fs, auc = row["forget_score"], row["ulira_auc"]
                fs_sd = (row["forget_score_hi"] - row["forget_score_lo"]) / (2 * 1.96)
                auc_sd = (row["ulira_auc_hi"] - row["ulira_auc_lo"]) / (2 * 1.96)
                out.append(_row(label, m, size, 1, fs, fs_sd, auc, auc_sd))
                continue
            fss, aucs = [], []
            cols = keep
            for _ in range(draws):
                sub = in_idx[:, keep]
                pick = np.argsort(rng.random(sub.shape), axis=0)[: size // 2]
                chosen = sub[pick, np.arange(len(keep))[None, :]]   # [size/2, kept examples]
                eps = A.epsilon_scores(u_f[chosen, cols[None, :]], r_f[chosen, cols[None, :]])
                fss.append(factor * float(A.forget_score(eps, size // 2)))
                s = rng.choice(n_total, size=size, replace=False)
                pos, neg = ulira_by_target(u_f[s], member[s])
                pos_all = np.concatenate(pos)
                neg_all = np.concatenate(neg)
                pos_all, neg_all = pos_all[np.isfinite(pos_all)], neg_all[np.isfinite(neg_all)]
                aucs.append(A.rank_auc(pos_all, neg_all))
            out.append(_row(label, m, size, draws, float(np.mean(fss)), float(np.std(fss)),
                            float(np.mean(aucs)), float(np.std(aucs))))
            print(out[-1], flush=True)
    return out


def _row(label: str, method: str, size: int, draws: int, fs: float, fs_sd: float,
         auc: float, auc_sd: float) -> dict:
    k = 1.96 * math.sqrt(2)
    return {"forget": label, "method": method, "shadows": size, "draws": draws,
            "forget_score": round(fs, 4), "forget_score_sd": round(fs_sd, 4),
            "forget_score_resolves": round(k * fs_sd, 4),
            "ulira_auc": round(auc, 4), "ulira_auc_sd": round(auc_sd, 4),
            "ulira_auc_resolves": round(k * auc_sd, 4)}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # a script, not the library: no display here
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys(r["forget"] for r in rows))
    fig, axes = plt.subplots(len(settings), 2, figsize=(9, 3.0 * len(settings)), squeeze=False)
    for row_ax, setting in zip(axes, settings):
        sub = [r for r in rows if r["forget"] == setting]
        for m in dict.fromkeys(r["method"] for r in sub):
            pts = sorted((r for r in sub if r["method"] == m), key=lambda r: r["shadows"])
            x = [p["shadows"] for p in pts]
            for ax, key in zip(row_ax, ("forget_score", "ulira_auc")):
                y = np.array([p[key] for p in pts])
                sd = np.array([p[f"{key}_sd"] for p in pts])
                ax.plot(x, y, marker="o", label=m)
                ax.fill_between(x, y - sd, y + sd, alpha=0.2)
        for ax, title in zip(row_ax, ("forget score (↑)", "U-LiRA AUC (0.5 ideal)")):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("shadow models N")
            ax.set_title(f"{setting}: {title}", fontsize=9)
        row_ax[1].axhline(0.5, color="grey", lw=0.8, ls="--")
        row_ax[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("audits", nargs="+", type=Path, help="finished audit directories")
    ap.add_argument("--methods", nargs="+", default=["retrain", "original"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[8, 16, 32, 64])
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--examples", type=int, default=250,
                    help="forget examples the sub-N forget score is computed on (0: all)")
    ap.add_argument("--csv", type=Path, default=Path("benchmarks/results/power.csv"))
    ap.add_argument("--plot", type=Path, default=Path("docs/img/power_curves.png"))
    args = ap.parse_args()
    rows = []
    for d in args.audits:
        rows += curves(d, args.methods, args.sizes, args.draws, args.seed, args.examples)
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with args.csv.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot(rows, args.plot)
    print(f"wrote {args.csv} and {args.plot}")


if __name__ == "__main__":
    main()

"""Hard forget sets: the memorized / mixed / worst specs, the memorization estimate and its
proxy, selection models disjoint from the audit's shadows, and the audit on digits showing that
doing nothing is exposed on memorized examples far more than on random ones."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import fastunlearn as fu
from fastunlearn.data.hard_sets import hard_count, select_by_scores
from fastunlearn.evaluate.memorization import memorization_scores, proxy_scores, spearman
from fastunlearn.studies.audit import AuditConfig, audit, membership, pool_key
from fastunlearn.studies.config import forget_label, parse_forget
from fastunlearn.studies.selection import SELECT_SEED_OFFSET, Selection

# fine-tuning long enough at a high rate to wash out what the shadows memorised
FT = {"epochs": 30, "lr": 0.1, "batch_size": 32}
TASK = {"dataset": "digits", "model": "small_cnn", "epochs": 20, "lr": 0.05, "batch_size": 32,
        "shadows": 8, "probe_shadows": 0, "progress": False, "device": "cpu"}


# ------------------------------------------------------------------------------ specs
@pytest.mark.parametrize("text, spec", [
    ("memorized:5%", {"type": "memorized", "fraction": 0.05}),
    ("memorized:500", {"type": "memorized", "count": 500}),
    ("memorized:0.1", {"type": "memorized", "fraction": 0.1}),
    ("mixed:600", {"type": "mixed", "count": 600}),
    ("worst:5%", {"type": "worst", "fraction": 0.05}),
    ("worst:500", {"type": "worst", "count": 500}),
    ("MEMORIZED: 5%", {"type": "memorized", "fraction": 0.05}),
])
def test_hard_specs_parse(text, spec):
    assert parse_forget(text) == spec
    assert parse_forget(dict(spec)) == spec  # a spec mapping round-trips
    assert forget_label(spec).split(":")[0] == spec["type"]


@pytest.mark.parametrize("text, words", [
    ("memorised:5%", "memorized"),        # unknown kind: the message lists the valid ones
    ("memorized:0%", "percentage"),
    ("memorized:150%", "percentage"),
    ("memorized:-3", "memorized"),
    ("memorized:2.5", "memorized"),
    ("mixed:2", "at least 3"),
    ("worst:abc", "worst"),
])
def test_bad_hard_specs_give_one_line(text, words):
    with pytest.raises(ValueError) as err:
        parse_forget(text)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_hard_count_range():
    assert hard_count({"type": "memorized", "fraction": 0.05}, 1000) == 50
    assert hard_count({"type": "mixed", "count": 600}, 1000) == 600
    with pytest.raises(ValueError, match="between 1 and 99"):
        hard_count({"type": "memorized", "count": 100}, 100)


def test_cli_bad_spec_exits_2_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fastunlearn.cli", "audit", "--method", "ft",
                           "--dataset", "digits", "--forget", "memorized:200%",
                           "--out", str(tmp_path / "a"), "--no-progress"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "memorized" in lines[0], proc.stderr
    assert not (tmp_path / "a").exists()  # nothing written


# ------------------------------------------------------------------------------ selection
def test_memorized_takes_the_top_scores_deterministically():
    rng = np.random.default_rng(0)
    s = rng.normal(size=1000)
    s[[3, 10]] = np.nan  # never chosen
    ids = select_by_scores(s, {"type": "memorized", "count": 50})
    assert len(ids) == 50 and (np.diff(ids) > 0).all()
    assert s[ids].min() >= np.nanmax(np.delete(s, np.r_[ids, 3, 10]))
    ties = np.zeros(10)
    assert select_by_scores(ties, {"type": "memorized", "count": 3}).tolist() == [0, 1, 2]


def test_mixed_has_thirds_of_high_middle_low():
    s = np.arange(900, dtype=float)[::-1].copy()  # example j has score 899 - j
    ids = select_by_scores(s, {"type": "mixed", "count": 600})
    assert len(ids) == 600 and len(np.unique(ids)) == 600
    ranks = 899 - s[ids]  # 0 = most memorized
    assert (ranks < 200).sum() == 200           # high third
    assert (ranks >= 700).sum() == 200          # low third
    mid = ranks[(ranks >= 200) & (ranks < 700)]
    assert len(mid) == 200 and abs(np.median(mid) - 450) <= 101


def test_memorization_scores_match_a_loop():
    rng = np.random.default_rng(1)
    for models, n in [(8, 37), (5, 1), (16, 101)]:
        phi = rng.normal(size=(models, n))
        member = rng.random((models, n)) < 0.5
        fast = memorization_scores(phi, member)
        for j in range(n):
            ins, outs = phi[member[:, j], j], phi[~member[:, j], j]
            ref = ins.mean() - outs.mean() if len(ins) and len(outs) else np.nan
            assert np.isnan(fast[j]) if np.isnan(ref) else np.isclose(fast[j], ref)
    with pytest.raises(ValueError, match="one shape"):
        memorization_scores(np.zeros((2, 3)), np.zeros((2, 4), bool))


def test_selection_models_are_not_audit_shadows():
    sel = Selection("digits", "small_cnn", {"epochs": 20}, seed=0)
    n = 1437
    # other halves (another seed), other training seeds, other pool keys
    assert sel.select_seed == SELECT_SEED_OFFSET
    assert not torch.equal(sel.member(n), membership(n, 8, 0))
    from fastunlearn.studies.audit import Task

    task = Task("digits", "small_cnn", {"type": "random", "fraction": 0.1, "seed": 0},
                {"epochs": 20}, 8, 0)
    audit_keys = {pool_key(task, i, r) for i in range(8)
                  for r in ("original", "retrain", "retrain2")}
    select_keys = {sel.model_key(i) for i in range(-1, sel.models)}
    assert not audit_keys & select_keys
    audit_seeds = {task.seed * 1000 + i + off for i in range(8) for off in (0, 500)}
    assert not audit_seeds & {sel.train_seed(i) for i in range(-1, sel.models)}


def test_forget_by_scores_builds_a_reproducible_split():
    data = fu.load_dataset("digits")
    n = len(data.train_labels)
    scores = np.random.default_rng(0).random(n)
    split = fu.forget_by_scores(data, scores, "memorized:5%")
    again = fu.data.split_from_spec(data, json.loads(json.dumps(split.spec)))
    assert torch.equal(split.forget_idx.sort().values, again.forget_idx.sort().values)
    assert len(split.forget) == round(0.05 * n)
    assert split.spec["selected"]["type"] == "memorized"
    with pytest.raises(ValueError, match="one value per training example"):
        fu.forget_by_scores(data, scores[:10], "memorized:5%")
    with pytest.raises(ValueError, match="resolve it first"):
        fu.data.split_from_spec(data, {"type": "memorized", "fraction": 0.05})


def test_train_records_the_learning_event_proxy():
    data = fu.load_dataset("digits")
    torch.manual_seed(0)
    net = fu.create_model("small_cnn", data)
    state = torch.random.get_rng_state()
    fu.train(net, data.train, fu.TrainConfig(epochs=3, progress=False, eval_every=0))
    assert torch.equal(state, torch.random.get_rng_state())
    conf = net.fastunlearn_history.confidence
    assert conf.shape == (len(data.train_labels),)
    assert 0 <= float(conf.min()) and float(conf.max()) <= 1
    # the mean true-class confidence of an example over the epochs: late-learned examples are
    # low; the last epoch's training accuracy bounds how many are still below one half
    s = proxy_scores(conf.numpy())
    assert s.std() > 0.01


# ------------------------------------------------------------------------------ audit
@pytest.fixture(scope="module")
def hard_audits(tmp_path_factory):
    """One shared pool: the memorized:10 % audit (with its selection models) and random:10 %."""
    root = tmp_path_factory.mktemp("hard")
    torch.set_num_threads(1)
    out = {}
    for spec in ("memorized:10%", "random:10%"):
        out[spec] = audit(AuditConfig(methods=("ft", "auto"), forget=spec,
                                      pool=str(root / "pool"),
                                      method_options={"ft": FT},
                                      out=str(root / spec.split(":")[0]), **TASK))
    return out


def _row(res, method):
    return next(r for r in res.rows if r["method"] == method)


def test_doing_nothing_is_exposed_on_memorized_examples(hard_audits):
    mem, rnd = hard_audits["memorized:10%"], hard_audits["random:10%"]
    m0, r0 = _row(mem, "original"), _row(rnd, "original")
    # scored on shadows that did not select the set: the memorized set's traces are far
    # clearer than a random set's
    assert m0["ulira_auc"] > r0["ulira_auc"] + 0.1, (m0, r0)
    assert m0["ulira_auc_lo"] > r0["ulira_auc_hi"], (m0, r0)
    # retraining stays near chance on both
    for res in (mem, rnd):
        assert abs(_row(res, "retrain")["ulira_auc"] - 0.5) < 0.06, _row(res, "retrain")
    # doing nothing scores well below the ceiling on the memorized set
    assert m0["forget_score"] < 0.75 * _row(mem, "retrain")["forget_score"]


def test_fine_tuning_beats_doing_nothing_on_memorized_examples(hard_audits):
    """Where the audit has power, a method that forgets is told apart from doing nothing on
    both scores (on random:10 % of digits it is not: tests/studies/test_audit.py)."""
    mem = hard_audits["memorized:10%"]
    m0, ft = _row(mem, "original"), _row(mem, "ft")
    # measured: U-LiRA 0.79 [0.76, 0.82] → 0.73 [0.70, 0.75], forget score 0.17 → 0.19
    assert m0["ulira_auc"] - ft["ulira_auc"] > 0.03, (m0, ft)
    assert ft["forget_score"] > m0["forget_score"], (m0, ft)
    assert ft["beats_do_nothing"] is True
    # the same fine-tuning on random:10 %: U-LiRA moves by less than on the memorized set
    r0, rft = _row(hard_audits["random:10%"], "original"), _row(hard_audits["random:10%"], "ft")
    assert m0["ulira_auc"] - ft["ulira_auc"] > r0["ulira_auc"] - rft["ulira_auc"], (r0, rft)


def test_auto_forgets_memorized_examples_and_keeps_the_rest(hard_audits):
    """``auto`` at its defaults moves U-LiRA a quarter of the way or more from doing nothing
    toward chance (measured: 0.794 → 0.687, 36 % of the way — short of the halfway goal;
    ``ft`` at 30 epochs: 0.73), keeping retain accuracy within 2 points; on random:10 % it
    is no worse than doing nothing on either audit score."""
    mem = hard_audits["memorized:10%"]
    m0, a = _row(mem, "original"), _row(mem, "auto")
    assert a["ulira_auc"] <= m0["ulira_auc"] - 0.25 * (m0["ulira_auc"] - 0.5), (m0, a)
    assert a["ulira_auc"] < _row(mem, "ft")["ulira_auc"], (a, _row(mem, "ft"))
    assert a["retain_acc"] >= m0["retain_acc"] - 2.0, (m0, a)
    assert a["rte_s"] > 0
    rnd = hard_audits["random:10%"]
    r0, ra = _row(rnd, "original"), _row(rnd, "auto")
    assert ra["ulira_auc"] <= r0["ulira_auc_hi"], (r0, ra)
    assert ra["forget_score"] >= r0["forget_score_lo"], (r0, ra)


def test_memorized_audit_records_its_selection(hard_audits):
    res = hard_audits["memorized:10%"]
    payload = json.loads((res.out / "audit.json").read_text())
    forget = payload["task"]["forget"]
    assert forget["type"] == "indices" and len(forget["ids"]) == round(0.1 * 1437)
    sel = forget["selected"]
    assert sel["type"] == "memorized" and sel["by"] == "memorization"
    assert sel["selection_seed"] == SELECT_SEED_OFFSET
    with np.load(res.out / "audit.npz") as z:
        scores = z["memorization__selection"]
        scoring = z["memorization__forget_scoring"]
    # the chosen ids are the selection models' top scores
    top = np.argsort(-scores, kind="stable")[: len(forget["ids"])]
    assert sorted(top.tolist()) == forget["ids"]
    # ... and the audit's own (independent) originals also find them memorized, more than
    # the training set as a whole as the selection models see it
    assert np.nanmean(scoring) > 0.5 * np.nanmean(scores[forget["ids"]])
    assert np.nanmean(scoring) > 2 * np.nanmean(scores)
    assert "selection models" in (res.out / "report.md").read_text()


def test_resolving_again_gives_the_same_ids(hard_audits, tmp_path):
    from fastunlearn.studies.selection import resolve

    res = hard_audits["memorized:10%"]
    forget = json.loads((res.out / "audit.json").read_text())["task"]["forget"]
    sel = Selection("digits", "small_cnn", AuditConfig(**TASK).train, seed=0)
    again = resolve({"type": "memorized", "fraction": 0.1}, sel, res.out.parent / "pool")
    assert again["ids"] == forget["ids"]


def test_proxy_tracks_the_pool_estimate(hard_audits):
    """The single-run proxy (one model on all of digits) ranks examples like the pool's
    Feldman–Zhang estimate."""
    res = hard_audits["memorized:10%"]
    with np.load(res.out / "audit.npz") as z:
        scores = z["memorization__selection"]
    data = fu.load_dataset("digits")
    torch.manual_seed(0)
    net = fu.create_model("small_cnn", data)
    recipe = {k: v for k, v in AuditConfig(**TASK).train.items() if k != "eval_every"}
    fu.train(net, data.train, fu.TrainConfig(**recipe, progress=False, eval_every=0))
    proxy = proxy_scores(net.fastunlearn_history.confidence.numpy())
    # digits is learned almost perfectly, so most examples have near-zero memorization and
    # noisy ranks (ρ ≈ 0.25 measured); what the proxy is for — finding the most memorized —
    # works: its top 10 % overlaps the pool's about 4x more than chance
    assert spearman(proxy, scores) > 0.15
    k = round(0.1 * len(scores))
    overlap = len(set(np.argsort(-scores)[:k]) & set(np.argsort(-proxy)[:k])) / k
    assert overlap > 2.5 * k / len(scores), overlap


@pytest.mark.parametrize("spec", ["mixed:60", "worst:5%"])
def test_cli_audits_mixed_and_worst_end_to_end(hard_audits, spec, tmp_path):
    """One command: the selection models (shared with the memorized audit's pool for mixed,
    one full-data model for worst), the shadows and the report."""
    pool = hard_audits["memorized:10%"].out.parent / "pool"
    out = tmp_path / spec.split(":")[0]
    cmd = [sys.executable, "-m", "fastunlearn.cli", "audit", "--method", "retrain",
           "--forget", spec, "--dataset", "digits", "--model", "small_cnn", "--epochs", "20",
           "--lr", "0.05", "--batch-size", "32", "--shadows", "8", "--probe-shadows", "0",
           "--device", "cpu", "--threads", "1", "--no-progress", "--pool", str(pool),
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    forget = json.loads((out / "audit.json").read_text())["task"]["forget"]
    n = 60 if spec.startswith("mixed") else round(0.05 * 1437)
    assert len(forget["ids"]) == n and forget["selected"]["type"] == spec.split(":")[0]
    if spec.startswith("mixed"):  # the memorized audit's selection models were reused
        assert forget["selected"]["selection_models"] == 8
        assert "selection models (mixed)" not in proc.stderr
    assert "| `retrain`" in proc.stdout or "retrain" in proc.stdout


# ------------------------------------------------------------------------------ unlearn CLI
def test_unlearn_forget_memorized_uses_the_recorded_proxy(tmp_path, capsys):
    from fastunlearn.checkpoint import read_metadata
    from fastunlearn.cli import main

    orig = tmp_path / "orig.safetensors"
    assert main(["train", "--dataset", "digits", "--model", "small_cnn", "--epochs", "4",
                 "--no-progress", "--device", "cpu", "--out", str(orig)]) == 0
    proxy = read_metadata(orig)["learning_proxy"]
    assert len(proxy) == 1437
    out = tmp_path / "ga.safetensors"
    assert main(["unlearn", "--method", "ga", "--model-path", str(orig), "--forget",
                 "memorized:5%", "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    spec = read_metadata(out)["forget"]
    ids = np.argsort(-proxy_scores(np.array(proxy)), kind="stable")[: round(0.05 * 1437)]
    assert spec["ids"] == sorted(ids.tolist()) and spec["selected"]["type"] == "memorized"
    # explicit ids from a file
    idfile = tmp_path / "ids.txt"
    idfile.write_text("3\n5\n8\n")
    out2 = tmp_path / "ga_ids.safetensors"
    assert main(["unlearn", "--method", "ga", "--model-path", str(orig), "--forget",
                 f"ids:{idfile}", "--out", str(out2), "--no-progress", "--device", "cpu"]) == 0
    assert read_metadata(out2)["forget"]["ids"] == [3, 5, 8]
    capsys.readouterr()


def test_unlearn_forget_memorized_without_a_proxy_says_how(tmp_path, capsys):
    from fastunlearn.checkpoint import save_checkpoint
    from fastunlearn.cli import main

    data = fu.load_dataset("digits")
    path = save_checkpoint(tmp_path / "plain.safetensors", fu.create_model("small_cnn", data),
                           dataset=data)
    out = tmp_path / "u.safetensors"
    code = main(["unlearn", "--method", "ga", "--model-path", str(path), "--forget",
                 "mixed:30", "--out", str(out), "--no-progress", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "fastunlearn train" in err[0], err
    assert not out.exists()


def test_a_study_resolves_a_hard_spec_once(tmp_path):
    """fu.studies.run takes memorized:; the selection models go into the study's pool, and
    the resolved ids are in every run's stored spec."""
    opts = {"dataset": "digits", "epochs": 3, "methods": ("ga",), "seeds": 1,
            "progress": False, "device": "cpu", "forget": "memorized:10%"}
    res = fu.studies.run("cost-quality", out=str(tmp_path / "cq"), **opts)
    pool = tmp_path / "pool"
    assert len(list(pool.glob("select-half-*"))) == 8
    for run_dir in (tmp_path / "cq" / "runs").iterdir():
        stored = json.loads((run_dir / "result.json").read_text())
        forget = stored["run"]["forget"] if "run" in stored else stored["forget"]
        assert forget["type"] == "indices" and len(forget["ids"]) == round(0.1 * 1437)
        assert forget["selected"]["type"] == "memorized"
    again = fu.studies.run("cost-quality", out=str(tmp_path / "cq"), **opts)
    assert again.counts["ran"] == 0 and res.counts["ran"] > 0  # same ids, same keys

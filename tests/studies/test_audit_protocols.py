"""The challenge protocol of the audit (google-deepmind/unlearning_evaluation ``main.py``): one
original on all of the data, unlearning runs that differ only in the method's seed, against
retrains without the forget set."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fastunlearn.studies.audit import AuditConfig, Task, audit, pool_key

TASK = {"dataset": "digits", "model": "small_cnn", "epochs": 20, "lr": 0.05, "batch_size": 32,
        "shadows": 8, "probe_shadows": 0, "progress": False, "device": "cpu"}
FT = {"epochs": 10, "lr": 0.1, "batch_size": 32}


@pytest.fixture(scope="module")
def challenge_audit(tmp_path_factory):
    out = tmp_path_factory.mktemp("challenge") / "audit"
    torch.set_num_threads(1)
    return audit(AuditConfig(methods=("ft",), forget="random:10%", out=str(out),
                             protocol="challenge", method_options={"ft": FT}, **TASK))


def _row(res, method):
    return next(r for r in res.rows if r["method"] == method)


def test_deterministic_do_nothing_scores_zero_and_retrain_does_not(challenge_audit):
    orig, gold = _row(challenge_audit, "original"), _row(challenge_audit, "retrain")
    # every do-nothing run is the same model: the "peaky" rule gives ε = 50 per example
    assert orig["forget_score"] == 0.0
    assert gold["forget_score"] > 0.1, gold
    assert math.isnan(orig["ulira_auc"])  # U-LiRA needs never-seen forget examples


def test_a_seeded_method_moves_off_zero(challenge_audit):
    """Runs of a method that differ in its seed spread like retrains a little: its score
    leaves the deterministic do-nothing's exact 0 (0.008 in one run, above 0.02 in another, on
    one CPU with other tests before it or not), and the
    bootstrap interval excludes 0."""
    ft = _row(challenge_audit, "ft")
    assert ft["forget_score"] > 0 and ft["forget_score_lo"] > 0, ft
    assert ft["forget_score"] < _row(challenge_audit, "retrain")["forget_score"], ft


def test_challenge_records_its_protocol_and_pool(challenge_audit):
    payload = json.loads((challenge_audit.out / "audit.json").read_text())
    assert payload["config"]["protocol"] == "challenge"
    assert payload["task"]["protocol"] == "challenge"
    # one original (index 0) trained on all of the data, 8 + 8 retrains
    assert payload["counts"]["pool_trained"] + payload["counts"]["pool_reused"] == 17
    task = Task(**payload["task"])
    lira = Task(**{**payload["task"], "protocol": "lira"})
    assert pool_key(task, 0, "original") != pool_key(lira, 0, "original")
    assert "Protocol `challenge`" in (challenge_audit.out / "report.md").read_text()


def test_bad_protocol_is_one_line():
    with pytest.raises(ValueError, match="protocol must be one of lira, challenge"):
        AuditConfig(methods=("ft",), protocol="lira2")

"""SISA: sharded training, exact unlearning of affected shards only, checkpoints, aggregation."""

import pytest
import torch

from fastunlearn.checkpoint import load_checkpoint
from fastunlearn.data import forget_classes, forget_indices
from fastunlearn.evaluate.accuracy import accuracy_metrics
from fastunlearn.inference import accuracy
from fastunlearn.models import create_model
from fastunlearn.models.ensemble import SISAEnsemble
from fastunlearn.train import TrainConfig
from fastunlearn.unlearn import unlearn
from fastunlearn.unlearn.sisa import SISAConfig, partition, train_sisa

SHARDS, SLICES = 3, 3
COMMON = {"device": "cpu", "progress": False}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread for this module: on the shared 2-core box two threads make these
    small-tensor tests ~10x slower (tests/conftest.py sets two)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cfg():
    return TrainConfig(epochs=4, lr=0.05, batch_size=32, device="cpu", progress=False,
                       eval_every=0, seed=0)


@pytest.fixture(scope="module")
def ensemble(digits):
    return train_sisa("small_cnn", digits, SHARDS, SLICES, _cfg())


def _equal_members(a, b, shards):
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa
               if any(k.startswith(f"{p}.{s}.") for s in shards
                      for p in ("members", "slice_checkpoints")))


def test_ensemble_is_a_model(digits, ensemble):
    assert isinstance(ensemble, SISAEnsemble)
    assert ensemble(digits.test.tensors()[0][:5]).shape == (5, 10)
    assert accuracy(ensemble, digits.test) > 85
    counts = torch.bincount(ensemble.shard_of, minlength=SHARDS)
    assert counts.sum() == len(digits.train_labels) and counts.max() - counts.min() <= 1


def test_unlearning_retrains_only_affected_shards_and_equals_fresh_training(digits, ensemble):
    # three samples, chosen to sit in shards 0 (slice 1) and 2 (slices 2 and 1); shard 1 clean
    shard_of, slice_of = ensemble.shard_of, ensemble.slice_of
    pick = [int(torch.nonzero((shard_of == 0) & (slice_of == 1))[0]),
            int(torch.nonzero((shard_of == 2) & (slice_of == 2))[0]),
            int(torch.nonzero((shard_of == 2) & (slice_of == 1))[3])]
    split = forget_indices(digits, pick)
    res = unlearn(ensemble, split, SISAConfig(**COMMON))
    info = res.info
    assert info["shards_retrained"] == 2 and info["retrained_shard_ids"] == "0,2"
    assert info["first_slices"] == "0:1,2:1"
    # counted: epochs × (slices 0-1, then 0-2) of each retrained shard, forget samples removed
    new = res.model
    expect = sum(_cfg().epochs * len(new.shard_indices(s, r)) for s in (0, 2) for r in (1, 2))
    assert info["retrained_samples"] == expect < info["full_training_samples"]
    assert (new.shard_of[split.forget_idx] == -1).all()
    assert _equal_members(new, ensemble, [1])  # the clean shard was not touched
    assert not _equal_members(new, ensemble, [0])
    # and the result is what SISA training without those samples gives, bit for bit
    fresh = train_sisa("small_cnn", digits, SHARDS, SLICES, _cfg(), exclude=split.forget_idx)
    assert _equal_members(new, fresh, range(SHARDS))
    assert torch.equal(new.shard_of, fresh.shard_of)


def test_class_forgetting_with_sisa(digits, ensemble):
    split = forget_classes(digits, ["3"])
    before = accuracy_metrics(ensemble, split)
    res = unlearn(ensemble, split, SISAConfig(**COMMON))
    after = accuracy_metrics(res.model, split)
    assert after["forget_acc"] < 10 and after["retain_acc"] > before["retain_acc"] - 5
    assert res.info["shards_retrained"] == SHARDS  # a class lives in every shard


def test_checkpoint_round_trip_keeps_slices_and_unlearns(tmp_path, digits, ensemble):
    from fastunlearn.checkpoint import save_checkpoint

    path = save_checkpoint(tmp_path / "sisa.safetensors", ensemble, dataset=digits)
    loaded = load_checkpoint(path).model
    assert isinstance(loaded, SISAEnsemble)
    x = digits.test.tensors()[0][:16]
    assert torch.equal(loaded(x), ensemble(x))
    split = forget_indices(digits, [int(torch.nonzero(ensemble.shard_of == 1)[0])])
    a = unlearn(loaded, split, SISAConfig(**COMMON)).model
    b = unlearn(ensemble, split, SISAConfig(**COMMON)).model
    assert _equal_members(a, b, range(SHARDS))


def test_train_sisa_writes_a_checkpoint(tmp_path, digits):
    cfg = TrainConfig(epochs=1, batch_size=64, device="cpu", progress=False, eval_every=0)
    out = tmp_path / "ens.safetensors"
    ens = train_sisa("small_cnn", digits, 2, 1, cfg, out)
    ck = load_checkpoint(out)
    assert ck.meta["sisa"] == {"shards": 2, "slices": 1, "aggregate": "logits"}
    assert ck.meta["model"]["kwargs"]["recipe"]["epochs"] == 1
    assert all(torch.equal(v, ck.model.state_dict()[k]) for k, v in ens.state_dict().items())


def test_aggregation_modes(digits):
    torch.manual_seed(0)
    ens = create_model("sisa_ensemble", digits, shards=3, train_size=10, aggregate="vote")
    x = digits.test.tensors()[0][:32]
    with torch.no_grad():
        member = ens.member_logits(x)
        votes = torch.nn.functional.one_hot(member.argmax(-1), 10).sum(0)
        out = ens(x)
        assert torch.allclose(out.exp().sum(1), torch.ones(32))
        top = votes.max(1).values
        assert (votes.gather(1, out.argmax(1, keepdim=True)).squeeze(1) == top).all()
        ens.aggregate = "logits"
        assert torch.allclose(ens(x), member.mean(0))
        ens.aggregate = "probs"
        assert torch.allclose(ens(x).exp(), member.softmax(-1).mean(0), atol=1e-6)


def test_partition_is_seeded_and_balanced():
    a, ra = partition(103, 4, 3, seed=1)
    b, rb = partition(103, 4, 3, seed=1)
    assert torch.equal(a, b) and torch.equal(ra, rb)
    assert not torch.equal(a, partition(103, 4, 3, seed=2)[0])
    sizes = torch.bincount(a * 3 + ra, minlength=12)
    assert sizes.sum() == 103 and sizes.max() - sizes.min() <= 1


def test_sisa_refuses_plain_models_and_recipe_overrides(digits, digits_original):
    split = forget_indices(digits, [0])
    with pytest.raises(ValueError, match="not a SISA ensemble"):
        unlearn(digits_original, split, SISAConfig(**COMMON))
    with pytest.raises(ValueError, match="epochs cannot be set"):
        SISAConfig(epochs=3)
    with pytest.raises(ValueError, match="shards"):
        partition(5, 3, 2, seed=0)


def test_cli_unlearns_and_evaluates_an_ensemble_checkpoint(tmp_path, digits, capsys):
    from fastunlearn.checkpoint import read_metadata
    from fastunlearn.cli import main

    cfg = TrainConfig(epochs=1, batch_size=64, device="cpu", progress=False, eval_every=0)
    src = tmp_path / "ens.safetensors"
    train_sisa("small_cnn", digits, 2, 2, cfg, src)
    out = tmp_path / "unlearned.safetensors"
    assert main(["unlearn", "--method", "sisa", "--model-path", str(src), "--forget-type",
                 "sample", "--forget-count", "4", "--device", "cpu", "--no-progress",
                 "--out", str(out)]) == 0
    meta = read_metadata(out)
    assert meta["metrics"]["retrained_samples"] > 0 and meta["model"]["name"] == "sisa_ensemble"
    assert isinstance(load_checkpoint(out).model, SISAEnsemble)
    assert main(["evaluate", "--model-path", str(out), "--json"]) == 0
    assert '"forget_acc"' in capsys.readouterr().out


def test_partition_is_independent_of_a_random_forget_set_with_the_same_seed(digits):
    from fastunlearn.data import forget_random

    split = forget_random(digits, fraction=0.2, seed=0)
    shard_of, slice_of = partition(len(digits.train_labels), 4, 3, seed=0)
    per_shard = torch.bincount(shard_of[split.forget_idx], minlength=4)
    assert (per_shard > 0.1 * len(split.forget)).all(), per_shard
    assert len(set(slice_of[split.forget_idx].tolist())) == 3

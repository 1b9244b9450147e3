"""Reference Fisher kernels: vmap per-sample gradients vs the batch-size-1 loop, on odd shapes."""

import pytest
import torch
from torch import nn

from fastunlearn.kernels import (
    fisher_diagonal,
    per_sample_grads,
    torch_fisher_diagonal_loop,
    torch_per_sample_grads_loop,
)

TOL = {torch.float64: {"rtol": 1e-9, "atol": 1e-12}, torch.float32: {"rtol": 1e-4, "atol": 1e-6}}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread for this module: on the shared 2-core box two threads make these
    small-tensor tests ~10x slower (tests/conftest.py sets two)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _odd_net(dtype=torch.float64, bn=False):
    """Conv (stride 2) on 11×13 images → 41 → 7 classes; optional batch norm."""
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 5, 3, stride=2, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(5))
    layers += [nn.ReLU(), nn.Flatten(), nn.Linear(5 * 6 * 7, 41), nn.Tanh(), nn.Linear(41, 7)]
    net = nn.Sequential(*layers).to(dtype)
    if bn:  # non-trivial running statistics
        net.train()
        with torch.no_grad():
            net(torch.randn(32, 3, 11, 13, dtype=dtype))
    return net


def _data(n=9, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, 11, 13, generator=g, dtype=dtype)
    return x, torch.randint(0, 7, (n,), generator=g)


def _close(a, b, dtype):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape, k
        torch.testing.assert_close(a[k], b[k], **TOL[dtype], msg=k)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("bn", [False, True])
def test_per_sample_grads_match_loop(dtype, bn):
    net = _odd_net(dtype, bn)
    x, y = _data(dtype=dtype)
    got = per_sample_grads(net, x, y)
    assert next(iter(got.values())).shape[0] == len(y)
    _close(got, torch_per_sample_grads_loop(net, x, y), dtype)


def test_per_sample_grads_are_gradients_of_each_sample_alone():
    net = _odd_net()
    x, y = _data(5)
    psg = per_sample_grads(net, x, y)
    net.eval()
    loss = nn.functional.cross_entropy(net(x[2:3]), y[2:3], reduction="sum")
    grads = torch.autograd.grad(loss, list(net.parameters()))
    for (name, _), g in zip(net.named_parameters(), grads):
        torch.testing.assert_close(psg[name][2], g, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("labels", ["data", "expected"])
@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_fisher_diagonal_matches_loop_any_chunking(labels, chunk):
    net = _odd_net()
    x, y = _data(9)
    got = fisher_diagonal(net, x, y, labels=labels, chunk_size=chunk)
    _close(got, torch_fisher_diagonal_loop(net, x, y, labels=labels), torch.float64)


def test_fisher_model_labels_match_loop_with_same_generator():
    net = _odd_net()
    x, _ = _data(9)
    a = fisher_diagonal(net, x, labels="model", chunk_size=64,
                        generator=torch.Generator().manual_seed(3))
    b = torch_fisher_diagonal_loop(net, x, labels="model",
                                   generator=torch.Generator().manual_seed(3))
    _close(a, b, torch.float64)
    c = fisher_diagonal(net, x, labels="model", generator=torch.Generator().manual_seed(4))
    assert any(not torch.allclose(a[k], c[k]) for k in a)  # other draws, other Fisher


def test_fisher_is_sum_of_squared_per_sample_grads_and_loader_equals_tensor():
    net = _odd_net()
    x, y = _data(10)
    psg = per_sample_grads(net, x, y)
    direct = fisher_diagonal(net, x, y, chunk_size=3)
    via_loader = fisher_diagonal(net, loader=[(x[:4], y[:4]), (x[4:], y[4:])])
    for k in psg:
        torch.testing.assert_close(direct[k], psg[k].pow(2).sum(0), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(via_loader[k], direct[k], rtol=1e-10, atol=1e-12)


def test_small_cnn_matches_loop_in_float64(digits):
    from fastunlearn.models import create_model

    torch.manual_seed(0)
    net = create_model("small_cnn", digits).double()
    x, y = digits.test.tensors()
    x, y = x[:7].double(), y[:7]
    _close(fisher_diagonal(net, x, y, chunk_size=4), torch_fisher_diagonal_loop(net, x, y),
           torch.float64)


def test_mode_restored_frozen_params_skipped_and_buffers_untouched():
    net = _odd_net(bn=True)
    net[0].bias.requires_grad_(False)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = _data(6)
    out = fisher_diagonal(net, x, y)
    assert net.training
    assert "0.bias" not in out and "0.weight" in out
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"labels": "true"}, "labels must be one of"),
     ({}, "exactly one of x"),
     ({"x": torch.zeros(2, 3, 11, 13, dtype=torch.float64)}, "needs y"),
     ({"x": torch.zeros(2, 3, 11, 13, dtype=torch.float64), "y": torch.zeros(3, dtype=torch.long)},
      "2 samples but y has 3"),
     ({"x": torch.zeros(2, 3, 11, 13, dtype=torch.float64), "chunk_size": 0}, "chunk_size")],
)
def test_bad_input_is_a_clear_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fisher_diagonal(_odd_net(), **kwargs)


class _ChannelsLast(nn.Module):
    """``contiguous(memory_format=channels_last)`` has no vmap batching rule."""

    def __init__(self):
        super().__init__()
        self.net = _odd_net()

    def forward(self, x):
        return self.net(x.contiguous(memory_format=torch.channels_last))


def test_model_vmap_cannot_trace_falls_back_to_loop_with_one_warning(caplog):
    net = _ChannelsLast()
    x, y = _data(4)
    with caplog.at_level("WARNING", logger="fastunlearn.kernels.fisher"):
        got = per_sample_grads(net, x, y)
        per_sample_grads(net, x, y)
    assert sum("per-sample loop" in r.message for r in caplog.records) == 1
    _close(got, torch_per_sample_grads_loop(net, x, y), torch.float64)

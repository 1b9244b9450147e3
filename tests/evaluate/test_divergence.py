import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy as scipy_entropy

from fastunlearn.evaluate.divergence import entropy, js_divergence, kl_divergence


def _random_dists(n: int, c: int, seed: int, zeros: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n, c, generator=g, dtype=torch.float64) ** 3  # skewed, like softmax outputs
    if zeros:
        p[torch.rand(n, c, generator=g) < 0.3] = 0.0
        p[:, 0] += 1e-3  # keep every row non-empty
    return p / p.sum(1, keepdim=True)


@pytest.mark.parametrize("zeros", [False, True])
@pytest.mark.parametrize("c", [2, 10, 37])
def test_js_equals_scipy_jensenshannon_squared(c, zeros):
    p, q = _random_dists(50, c, 1, zeros), _random_dists(50, c, 2, zeros)
    ours = js_divergence(p, q).numpy()
    ref = jensenshannon(p.numpy(), q.numpy(), base=2, axis=1) ** 2
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)
    assert (ours >= 0).all() and (ours <= 1 + 1e-12).all()
    np.testing.assert_allclose(js_divergence(q, p).numpy(), ours, rtol=1e-12)  # symmetric


def test_js_of_identical_is_zero_and_disjoint_is_one():
    p = _random_dists(5, 4, 3)
    assert torch.allclose(js_divergence(p, p), torch.zeros(5, dtype=torch.float64), atol=1e-15)
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert torch.allclose(js_divergence(a, a.flip(1)), torch.ones(2, dtype=torch.float64))


def test_js_is_not_kl():
    """The peers' bug: KL(p‖q) (or one-sided KL to m) in place of JS."""
    p, q = _random_dists(20, 5, 4), _random_dists(20, 5, 5)
    assert not torch.allclose(js_divergence(p, q), kl_divergence(p, q, base=2))
    m = 0.5 * (p + q)
    assert not torch.allclose(js_divergence(p, q), kl_divergence(p, m, base=2))


@pytest.mark.parametrize("zeros", [False, True])
def test_entropy_and_kl_equal_scipy(zeros):
    p, q = _random_dists(40, 7, 6, zeros), _random_dists(40, 7, 7)
    np.testing.assert_allclose(entropy(p).numpy(), scipy_entropy(p.numpy(), axis=1), rtol=1e-10)
    np.testing.assert_allclose(entropy(p, base=2).numpy(), scipy_entropy(p.numpy(), base=2, axis=1),
                               rtol=1e-10)
    np.testing.assert_allclose(kl_divergence(p, q).numpy(),
                               scipy_entropy(p.numpy(), q.numpy(), axis=1), rtol=1e-10)


def test_kl_infinite_where_q_is_zero():
    p = torch.tensor([[0.5, 0.5]])
    q = torch.tensor([[1.0, 0.0]])
    assert torch.isinf(kl_divergence(p, q)).all()
    assert torch.isfinite(kl_divergence(q, p)).all()


def test_uniform_entropy_is_log_c():
    p = torch.full((3, 10), 0.1)
    assert torch.allclose(entropy(p), torch.full((3,), np.log(10), dtype=torch.float64))


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="same shape"):
        js_divergence(torch.ones(2, 3) / 3, torch.ones(2, 4) / 4)
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        entropy(torch.ones(3))
    with pytest.raises(ValueError, match="log base"):
        entropy(torch.ones(1, 2) / 2, base=1.0)

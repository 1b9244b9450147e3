"""fisher_diagonal(impl="auto") — the fast path — agrees with the vmap reference."""

import pytest
import torch

from fastunlearn.kernels import fisher_diagonal
from fastunlearn.models import create_model


@pytest.mark.parametrize("name", ["small_cnn", "resnet18"])
@pytest.mark.parametrize("labels", ["data", "model", "expected"])
def test_fast_dispatch_matches_reference(name, labels):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, in_chans=1, img_size=(7, 9)).eval()
    x, y = torch.randn(11, 1, 7, 9), torch.randint(0, 5, (11,))
    loader = [(x[:6], y[:6]), (x[6:], y[6:])]
    kw = {"loader": loader, "labels": labels, "chunk_size": 4}
    ref = fisher_diagonal(model, impl="reference", generator=torch.Generator().manual_seed(1), **kw)
    fast = fisher_diagonal(model, impl="auto", generator=torch.Generator().manual_seed(1), **kw)
    assert ref.keys() == fast.keys()
    for n in ref:
        torch.testing.assert_close(fast[n], ref[n], rtol=1e-4, atol=1e-7, msg=n)


def test_bad_impl():
    model = create_model("lenet5", num_classes=3, in_chans=1, img_size=8)
    with pytest.raises(ValueError, match="impl must be"):
        fisher_diagonal(model, torch.randn(2, 1, 8, 8), torch.tensor([0, 1]), impl="gpu")


def test_pruned_models_take_the_reference_path():
    from torch.nn.utils import prune

    from fastunlearn.kernels import fast_fisher_supported

    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=3, in_chans=1, img_size=8).eval()
    assert fast_fisher_supported(model)
    prune.l1_unstructured(model.classifier[0], "weight", amount=0.5)
    assert not fast_fisher_supported(model)
    x, y = torch.randn(5, 1, 8, 8), torch.randint(0, 3, (5,))
    auto = fisher_diagonal(model, x, y)
    ref = fisher_diagonal(model, x, y, impl="reference")
    for n in ref:
        torch.testing.assert_close(auto[n], ref[n])

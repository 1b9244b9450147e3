"""Fused token Fisher: the torch reference against a per-sample loop, the Triton kernel
(interpreted on CPU) against the reference on odd shapes, strides and dtypes, and
fast_fisher_diagonal with the fused path forced against its torch rules."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

pytest.importorskip("triton")

from fastunlearn.kernels import fisher_fast, fisher_triton  # noqa: E402
from fastunlearn.kernels.fisher_fast import fast_fisher_diagonal  # noqa: E402
from fastunlearn.kernels.fisher_triton import (  # noqa: E402
    torch_token_fisher,
    triton_token_fisher,
)

# relative to the largest entry: the kernel and the reference see the same rounded inputs and
# both accumulate in fp32, so only the summation order differs
TOL = {torch.float32: 1e-5, torch.float16: 1e-4, torch.bfloat16: 1e-4}


def _rel_err(got: Tensor, ref: Tensor) -> float:
    return ((got.float() - ref.float()).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def _loop_fisher(a: Tensor, g: Tensor, w: Tensor | None = None) -> Tensor:
    """Per sample: ``G_n = g_nᵀ a_n``, squared, added up — obviously correct, but slow."""
    out = torch.zeros(g.shape[2], a.shape[2], dtype=torch.float64)
    for n in range(a.shape[0]):
        gn = g[n].double().t() @ a[n].double()
        out += (1.0 if w is None else float(w[n])) * gn * gn
    return out


@pytest.fixture
def device(monkeypatch: pytest.MonkeyPatch) -> str:
    """CUDA when present; otherwise Triton's interpreter on CPU (TRITON_INTERPRET=1 is read
    when the kernel is defined, so the cached kernel is dropped before and after)."""
    if torch.cuda.is_available():
        return "cuda"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(fisher_triton, "_kernel", None)
    return "cpu"


def test_reference_matches_per_sample_loop() -> None:
    a, g, w = torch.randn(4, 6, 9), torch.randn(4, 6, 5), torch.rand(4)
    assert _rel_err(torch_token_fisher(a, g), _loop_fisher(a, g)) < 1e-6
    assert _rel_err(torch_token_fisher(a, g, w), _loop_fisher(a, g, w)) < 1e-6


# (N, T, I, O): T=1; O=7 and I=401 (tiles padded by masking past the ends); tiles exactly 16;
# T crossing the token block; N=1
SHAPES = [(3, 1, 401, 7), (2, 16, 16, 16), (3, 37, 23, 41), (1, 5, 3, 2)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_triton_matches_reference(shape: tuple[int, int, int, int], dtype: torch.dtype,
                                  device: str) -> None:
    n, t, i, o = shape
    a = torch.randn(n, t, i, device=device).to(dtype)
    g = torch.randn(n, t, o, device=device).to(dtype)
    got = triton_token_fisher(a, g)
    assert got.dtype == torch.float32 and got.shape == (o, i)
    assert _rel_err(got, torch_token_fisher(a, g)) < TOL[dtype]


def test_non_contiguous_inputs(device: str) -> None:
    # a: [N, T, I] as a transposed unfold ([N, I, T] storage); g: permuted and step-sliced
    a = torch.randn(3, 19, 11, device=device).transpose(1, 2)
    g = torch.randn(30, 3, 11, device=device).permute(1, 2, 0)[:, :, ::2]
    assert not a.is_contiguous() and not g.is_contiguous()
    ref = torch_token_fisher(a, g)
    assert _rel_err(triton_token_fisher(a, g), ref) < TOL[torch.float32]
    assert _rel_err(triton_token_fisher(a.contiguous(), g.contiguous()), ref) < 1e-5


@pytest.mark.parametrize("split", [1, 2, 9])
def test_weights_and_split(split: int, device: str) -> None:
    a, g = torch.randn(5, 4, 18, device=device), torch.randn(5, 4, 20, device=device)
    w = torch.rand(5, device=device, dtype=torch.float64)  # converted to fp32 by the launcher
    got = triton_token_fisher(a, g, w, split=split)
    assert _rel_err(got.cpu(), _loop_fisher(a.cpu(), g.cpu(), w.cpu())) < 1e-5


def test_block_sizes_and_mixed_dtypes(device: str) -> None:
    a, g = torch.randn(2, 40, 33, device=device), torch.randn(2, 40, 17, device=device)
    ref = torch_token_fisher(a, g)
    got = triton_token_fisher(a, g, block_o=16, block_i=32, block_t=16)
    assert _rel_err(got, ref) < TOL[torch.float32]
    got = triton_token_fisher(a.half(), g)  # promoted to one operand dtype
    assert _rel_err(got, torch_token_fisher(a.half().float(), g)) < TOL[torch.float32]
    assert _rel_err(triton_token_fisher(a, g, allow_tf32=True), ref) < 1e-2


def test_empty_inputs_give_zeros() -> None:
    f = triton_token_fisher(torch.zeros(2, 0, 3), torch.zeros(2, 0, 4))
    assert torch.equal(f, torch.zeros(4, 3))
    assert torch.equal(triton_token_fisher(torch.zeros(0, 2, 3), torch.zeros(0, 2, 4)),
                       torch.zeros(4, 3))


def test_bad_input() -> None:
    a = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="must be"):
        triton_token_fisher(a, torch.randn(2, 3))
    with pytest.raises(ValueError, match="share N and T"):
        triton_token_fisher(a, torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match="weights must have shape"):
        triton_token_fisher(a, torch.randn(2, 3, 5), torch.ones(3))
    with pytest.raises(ValueError, match="float16/bfloat16/float32"):
        triton_token_fisher(a.double(), torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="power of two"):
        triton_token_fisher(a, torch.randn(2, 3, 5), block_t=8)
    with pytest.raises(ValueError, match="split"):
        triton_token_fisher(a, torch.randn(2, 3, 5), split=0)


# --------------------------------------------------------------------- dispatch -------------
class _TinyConv(nn.Module):
    """A groups=1 conv with bias (fused), a strided one without bias (fused), a grouped one
    (stays on the torch rule), a conv called twice (fused, calls joined) and a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 6, (3, 2), stride=2, bias=False)
        self.c3 = nn.Conv2d(6, 6, 1, groups=3)
        self.c4 = nn.Conv2d(6, 5, 1)
        self.head = nn.Linear(5, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.c3(torch.relu(self.c2(torch.relu(self.c1(x)))))
        x = self.c4(x) + self.c4(x.flip(-1))
        return self.head(x.mean((2, 3)))


class _TinyTokens(nn.Module):
    """Token Linears (one with bias, one without, one called twice) on [B, T, d]."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 6)
        self.mix = nn.Linear(6, 6, bias=False)
        self.head = nn.Linear(6, 4)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.nn.functional.gelu(self.embed(x))
        h = self.mix(h) + self.mix(h.flip(1))
        return self.head(h.mean(1))


def _compare_impls(model: nn.Module, x: Tensor, y: Tensor, monkeypatch: pytest.MonkeyPatch,
                   tol: float = 1e-5, **kw) -> int:
    """Fisher with the fused path forced vs the torch rules; returns the kernel calls."""
    calls = []

    def counted(*args, **kwargs) -> Tensor:
        calls.append(1)
        return triton_token_fisher(*args, **kwargs)

    monkeypatch.setattr(fisher_triton, "triton_token_fisher", counted)
    monkeypatch.setattr(fisher_fast, "TOKEN_FISHER_IMPL", "torch")
    ref = fast_fisher_diagonal(model, x, y, **kw)
    assert not calls
    monkeypatch.setattr(fisher_fast, "TOKEN_FISHER_IMPL", "triton")
    got = fast_fisher_diagonal(model, x, y, **kw)
    assert got.keys() == ref.keys()
    for name in ref:
        assert got[name].shape == ref[name].shape and got[name].dtype == ref[name].dtype, name
        assert _rel_err(got[name], ref[name]) < tol, name
    return len(calls)


@pytest.mark.parametrize("chunk_elems", [fisher_fast.DEFAULT_CHUNK_ELEMS, 200])
def test_forced_triton_path_matches_torch_conv(chunk_elems: int, device: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    model = _TinyConv().to(device)
    x, y = torch.randn(5, 2, 6, 5, device=device), torch.randint(0, 3, (5,), device=device)
    w = torch.rand(5, device=device)
    n = _compare_impls(model, x, y, monkeypatch, weights=w, chunk_elems=chunk_elems)
    # c1, c2, c4 fused (c3 is grouped); small chunks split the batch into several launches
    assert n == 3 if chunk_elems == fisher_fast.DEFAULT_CHUNK_ELEMS else n > 3


def test_forced_triton_path_matches_torch_tokens(device: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    model = _TinyTokens().to(device)
    x, y = torch.randn(4, 5, 3, device=device), torch.randint(0, 4, (4,), device=device)
    assert _compare_impls(model, x, y, monkeypatch) == 2  # embed, mix (head is [B, d])
    assert _compare_impls(model, x, y, monkeypatch, weights=torch.rand(4, device=device)) == 2


def test_auto_keeps_torch_path_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs) -> Tensor:
        raise AssertionError("the fused kernel must not run on CPU under 'auto'")

    monkeypatch.setattr(fisher_triton, "triton_token_fisher", fail)
    assert fisher_fast.TOKEN_FISHER_IMPL == "auto"
    model = _TinyTokens()
    f = fast_fisher_diagonal(model, torch.randn(2, 3, 3), torch.tensor([0, 1]))
    assert f["mix.weight"].abs().sum() > 0


def test_bad_impl_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fisher_fast, "TOKEN_FISHER_IMPL", "cuda")
    with pytest.raises(ValueError, match="TOKEN_FISHER_IMPL"):
        fast_fisher_diagonal(_TinyTokens(), torch.randn(2, 3, 3), torch.tensor([0, 1]))


# --------------------------------------------------------------------- compiled -------------
@pytest.mark.parametrize("dtype, precision, tensor_cores", [("fp32", "ieee", False),
                                                            ("fp32", "tf32", True),
                                                            ("bf16", "ieee", True)])
def test_kernel_compiles_for_hopper_without_a_gpu(dtype: str, precision: str, tensor_cores: bool,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path) -> None:
    """The interpreter does not type-check like the compiler does: compile the real kernel
    for sm_90 (Triton's bundled ptxas; no device needed) and check which units it uses."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9 warns when unset
    monkeypatch.setattr(fisher_triton, "_kernel", None)
    kernel = fisher_triton._get_kernel()
    if fisher_triton._interpreted(kernel):
        pytest.skip("triton.language was imported with TRITON_INTERPRET=1")
    const = dict(HAS_WEIGHTS=True, SPLIT=4, INPUT_PRECISION=precision, UPCAST=False,
                 BLOCK_O=64, BLOCK_I=64, BLOCK_T=32)
    sig = {n: "constexpr" if n in const else f"*{dtype}" if n in ("a_ptr", "g_ptr")
           else "*fp32" if n.endswith("_ptr") else "i32" for n in kernel.arg_names}
    compiled = triton.compile(ASTSource(kernel, sig, const), target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": 4})
    assert compiled.asm["cubin"]
    assert ("wgmma" in compiled.asm["ptx"]) == tensor_cores


# --------------------------------------------------------------------- GPU ------------------
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("shape", [(64, 197, 192, 768), (32, 1024, 576, 64), (7, 3, 401, 41)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gpu_large_shapes(shape: tuple[int, int, int, int], dtype: torch.dtype) -> None:
    n, t, i, o = shape
    a = torch.randn(n, t, i, device="cuda").to(dtype)
    g = torch.randn(n, t, o, device="cuda").to(dtype)
    ref = torch_token_fisher(a, g)
    assert _rel_err(triton_token_fisher(a, g), ref) < TOL[dtype]
    if dtype == torch.float32:
        assert _rel_err(triton_token_fisher(a, g, allow_tf32=True), ref) < 1e-2


@pytest.mark.gpu
@gpu
def test_gpu_never_allocates_per_sample_grads() -> None:
    n, t, i, o = 64, 197, 192, 768  # per-sample buffer: 64·768·192·4 B = 36 MiB
    a, g = torch.randn(n, t, i, device="cuda"), torch.randn(n, t, o, device="cuda")
    triton_token_fisher(a, g)  # compile outside the measurement
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    triton_token_fisher(a, g, split=4)
    extra = torch.cuda.max_memory_allocated() - base
    assert extra < n * o * i * 4 / 4, extra


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("name, shape", [("resnet18", (16, 3, 32, 32)),
                                         ("vit_tiny", (16, 3, 32, 32))])
def test_gpu_fast_fisher_matches_torch_rules(name: str, shape: tuple[int, ...],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from fastunlearn.models import create_model

    # exact fp32 everywhere: the torch rules use cuDNN for large conv maps (TF32 by default)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    model = create_model(name, num_classes=10, in_chans=shape[1], img_size=shape[2:]).cuda()
    x = torch.randn(shape, device="cuda")
    y = torch.randint(0, 10, (shape[0],), device="cuda")
    n = _compare_impls(model, x, y, monkeypatch, tol=1e-4)
    assert n > 0
    monkeypatch.setattr(fisher_fast, "TOKEN_FISHER_IMPL", "auto")  # auto = fused on CUDA
    calls = []
    monkeypatch.setattr(fisher_triton, "triton_token_fisher",
                        lambda *a, **k: calls.append(1) or triton_token_fisher(*a, **k))
    fast_fisher_diagonal(model, x, y)
    assert len(calls) == n

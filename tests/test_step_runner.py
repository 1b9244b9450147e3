"""The engine: one step runner for every training loop (issue 15)."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastunlearn
from fastunlearn.engine import ForgetGuard, StepRunner, finish_guarded, run_epochs, seeded
from fastunlearn.engine.runner import lr_factor
from fastunlearn.train import TrainConfig, train

PACKAGE = Path(fastunlearn.__file__).parent


def _plain_lrs(lr: float, total: int, warmup: int, schedule: str) -> list[float]:
    """The schedule written out by hand (the obviously-correct reference)."""
    out = []
    for s in range(total):
        if warmup and s < warmup:
            out.append(lr * (s + 1) / warmup)
        elif schedule == "constant":
            out.append(lr)
        else:
            p = (s - warmup) / max(1, total - warmup)
            out.append(lr * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))
    return out


@pytest.mark.parametrize("schedule,warmup,total", [("cosine", 0, 7), ("cosine", 3, 11),
                                                    ("constant", 0, 5), ("constant", 2, 6)])
def test_runner_schedule_matches_reference(schedule, warmup, total):
    w = nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([w], lr=0.5)
    runner = StepRunner(opt, 0.2, total, schedule=schedule, warmup_steps=warmup, progress=False)
    seen = []
    for _ in range(total):
        seen.append(opt.param_groups[0]["lr"])
        runner.step((w - 1).pow(2).sum())
    runner.close()
    assert seen == pytest.approx(_plain_lrs(0.2, total, warmup, schedule), abs=1e-12)
    assert [lr_factor(s, total, warmup, schedule) * 0.2 for s in range(total)] == \
        pytest.approx(seen, abs=1e-12)


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))


def test_runner_step_equals_plain_loop():
    """Same model, data and optimiser: the runner's updates are the plain loop's, bit for bit
    (no hidden reordering, scaling or extra state)."""
    torch.manual_seed(0)
    a = _net()
    b = _net()
    b.load_state_dict(a.state_dict())
    xs, ys = torch.randn(6, 9, 5), torch.randint(0, 3, (6, 9))
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for x, y in zip(xs, ys):
        loss = F.cross_entropy(a(x), y)
        opt_a.zero_grad(set_to_none=True)
        loss.backward()
        opt_a.step()
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    runner = StepRunner(opt_b, 0.1, len(xs), progress=False)
    for x, y in zip(xs, ys):
        assert runner.step(F.cross_entropy(runner.net(b, x)(x), y))
    runner.close()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert runner.steps == len(xs) and runner.seconds > 0


def test_runner_nonfinite_grad_hook_clip_and_extra_updates():
    w = nn.Parameter(torch.ones(4))
    opt = torch.optim.SGD([w], lr=1.0)
    runner = StepRunner(opt, 1.0, 10, progress=False, stop_on_nonfinite=False)
    assert not runner.step(w.sum() * float("nan"))          # skipped, nothing moves
    assert torch.equal(w.detach(), torch.ones(4)) and not runner.stopped and runner.steps == 0
    # grad hook masks two coordinates; clipping bounds the update's norm
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0])
    assert runner.step((w * 10).sum(), advance=False, grad_hook=lambda: w.grad.mul_(mask),
                       clip_grad=1.0)
    moved = torch.ones(4) - w.detach()
    assert torch.equal(moved[[1, 3]], torch.zeros(2))
    assert float(moved.norm()) == pytest.approx(1.0, rel=1e-5)
    assert runner.steps == 0  # advance=False: not a step of the schedule
    runner2 = StepRunner(opt, 1.0, 10, progress=False)
    runner2.step(w.sum() * float("inf"))
    assert runner2.stop_reason == "loss is not finite"


def test_runner_callbacks_every_k_and_at_the_end():
    w = nn.Parameter(torch.zeros(1))
    calls = []

    def cb(r: StepRunner) -> str:
        calls.append(r.steps)
        return "enough" if r.steps >= 6 else ""

    runner = StepRunner(torch.optim.SGD([w], lr=0.1), None, 7, progress=False,
                        callbacks=[cb], check_every=3)
    while not runner.stopped and runner.steps < 7:
        runner.step(w.sum())
    assert calls == [3, 6] and runner.stop_reason == "enough" and runner.steps == 6
    calls.clear()
    runner = StepRunner(torch.optim.SGD([w], lr=0.1), None, 4, progress=False,
                        callbacks=[cb], check_every=3)
    for _ in range(4):
        runner.step(w.sum())
    assert calls == [3, 4]  # the last step is always checked


def test_guard_restores_on_collapse():
    """A guarded ascent that destroys the retain probe stops and restores healthy weights."""
    torch.manual_seed(1)
    x = torch.randn(64, 5)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    r = StepRunner(opt, 0.5, 50, progress=False)
    for _ in range(50):
        r.step(F.cross_entropy(model(x), y))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    guard = ForgetGuard(model, (x, y), (x[:8], y[:8]), collapse_fraction=0.9, target=None)
    assert guard.retain_start > 70
    runner = StepRunner(torch.optim.SGD(model.parameters(), lr=5.0), None, 100,
                        progress=False, callbacks=[guard])
    run = lambda: runner.step(-F.cross_entropy(model(x), y))  # noqa: E731
    while not runner.stopped and runner.steps < 100:
        run()
    info = finish_guarded(model, runner, guard, "test")
    assert info["diverged"] and info["stop_reason"].startswith("retain accuracy collapsed")
    healthy = guard.good_state
    for k, v in model.state_dict().items():
        assert torch.equal(v, healthy[k])
    if runner.steps == 1:  # collapsed at once: the start weights are the healthy ones
        for k, v in model.state_dict().items():
            assert torch.equal(v, start[k])


def test_seeded_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with seeded(7) as gen:
        a = torch.rand(2)
        g = torch.rand(2, generator=gen)
    assert torch.equal(torch.rand(3), expected)
    with seeded(7) as gen:
        assert torch.equal(torch.rand(2), a) and torch.equal(torch.rand(2, generator=gen), g)


def test_train_leaves_global_rng_alone(digits):
    from fastunlearn.models import create_model

    model = create_model("lenet5", digits)
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    train(model, digits.train, TrainConfig(epochs=1, progress=False, eval_every=0))
    assert torch.equal(torch.rand(4), expected)


def test_run_epochs_stops_on_guard_reason(digits):
    from fastunlearn.models import create_model

    model = create_model("lenet5", digits)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    runner = StepRunner(opt, None, 100, progress=False,
                        callbacks=[lambda r: "stop" if r.steps == 2 else ""])
    done = run_epochs(model, digits.train, lambda net, x, y: F.cross_entropy(net(x), y), runner,
                      3, 64, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert not done and runner.steps == 2 and runner.stop_reason == "stop"


# -- one loop ----------------------------------------------------------------------------------

#: the runner's own module and the kernels (their own fused/batched code) may step optimisers
_EXEMPT = ("engine/runner.py", "kernels/")


def _loop_calls(path: Path) -> list[str]:
    """``x.backward(...)`` and ``<optimizer>.step(...)`` calls in ``path`` (``runner.step``
    and ``scheduler``-free: any ``.step`` whose receiver is not a runner counts)."""
    tree = ast.parse(path.read_text())
    rel = path.relative_to(PACKAGE) if path.is_relative_to(PACKAGE) else path.name
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr = node.func.attr
            recv = ast.unparse(node.func.value)
            if attr == "backward" or (attr == "step" and "runner" not in recv and
                                      recv not in ("ax", "plt")):
                found.append(f"{rel}:{node.lineno}: {recv}.{attr}()")
    return found


def test_one_step_runner_is_the_only_training_loop():
    """No optimiser loop in the package outside the engine's runner and the kernels."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE))
        if rel.startswith(_EXEMPT):
            continue
        offenders += _loop_calls(path)
    assert not offenders, "training loops outside the engine:\n" + "\n".join(offenders)


def test_loop_detector_finds_a_plain_loop(tmp_path):
    """The check above can fail: a hand-written loop is reported."""
    f = tmp_path / "loop.py"
    f.write_text("def f(opt, loss, runner):\n    loss.backward()\n    opt.step()\n"
                 "    runner.step(loss)\n")
    assert [c.split(": ")[1] for c in _loop_calls(f)] == ["loss.backward()", "opt.step()"]


def test_sgd_options_are_checked_once_for_every_method_config():
    """Every method config with ``momentum`` / ``weight_decay`` rejects bad values through the
    engine's one check (one line naming the method)."""
    import dataclasses

    from fastunlearn.unlearn import config_classes

    checked = 0
    for cls in config_classes().values():
        names = {f.name for f in dataclasses.fields(cls)}
        for field, bad in (("momentum", 1.0), ("weight_decay", -1.0)):
            if field in names:
                with pytest.raises(ValueError, match=f"{cls.method}: {field} must be"):
                    cls(**{field: bad})
                checked += 1
    assert checked >= 20

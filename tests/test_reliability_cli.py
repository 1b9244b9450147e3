"""Issue 13 items 4, 5, 6, 7, 10, 11 from the command line: diverged models are never saved,
unchanged models say so and fail, a collapse is warned, a gold model that forgot something
else is refused, and every bad input is one line on stderr, exit 2, nothing written."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from fastunlearn.cli import main

CPU = ["--device", "cpu", "--no-progress"]
TRAIN = ["train", "--dataset", "digits", "--model", "small_cnn", "--lr", "0.05",
         "--batch-size", "64", *CPU]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """An original digits model and two gold models (class 3 and class 5 excluded)."""
    d = tmp_path_factory.mktemp("ckpts")
    paths = {"orig": d / "orig.safetensors", "gold3": d / "gold3.safetensors",
             "gold5": d / "gold5.safetensors"}
    assert main([*TRAIN, "--epochs", "6", "--out", str(paths["orig"])]) == 0
    assert main([*TRAIN, "--epochs", "6", "--exclude-class", "3", "--out",
                 str(paths["gold3"])]) == 0
    assert main([*TRAIN, "--epochs", "6", "--exclude-class", "5", "--out",
                 str(paths["gold5"])]) == 0
    return paths


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# ------------------------------------------------------- items 10/11: bad input → one line
def _cases() -> list:
    unl = ["unlearn", "--method", "ft", "--model-path", "{orig}", "--forget-class", "3", *CPU]
    study = ["study", "cost-quality", "--dataset", "digits", "--epochs", "1", "--no-progress",
             "--out", "{tmp}/study", "--pool", "{tmp}/pool"]
    return [
        pytest.param([*TRAIN, "--out", "{tmp}/afile/x.safetensors"], "is a file, not a directory",
                     id="out-under-a-file"),
        pytest.param([*TRAIN, "--out", "{tmp}/adir.safetensors"], "is a directory",
                     id="out-is-a-directory"),
        pytest.param([*unl, "--out", "{tmp}/afile/u"], "is a file, not a directory",
                     id="unlearn-out-under-a-file"),
        pytest.param([*study, "--threads", "0"], "--threads must be ≥ 1", id="threads-0"),
        pytest.param([*study, "--threads", "-2"], "--threads must be ≥ 1", id="threads-neg"),
        pytest.param([*study, "--out", "{tmp}/afile"], "is a file", id="study-out-is-a-file"),
        pytest.param(["train", "--dataset", "digits", "--device", "banana", "--out",
                      "{tmp}/t"], "--device 'banana'", id="device-train"),
        pytest.param([*unl[:-3], "--device", "banana"], "--device 'banana'",
                     id="device-unlearn"),
        pytest.param(["evaluate", "--model-path", "{orig}", "--device", "banana"],
                     "--device 'banana'", id="device-evaluate"),
        pytest.param([*study, "--device", "banana"], "--device 'banana'", id="device-study"),
        pytest.param([*unl, "--set", "lr=0.01"], "lr has its own flag; use --lr",
                     id="set-lr-is-a-flag"),
        pytest.param([*unl, "--set", "epochs=2"], "use --epochs", id="set-epochs-is-a-flag"),
        pytest.param([*unl, "--set", "momentum=abc"], "momentum must be float, got 'abc'",
                     id="set-momentum-abc"),
        pytest.param([*study, "--set", "ft.momentum=abc"], "momentum must be float, got 'abc'",
                     id="study-set-momentum-abc"),
        pytest.param([*study, "--set", "ft.wings=2"], "method 'ft' has no option 'wings'",
                     id="study-set-unknown-key"),
        pytest.param([*unl, "--mask", "salun", "--wings", "2"], "has no option 'wings'",
                     id="unknown-option-flag"),
        pytest.param([*study, "--option", "nope=1"], "unknown cost-quality option 'nope'",
                     id="unknown-option"),
        pytest.param([*study, "--methods", "ga", "--set", "ft.lr=0.1"],
                     "options are set for 'ft', which this study does not run",
                     id="set-for-a-method-not-in-the-study"),
        pytest.param(["evaluate", "--model-path", "{orig}", "--forget-count", "0"],
                     "forget count must be positive", id="evaluate-forget-count-0"),
        pytest.param([*unl, "--out", "{orig}", "--force"], "is the input checkpoint",
                     id="force-out-is-the-input"),
        pytest.param([*unl, "--out", "{orig_noext}", "--force"], "is the input checkpoint",
                     id="force-out-is-the-input-without-suffix"),
        pytest.param(["demo", "--out", "{tmp}/demo", "--dataset", "digits"],
                     "exists; pass --force", id="demo-over-existing"),
        pytest.param(["evaluate", "--model-path", "{orig}", "--forget-class", "3",
                      "--reference", "{gold5}"], "forgot class 5", id="reference-mismatch"),
        pytest.param(["evaluate", "--model-path", "{orig}", "--forget-class", "3",
                      "--reference", "{orig}"], "forgot nothing", id="reference-forgot-nothing"),
    ]


@pytest.mark.parametrize(("argv", "message"), _cases())
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, ckpts, argv,
                                                         message):
    (tmp_path / "afile").write_text("not a directory")
    (tmp_path / "adir.safetensors").mkdir()
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "original.safetensors").write_bytes(b"an earlier demo")
    subs = {"{tmp}": str(tmp_path), "{orig}": str(ckpts["orig"]),
            "{orig_noext}": str(ckpts["orig"].with_suffix("")), "{gold5}": str(ckpts["gold5"])}
    args = []
    for a in argv:
        for k, v in subs.items():
            a = a.replace(k, v)
        args.append(a)
    before = _files(tmp_path) | _files(ckpts["orig"].parent)
    stamps = {p: p.stat().st_mtime_ns for p in before if p.is_file()}
    rc, _, err = _run(args, capsys)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert message in lines[0]
    after = _files(tmp_path) | _files(ckpts["orig"].parent)
    assert after == before  # nothing written
    assert {p: p.stat().st_mtime_ns for p in after if p.is_file()} == stamps


def test_offline_pretrained_fails_at_once(tmp_path, tmp_path_factory, capsys, monkeypatch):
    import huggingface_hub.constants as hub

    def offline(*a, **k):  # noqa: ANN002, ANN003
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", offline)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("empty-hub-cache")))
    t0 = time.perf_counter()
    rc, _, err = _run(["train", "--dataset", "digits", "--model", "resnet18", "--pretrained",
                       "--out", str(tmp_path / "p"), *CPU], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "could not be downloaded" in err
    assert time.perf_counter() - t0 < 30  # no minute of retries
    assert list(tmp_path.iterdir()) == []
    assert hub.HF_HUB_OFFLINE is False  # offline mode only for the attempt


def test_reference_mismatch_can_be_overridden(ckpts, capsys):
    args = ["evaluate", "--model-path", str(ckpts["orig"]), "--forget-class", "3", "--json",
            "--no-mia", "--reference"]
    rc, out, err = _run([*args, str(ckpts["gold5"]), "--allow-reference-mismatch"], capsys)
    assert rc == 0, err
    rc, out, err = _run([*args, str(ckpts["gold3"])], capsys)
    assert rc == 0, err
    assert json.loads(out)["retrain_forget_acc"] < 5


# ---------------------------------------------------------- item 4: never save NaN
def test_train_that_diverges_saves_nothing(tmp_path, capsys):
    rc, _, err = _run([*TRAIN, "--epochs", "1", "--lr", "1e30", "--out",
                       str(tmp_path / "nan")], capsys)
    assert rc == 1, err
    assert len(err.strip().splitlines()) == 1 and "diverged" in err and "nothing saved" in err
    assert list(tmp_path.iterdir()) == []


def test_unlearn_that_diverges_saves_nothing(tmp_path, capsys, ckpts):
    rc, _, err = _run(["unlearn", "--method", "ft", "--model-path", str(ckpts["orig"]),
                       "--forget-class", "3", "--lr", "1e30", "--epochs", "1", "--out",
                       str(tmp_path / "nan"), *CPU], capsys)
    assert rc == 1, err
    assert len(err.strip().splitlines()) == 1 and "ft diverged" in err
    assert list(tmp_path.iterdir()) == []


def test_evaluate_a_diverged_checkpoint(tmp_path, capsys, ckpts):
    import torch

    from fastunlearn.checkpoint import load_checkpoint, save_checkpoint

    ck = load_checkpoint(ckpts["orig"])
    with torch.no_grad():
        next(ck.model.parameters()).fill_(float("nan"))
    path = save_checkpoint(tmp_path / "nan", ck.model, dataset=ck.meta["dataset"])
    for extra in ([], ["--no-mia"]):
        rc, out, err = _run(["evaluate", "--model-path", str(path), "--forget-class", "3",
                             "--max-samples", "200", "--json", *extra], capsys)
        assert rc == 0, err
        m = json.loads(out)
        assert m["diverged"] is True and m["forget_acc"] is not None
        if not extra:
            assert m["mia_efficacy"] is None  # NaN → null
    rc, out, _ = _run(["evaluate", "--model-path", str(path), "--forget-class", "3",
                       "--no-mia"], capsys)
    assert rc == 0 and out.startswith("model diverged")


# ------------------------------------------------ items 5, 6: unchanged and collapsed
def test_unchanged_model_is_said_and_fails_unless_allowed(tmp_path, capsys, ckpts):
    args = ["unlearn", "--method", "ga", "--model-path", str(ckpts["orig"]), "--forget-class",
            "3", "--epochs", "0", *CPU, "--out"]
    rc, out, err = _run([*args, str(tmp_path / "u")], capsys)
    assert rc == 1, err
    assert "model unchanged: epochs=0" in out and "--allow-unchanged" in out
    meta = json.loads((tmp_path / "u.json").read_text())
    assert meta["unchanged"] is True and "epochs=0" in meta["unchanged_reason"]
    rc, out, err = _run([*args, str(tmp_path / "v"), "--allow-unchanged"], capsys)
    assert rc == 0 and "model unchanged" in out
    rc, out, err = _run(["unlearn", "--method", "ga", "--model-path", str(ckpts["orig"]),
                         "--forget-class", "3", "--lr", "50", *CPU, "--out",
                         str(tmp_path / "w")], capsys)
    assert rc == 1 and "guard restored the original" in out
    rc, out, err = _run(["unlearn", "--method", "ga", "--model-path", str(ckpts["orig"]),
                         "--forget-class", "3", *CPU, "--out", str(tmp_path / "x")], capsys)
    assert rc == 0 and "model unchanged" not in out
    assert "unchanged" not in json.loads((tmp_path / "x.json").read_text())


def test_a_collapse_exits_1_unless_allowed(tmp_path, capsys, ckpts):
    """A run whose validation accuracy collapses is refused (exit 1, nothing saved), the same
    policy as NaN weights; --allow-collapse keeps it, with the warning and the flag saved."""
    args = ["unlearn", "--method", "rl", "--model-path", str(ckpts["orig"]), "--forget-class",
            "3", "--lr", "1e30", "--epochs", "1", *CPU, "--out", str(tmp_path / "r")]
    rc, out, err = _run(args, capsys)
    assert rc == 1 and "collapsed the model" in err and "--allow-collapse" in err
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "r.safetensors").exists()
    rc, out, err = _run([*args, "--allow-collapse"], capsys)
    assert rc == 0, err
    assert "warning: validation accuracy on the retained classes collapsed" in out
    meta = json.loads((tmp_path / "r.json").read_text())
    assert meta["metrics"]["retain_collapsed"] is True

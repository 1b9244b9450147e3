import json
import subprocess
import sys

import pytest

from fastunlearn.cli import main

TRAIN = [
    "train",
    "--dataset",
    "digits",
    "--model",
    "small_cnn",
    "--epochs",
    "8",
    "--no-progress",
    "--device",
    "cpu",
]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastunlearn.cli", *args], capture_output=True, text=True
    )


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["train", "--model", "resnet99", "--dataset", "digits"], "unknown model 'resnet99'"),
        (["train", "--dataset", "imagenet9"], "unknown dataset 'imagenet9'"),
        (
            ["train", "--dataset", "digits", "--exclude-class", "airplane"],
            "unknown class 'airplane'",
        ),
        (["evaluate", "--model-path", "nope/missing.safetensors"], "checkpoint not found"),
        (["unlearn", "--method", "ga", "--model-path", "nope.safetensors"], "checkpoint not found"),
        (["unlearn", "--method", "magic", "--model-path", "x"], "unknown method 'magic'"),
        (["list", "gizmos"], "invalid choice"),
        (["train", "--epochs", "zero"], "invalid int value"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, match, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fastunlearn.cli", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert match in lines[0]
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_list_commands(capsys):
    for what, expect in (("models", "resnet18"), ("datasets", "fashion-mnist"), ("methods", "ga")):
        assert main(["list", what]) == 0
        assert expect in capsys.readouterr().out


def test_train_unlearn_evaluate_end_to_end(tmp_path, capsys):
    orig = tmp_path / "orig.safetensors"
    assert main([*TRAIN, "--out", str(orig)]) == 0
    assert orig.exists()
    # refuses to overwrite
    assert main([*TRAIN, "--out", str(orig)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    gold = tmp_path / "gold.safetensors"
    assert main([*TRAIN, "--exclude-class", "3", "--out", str(gold)]) == 0
    unl = tmp_path / "ft.safetensors"
    assert (
        main(
            [
                "unlearn",
                "--method",
                "ft",
                "--model-path",
                str(orig),
                "--forget-type",
                "class",
                "--forget-class",
                "3",
                "--epochs",
                "3",
                "--out",
                str(unl),
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--model-path",
                str(unl),
                "--reference",
                str(gold),
                "--original",
                str(orig),
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    for key in (
        "forget_acc",
        "UA",
        "retain_acc",
        "test_acc",
        "test_forget_acc",
        "test_retain_acc",
        "retrain_forget_acc",
        "original_forget_acc",
    ):
        assert key in out
    assert out["forget"] == {"type": "class", "classes": ["3"]}
    assert out["UA"] == pytest.approx(100 - out["forget_acc"])
    assert out["original_forget_acc"] > 80 and out["retrain_forget_acc"] < 5
    # sample forgetting with --set, via the seed-style flags
    ga = tmp_path / "ga.safetensors"
    assert (
        main(
            [
                "unlearn",
                "--method",
                "ga",
                "--model-path",
                str(orig),
                "--forget-type",
                "sample",
                "--forget-count",
                "50",
                "--set",
                "probe_size=64",
                "--out",
                str(ga),
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    meta = json.loads(ga.with_suffix(".json").read_text())
    assert meta["forget"]["type"] == "random" and meta["unlearn_config"]["probe_size"] == 64
    assert meta["metrics"]["rte_s"] > 0


def test_unlearn_bad_option_is_one_line(tmp_path, capsys):
    orig = tmp_path / "o.safetensors"
    assert main([*TRAIN, "--epochs", "1", "--out", str(orig)]) == 0
    capsys.readouterr()
    rc = main(
        [
            "unlearn",
            "--method",
            "ft",
            "--model-path",
            str(orig),
            "--forget-class",
            "3",
            "--set",
            "wings=2",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "has no option 'wings'" in err and len(err.strip().splitlines()) == 1
    rc = main(["unlearn", "--method", "ft", "--model-path", str(orig), "--forget-type", "sample"])
    assert rc == 2 and "--forget-count" in capsys.readouterr().err
    rc = main(
        [
            "unlearn",
            "--method",
            "ga",
            "--model-path",
            str(orig),
            "--forget-class",
            "3",
            "--lr",
            "-1",
        ]
    )
    assert rc == 2 and "lr must be a positive" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.json", "o.safetensors"]


def test_train_sisa_from_the_cli_then_unlearn(tmp_path, capsys):
    ens = tmp_path / "sisa.safetensors"
    args = ["train", "--dataset", "digits", "--model", "lenet5", "--epochs", "1",
            "--sisa-shards", "2", "--sisa-slices", "2", "--no-progress", "--device", "cpu"]
    assert main([*args, "--out", str(ens)]) == 0
    meta = json.loads(ens.with_suffix(".json").read_text())
    assert meta["model"]["name"] == "sisa_ensemble" and meta["sisa"]["shards"] == 2
    out = tmp_path / "u.safetensors"
    assert main(["unlearn", "--method", "sisa", "--model-path", str(ens), "--forget-type",
                 "sample", "--forget-count", "5", "--out", str(out), "--no-progress",
                 "--device", "cpu"]) == 0
    assert "sisa" in capsys.readouterr().out
    assert main([*args, "--exclude-class", "3", "--out", str(tmp_path / "x")]) == 2
    assert "cannot be combined" in capsys.readouterr().err


def test_compile_flag_parses_and_reaches_the_configs(tmp_path, monkeypatch, capsys):
    from fastunlearn.cli import build_parser
    from fastunlearn.kernels import compile as fc

    parser = build_parser()
    assert parser.parse_args(["train", "--compile", "auto"]).compile == "auto"
    assert parser.parse_args(["unlearn", "--method", "ft", "--compile", "TRUE"]).compile == "true"
    assert parser.parse_args(["unlearn", "--method", "ft"]).compile == "false"
    calls = []
    monkeypatch.setattr(fc, "_compile", lambda model: calls.append(model) or model)
    monkeypatch.setenv(fc.CACHE_ENV_VAR, str(tmp_path / "cache"))
    fc.forget_compile_decisions()
    orig = tmp_path / "o.safetensors"
    assert main([*TRAIN, "--epochs", "1", "--compile", "true", "--out", str(orig)]) == 0
    assert len(calls) == 1
    assert json.loads(orig.with_suffix(".json").read_text())["train_config"]["compile"] is True
    out = tmp_path / "u.safetensors"
    assert main(["unlearn", "--method", "ft", "--model-path", str(orig), "--forget-class", "3",
                 "--epochs", "1", "--compile", "auto", "--out", str(out), "--no-progress",
                 "--device", "cpu"]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["unlearn_config"]["compile"] == "auto"
    fc.forget_compile_decisions()
    capsys.readouterr()


def test_bad_compile_value_exits_2_with_one_line(tmp_path):
    for cmd in (["train"], ["unlearn", "--method", "ft"]):
        proc = subprocess.run([sys.executable, "-m", "fastunlearn.cli", *cmd, "--compile", "yes"],
                              capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "--compile" in lines[0] and "invalid choice" in lines[0]
        assert "'auto'" in lines[0]  # names the valid values
        assert list(tmp_path.iterdir()) == []

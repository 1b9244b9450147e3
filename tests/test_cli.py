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
    assert parser.parse_args(["unlearn", "--method", "ft"]).compile is None  # the config's
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


# ------------------------------------------- method options come from the config dataclass
def _config_fields(method: str) -> dict:
    import dataclasses

    from fastunlearn.unlearn import get_method

    return {f.name: f for f in dataclasses.fields(get_method(method).config_cls)}


@pytest.mark.parametrize("method", ["ft", "ga", "scrub"])
def test_help_method_lists_the_config_fields_with_their_defaults(method, capsys):
    assert main(["unlearn", "--method", method, "--help-method"]) == 0
    out = capsys.readouterr().out
    assert main(["list", "methods", method]) == 0
    assert capsys.readouterr().out == out
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines()[2:]}
    fields = _config_fields(method)
    assert set(rows) == {"option", *fields}  # every field, nothing else
    for name, f in fields.items():
        if isinstance(f.default, (int, float, str)) and not isinstance(f.default, bool):
            # the default read from the dataclass, e.g. ft's momentum 0.9, ga's epochs
            assert str(f.default) in rows[name][1:], (name, f.default, rows[name])
    assert rows["epochs"][-1] == "--epochs" and rows["momentum"][-1] != "--momentum"


def test_cli_flag_defaults_are_not_duplicated(monkeypatch, capsys):
    """A default changed in the config shows up in the help (nothing copied into cli.py)."""
    import dataclasses

    from fastunlearn.cli import build_parser
    from fastunlearn.unlearn import FTConfig

    f = {x.name: x for x in dataclasses.fields(FTConfig)}["momentum"]
    monkeypatch.setattr(f, "default", 0.123)
    assert main(["unlearn", "--method", "ft", "--help-method"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.split()[0] == "momentum")
    assert "0.123" in line.split()
    ns = build_parser().parse_args(["unlearn", "--method", "ft"])
    assert ns.epochs is None and ns.lr is None and ns.seed is None and ns.device is None


@pytest.mark.parametrize(
    ("raw", "hint", "value"),
    [
        ("0.5", "float", 0.5), ("3", "int", 3), ("yes", "bool", True), ("off", "bool", False),
        ("none", "str | None", None), ("salun", "str | None", "salun"),
        ("auto", "float | str | None", "auto"), ("0.25", "float | str | None", 0.25),
        ("12", "int | None", 12), ("null", "int | None", None),
        ("ga,ft", "tuple[str, ...] | str", ("ga", "ft")), ("ga", "tuple[str, ...] | str", "ga"),
        ('["ga", "rl"]', "tuple[str, ...]", ("ga", "rl")), ("[0.01,0.1]", "list[float]",
                                                           [0.01, 0.1]),
        ("1,2", "tuple[int, ...]", (1, 2)), ('{"epochs": 1}', "dict[str, Any]", {"epochs": 1}),
        ("b", "Literal['a', 'b']", "b"), ("2", "Literal[1, 2]", 2),
    ],
)
def test_option_values_are_parsed_by_the_field_type(raw, hint, value):
    from typing import Any, Literal  # noqa: F401  (the hints below name them)

    from fastunlearn.cli import parse_value

    got = parse_value(raw, eval(hint))
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(("raw", "hint"), [("abc", "float"), ("1.5", "int"), ("maybe", "bool"),
                                          ("x", "int | None"), ("c", "Literal['a', 'b']"),
                                          ("[1,x]", "list[int]"), ("[1]", "dict")])
def test_option_values_that_do_not_fit_are_refused(raw, hint):
    from typing import Literal  # noqa: F401

    from fastunlearn.cli import parse_value

    with pytest.raises(ValueError):
        parse_value(raw, eval(hint))


@pytest.fixture(scope="module")
def tiny_orig(tmp_path_factory):
    path = tmp_path_factory.mktemp("orig") / "o.safetensors"
    assert main(["train", "--dataset", "digits", "--model", "small_cnn", "--epochs", "1",
                 "--no-progress", "--device", "cpu", "--out", str(path)]) == 0
    return path


def test_typed_method_options_reach_the_config(tiny_orig, tmp_path, capsys):
    out = tmp_path / "ft.safetensors"
    assert main(["unlearn", "--method", "ft", "--model-path", str(tiny_orig), "--forget-class",
                 "3", "--epochs", "1", "--momentum", "0.5", "--mask", "salun",
                 "--mask-sparsity=0.25", "--set", "schedule=constant", "weight_decay=0",
                 "--no-progress", "--device", "cpu", "--out", str(out)]) == 0
    cfg = json.loads(out.with_suffix(".json").read_text())["unlearn_config"]
    assert cfg["momentum"] == 0.5 and cfg["mask"] == "salun" and cfg["mask_sparsity"] == 0.25
    assert cfg["schedule"] == "constant" and cfg["weight_decay"] == 0.0
    assert isinstance(cfg["weight_decay"], float) and cfg["epochs"] == 1
    # flags not given take the config's defaults
    fields = _config_fields("ft")
    assert cfg["lr"] == fields["lr"].default and cfg["batch_size"] == fields["batch_size"].default
    assert cfg["seed"] == fields["seed"].default and cfg["compile"] == fields["compile"].default
    # an explicit none is a value, not "use the default"
    out = tmp_path / "rl.safetensors"
    assert fields["lr"].default is not None
    assert _config_fields("rl")["retain_per_epoch"].default is not None
    assert main(["unlearn", "--method", "rl", "--model-path", str(tiny_orig), "--forget-class",
                 "3", "--epochs", "1", "--set", "retain_per_epoch=none", "--no-progress",
                 "--device", "cpu", "--out", str(out)]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["unlearn_config"][
        "retain_per_epoch"] is None
    capsys.readouterr()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "wings=2"], "method 'ft' has no option 'wings'; options: "),
        (["--wings", "2"], "method 'ft' has no option 'wings'; options: "),
        (["--set", "momentum=abc"], "method 'ft': option momentum must be float, got 'abc'"),
        (["--momentum", "abc"], "method 'ft': option momentum must be float, got 'abc'"),
        (["--set", "mask=3", "mask_sparsity=lots"],
         "option mask_sparsity must be float, got 'lots'"),
        (["--set", "lr=0.1"], "lr has its own flag; use --lr"),
        (["--set", "momentum"], "--set expects KEY=VALUE"),
        (["--set", "momentum=1.5"], "momentum must be in"),  # the config's own check
    ],
)
def test_unknown_or_bad_method_option_is_one_line_exit_2(tiny_orig, tmp_path, capsys, extra,
                                                         message):
    rc = main(["unlearn", "--method", "ft", "--model-path", str(tiny_orig), "--forget-class",
               "3", "--no-progress", "--device", "cpu", "--out", str(tmp_path / "u"), *extra])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    if "no option" in message:  # lists the method's valid keys
        assert all(k in err for k in ("momentum", "weight_decay", "schedule", "mask_sparsity"))
    assert list(tmp_path.iterdir()) == []  # nothing written
    assert sorted(p.name for p in tiny_orig.parent.iterdir()) == ["o.json", "o.safetensors"]


def test_other_commands_refuse_unknown_flags(tmp_path):
    proc = _cli("list", "methods", "--momentum", "0.5")
    assert proc.returncode == 2 and "unrecognized arguments: --momentum 0.5" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unlearn_of_a_user_checkpoint_is_one_line(tmp_path, capsys):
    """A checkpoint of a model of your own (no fastunlearn spec) cannot be rebuilt by the CLI:
    one line saying to use Python, exit 2, nothing written."""
    import torch

    from fastunlearn.checkpoint import save_checkpoint

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    save_checkpoint(tmp_path / "mine", net, metadata={"note": "mine"})
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(["unlearn", "--method", "ft", "--model-path", str(tmp_path / "mine.safetensors"),
                 "--dataset", "digits", "--forget-type", "class", "--forget-class", "3"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model of your own" in err[0] and "Sequential" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_make_config_keeps_an_explicit_none():
    from fastunlearn.unlearn import make_config

    assert make_config("rl").retain_per_epoch is not None
    assert make_config("rl", retain_per_epoch=None).retain_per_epoch is None
    with pytest.raises(ValueError, match="lr must be"):
        make_config("ft", lr=None)


@pytest.fixture(scope="module")
def digits3(tmp_path_factory):
    """small_cnn after 3 epochs on digits (≈ 86 % retain accuracy): under-trained."""
    path = tmp_path_factory.mktemp("orig3") / "o3.safetensors"
    assert main(["train", "--dataset", "digits", "--model", "small_cnn", "--epochs", "3",
                 "--no-progress", "--device", "cpu", "--out", str(path)]) == 0
    return path


def test_unlearn_defaults_to_auto_and_prints_its_choice(digits3, tmp_path, capsys):
    out = tmp_path / "auto.safetensors"
    assert main(["unlearn", "--model-path", str(digits3), "--forget", "class:3",
                 "--no-progress", "--device", "cpu", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    # the budget comes from the checkpoint's training recipe (1 epoch)
    assert "auto: 5% of a retrain (3 epochs, config.retrain_epochs)" in printed
    assert "class " in printed and "without the class" in printed
    assert "teacher: none" in printed and "student:" in printed
    assert "forget-vs-val loss AUC" in printed
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["unlearn_config"]["method"] == "auto"
    assert meta["unlearn_config"]["retrain_epochs"] == 3
    assert meta["metrics"]["forget_acc"] < 20


def test_a_collapsed_run_exits_1_and_saves_nothing(digits3, tmp_path, capsys):
    """zero_shot at its old default lr (0.5) wrecks an under-trained digits model: exit 1,
    nothing saved, unless --allow-collapse."""
    out = tmp_path / "zs.safetensors"
    args = ["unlearn", "--method", "zero_shot", "--model-path", str(digits3), "--forget",
            "class:3", "--lr", "0.5", "--no-progress", "--device", "cpu", "--out", str(out)]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 1 and "collapsed the model" in err and "--allow-collapse" in err
    assert not out.exists()
    assert main([*args, "--allow-collapse"]) == 0
    assert out.exists()
    # the new default keeps the model
    out2 = tmp_path / "zs2.safetensors"
    assert main([*args[:7], *args[9:-1], str(out2)]) == 0, capsys.readouterr()


def test_version(capsys):
    import fastunlearn

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"fastunlearn {fastunlearn.__version__}"

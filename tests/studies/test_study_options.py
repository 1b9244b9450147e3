"""Issue 13 item 11 for every study: option keys a study does not declare, and ``--set`` for a
method the study does not run, are refused before any work (one ValueError line). Issue 15:
every study's options are a typed dataclass, parsed from the same ``--option KEY=VALUE`` /
dict input, with one-line errors naming the option and what it must be."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import pytest

from fastunlearn.studies import StudyConfig, base, registry, run
from fastunlearn.studies.collateral import CollateralOptions
from fastunlearn.studies.cost_quality import CostQualityOptions
from fastunlearn.studies.forget_scaling import ForgetScalingOptions
from fastunlearn.studies.layer_sensitivity import LayerSensitivityOptions
from fastunlearn.studies.options import StudyOptions, option


def _never(*args, **kwargs):  # noqa: ANN002, ANN003
    raise AssertionError("the study was planned or reported despite bad options")


def _runs(config, data):  # noqa: ANN001
    return base.task_runs(config, dataset=config.dataset, model=config.model,
                          forget={"type": "class", "classes": ["3"]}, methods=["ga"])


def test_a_study_that_declares_no_options_refuses_any(tmp_path, monkeypatch):
    """A study module that never looks at ``config.options`` used to accept anything."""
    monkeypatch.setitem(registry._STUDIES, "quiet", registry.Study("quiet", "?", _never, _never))
    cfg = StudyConfig(dataset="digits", options={"fractions": [0.1]}, out=str(tmp_path / "q"))
    with pytest.raises(ValueError, match="unknown quiet option 'fractions'; options: none"):
        run("quiet", cfg)
    assert not (tmp_path / "q").exists()


def test_set_for_a_method_the_study_does_not_run(tmp_path, monkeypatch):
    monkeypatch.setitem(registry._STUDIES, "only-ga", registry.Study("only-ga", "?", _runs, _never))
    cfg = StudyConfig(dataset="digits", method_options={"ft": {"epochs": 1}},
                      out=str(tmp_path / "q"))
    with pytest.raises(ValueError, match="options are set for 'ft', which this study does not "
                                         "run \\(methods: ga\\)"):
        run("only-ga", cfg)
    assert not (tmp_path / "q").exists()


def test_declared_options_come_from_the_module():
    assert set(registry.get_study("forget-scaling").options) == {"fractions", "class_counts",
                                                             "classes"}
    assert registry.get_study("cross-arch").options == ()


@pytest.mark.parametrize(("opts", "message"), [
    ({"ft": {"momentum": "abc"}}, "momentum must be a number, got 'abc'"),
    ({"ft": {"wings": 2}}, "has no option 'wings'"),
    ({"ft": {"epochs": 0}}, "epochs must be"),
])
def test_method_options_are_checked_when_the_config_is_made(opts, message):
    with pytest.raises(ValueError, match=message):
        StudyConfig(dataset="digits", method_options=opts)


# ---------------------------------------------------------------- typed options (issue 15)
def test_every_study_has_a_typed_options_class_naming_it():
    for name in registry.list_studies():
        study = registry.get_study(name)
        assert issubclass(study.options_cls, StudyOptions) and study.options_cls.study == name
        assert study.options == study.options_cls.names()
    assert registry.get_study("cost-quality").options == ("shadows", "quality")


def test_cli_style_values_become_the_declared_types():
    # what `--option fractions=25%,0.05 class-counts=[2] classes=7,3` gives the study
    opts = ForgetScalingOptions.parse({"fractions": "25%,0.05", "class-counts": [2.0],
                                       "classes": "7,3"})
    assert opts.fractions == (0.05, 0.25) and opts.class_counts == (2,)
    assert type(opts.class_counts[0]) is int and opts.classes == ("7", "3")
    assert ForgetScalingOptions.parse({}) == ForgetScalingOptions()
    assert CostQualityOptions.parse({"shadows": "8", "quality": "ulira"}).shadows == 8
    assert CollateralOptions.parse({"classes": "class:3,1"}).classes == ("class:3,1",)
    assert CollateralOptions.parse({"classes": 4}).classes == (4,)
    layer = LayerSensitivityOptions.parse({"modes": "freeze_first,only", "freeze_first": 2})
    assert layer.modes == ("only", "freeze_first") and layer.freeze_first == (2,)
    assert layer.to_dict() == {"modes": ["only", "freeze_first"], "blocks": None,
                               "freeze_first": [2], "tolerance": 5.0}


@pytest.mark.parametrize(("cls", "raw", "message"), [
    (ForgetScalingOptions, {"fraction": [0.1]},
     "unknown forget-scaling option 'fraction'; options: fractions, class_counts, classes"),
    (CostQualityOptions, {"quality": "nope", "shadows": 8},
     "cost-quality option quality must be one of avg_gap, forget_score, ulira, probe, "
     "got 'nope'"),
    (CostQualityOptions, {"shadows": True},
     "cost-quality option shadows must be an integer, got True"),
    (CostQualityOptions, {"shadows": 6},
     "cost-quality option shadows must be 0 (no audit) or an even number ≥ 8, got 6"),
    (LayerSensitivityOptions, {"modes": ["all"]},
     "layer-sensitivity option modes must be a non-empty subset of only, freeze_first, "
     "got ['all']"),
    (LayerSensitivityOptions, {"freeze_first": "a,b"},
     "layer-sensitivity option freeze_first must be a list of integers (or null), "
     "got 'a,b'"),
    (ForgetScalingOptions, {"fractions": [0.5, 2]},
     "forget-scaling option fractions must be numbers in (0, 1) or percentages like 5%, "
     "got [0.5, 2.0]"),
    (CollateralOptions, {"tolerance": -1},
     "collateral option tolerance must be a non-negative number of points, got -1.0"),
    (CollateralOptions, {"tolerance": 1, "tolerance ": 2},
     "collateral option tolerance is given twice"),
])
def test_bad_options_are_one_line_errors_naming_the_option(cls, raw, message):
    with pytest.raises(ValueError) as err:
        cls.parse(raw)
    assert str(err.value) == message


def test_run_refuses_bad_option_values_before_any_work(tmp_path):
    cfg = StudyConfig(dataset="digits", options={"quality": "probe"}, out=str(tmp_path / "q"))
    with pytest.raises(ValueError, match="quality=probe needs the audit"):
        run("cost-quality", cfg)
    assert not (tmp_path / "q").exists()


def test_a_typed_instance_is_accepted_and_another_studys_is_refused():
    opts = CostQualityOptions(shadows=8, quality="probe")
    study = registry.get_study("cost-quality")
    assert study.parse_options(opts) is opts
    assert CostQualityOptions.of(StudyConfig(dataset="digits", options=opts)) is opts
    with pytest.raises(ValueError, match="cost-quality options must be CostQualityOptions, "
                                         "got CollateralOptions"):
        study.parse_options(CollateralOptions())
    with pytest.raises(ValueError, match="options must be a mapping"):
        StudyConfig(dataset="digits", options=["shadows=8"])


@dataclass
class _Toy(StudyOptions):
    study: ClassVar[str] = "toy"
    axis: Literal["x", "y"] = "x"
    flag: bool = False
    ids: tuple[str | int, ...] | None = option(None, "a list of ids")
    scale: float = 1.0


def test_conversion_rules():
    t = _Toy.parse({"axis": "y", "flag": True, "ids": [1, "a"], "scale": 2})
    assert (t.axis, t.flag, t.ids, t.scale) == ("y", True, (1, "a"), 2.0)
    assert type(t.scale) is float
    assert _Toy.parse({"ids": "[1, 2]"}).ids == (1, 2)  # a JSON list given as a string
    for raw, message in (({"axis": "z"}, "toy option axis must be one of x, y, got 'z'"),
                         ({"flag": "yes"}, "toy option flag must be true or false"),
                         ({"ids": [1.5]}, "toy option ids must be a list of ids, got [1.5]"),
                         ({"scale": "big"}, "toy option scale must be a number, got 'big'")):
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                           .replace("[", r"\[").replace("]", r"\]")):
            _Toy.parse(raw)


def test_register_study_checks_its_options_class():
    with pytest.raises(ValueError, match="names the study 'toy'"):
        registry.register_study("other", "?", options=_Toy)
    with pytest.raises(TypeError, match="StudyOptions subclass"):
        registry.register_study("other", "?", options=dict)


def test_cli_option_pairs_reach_the_study_typed(tmp_path, capsys):
    from fastunlearn.cli import main

    rc = main(["study", "cost-quality", "--dataset", "digits", "--out", str(tmp_path / "cq"),
               "--option", "shadows=6"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert err.endswith("cost-quality option shadows must be 0 (no audit) or an even number "
                        "≥ 8, got 6")

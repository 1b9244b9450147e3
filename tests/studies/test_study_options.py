"""Issue 13 item 11 for every study: option keys a study does not declare, and ``--set`` for a
method the study does not run, are refused before any work (one ValueError line)."""

from __future__ import annotations

import pytest

from fastunlearn.studies import StudyConfig, base, registry, run


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

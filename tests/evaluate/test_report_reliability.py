"""Issue 13 item 15 (report.md escapes names and links images with spaces) and item 1's
consequence for reports: a checkpoint needs no sidecar."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest

from fastunlearn.checkpoint import save_checkpoint
from fastunlearn.evaluate.core import EvalConfig
from fastunlearn.evaluate.report import discover_run, write_report

ODD = "ga | <b>&x (v2) y"  # a pipe, HTML, parentheses and spaces in one file name
CELL = re.compile(r"(?<!\\)\|")  # a cell separator: a pipe not escaped with a backslash


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory, digits, digits_original, digits_gold, digits_ga, class_split):
    d = tmp_path_factory.mktemp("run with spaces")
    dataset = {**digits.describe(), "name": "digits|<i>"}
    save_checkpoint(d / "original", digits_original, dataset=dataset, seed=0)
    save_checkpoint(d / "retrain", digits_gold.model, dataset=dataset, forget=class_split.spec,
                    metrics=digits_gold.summary())
    save_checkpoint(d / ODD, digits_ga.model, dataset=dataset, forget=class_split.spec,
                    metrics=digits_ga.summary(),
                    extra={"role": "unlearned",
                           "unlearn_config": {**digits_ga.config.to_dict(), "method": "ga|<s>"}})
    return d


def test_report_escapes_names_and_links_images_with_spaces(odd_run, digits, tmp_path):
    out = tmp_path / "report out"
    cfg = EvalConfig(max_samples=200, cka_probe=16, cka=False)
    text = write_report(odd_run, out, data=digits, config=cfg, tsne_retain=40,
                        tsne_forget=20).read_text()
    # no raw HTML from names: '<b>', '<i>', '<s>' are shown, not interpreted
    assert "<b>" not in text and "<i>" not in text and "<s>" not in text
    assert "ga \\| &lt;b&gt;&amp;x (v2) y" in text and "digits\\|&lt;i&gt;" in text
    assert "ga\\|&lt;s&gt;" in text
    # every table row has as many cells as its header
    table: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            widths = {len(CELL.split(row)) for row in table}
            assert len(widths) == 1, table
            table = []
    # image targets are valid CommonMark destinations (no spaces, < > or parentheses) that
    # name files that exist
    targets = re.findall(r"!\[[^\]]*\]\(([^)]*)\)", text)
    assert len(targets) == 4
    for t in targets:
        assert re.fullmatch(r"[^\s<>()]+", t), t
        assert (out / unquote(t)).is_file(), t
    assert any(ODD in unquote(t) for t in targets)


def test_checkpoints_without_sidecars_are_found(odd_run, tmp_path):
    import shutil

    d = tmp_path / "copy"
    d.mkdir()
    for f in odd_run.glob("*.safetensors"):
        shutil.copy(f, d / f.name)  # the weights files alone
    roles = {e.name: e.role for e in discover_run(d)}
    assert roles == {"original": "original", "retrain": "retrain", ODD: "unlearned"}

import json
import re

import numpy as np
import pytest

from fastunlearn.checkpoint import save_checkpoint
from fastunlearn.cli import main
from fastunlearn.evaluate.core import EvalConfig
from fastunlearn.evaluate.report import discover_run, write_report

FAST_FLAGS = ["--max-samples", "300", "--cka-probe", "32", "--device", "cpu"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, digits, digits_original, digits_gold, digits_ga, class_split):
    """The layout `fastunlearn demo` writes (no roles: names decide), plus an unlearned
    checkpoint as `fastunlearn unlearn` writes it (role, unlearn_config, metrics with rte_s)."""
    d = tmp_path_factory.mktemp("run")
    save_checkpoint(d / "original", digits_original, dataset=digits, seed=0)
    save_checkpoint(d / "retrain", digits_gold.model, dataset=digits, forget=class_split.spec,
                    metrics=digits_gold.summary())
    save_checkpoint(d / "original_ga_class", digits_ga.model, dataset=digits,
                    forget=class_split.spec, metrics=digits_ga.summary(),
                    extra={"role": "unlearned", "unlearn_config": digits_ga.config.to_dict()})
    return d


def test_discover_roles(run_dir):
    roles = {e.name: (e.role, e.method) for e in discover_run(run_dir)}
    assert roles == {"original": ("original", "original"), "retrain": ("retrain", "retrain"),
                     "original_ga_class": ("unlearned", "ga")}


def test_discover_rejects_two_originals(tmp_path, digits, digits_original):
    save_checkpoint(tmp_path / "original", digits_original, dataset=digits)
    save_checkpoint(tmp_path / "orig", digits_original, dataset=digits)
    with pytest.raises(ValueError, match="several original"):
        discover_run(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no fastunlearn checkpoints"):
        discover_run(tmp_path / "empty")


def test_report_writes_markdown_json_and_valid_pngs(run_dir, digits, tmp_path):
    from PIL import Image

    out = tmp_path / "report"
    cfg = EvalConfig(max_samples=300, cka_probe=32)
    path = write_report(run_dir, out, data=digits, config=cfg, tsne_retain=80, tsne_forget=40)
    text = path.read_text()
    assert path == out / "report.md"
    for heading in ("Accuracy, forgetting and cost", "Membership inference per feature",
                    "Linear CKA to the original", "Per-class test accuracy", "Figures"):
        assert heading in text
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(images) == 4  # one unlearned model: bars, confusion, t-SNE, MIA histograms
    for name in images:
        png = out / name
        assert png.exists() and png.stat().st_size > 10_000, name
        with Image.open(png) as im:
            im.verify()
        with Image.open(png) as im:
            arr = np.asarray(im.convert("L"))
        assert arr.shape[0] > 300 and arr.shape[1] > 500, name
        assert arr.std() > 5, name  # not a blank canvas

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"original", "retrain", "original_ga_class"}
    ga = metrics["models"]["original_ga_class"]["metrics"]
    assert ga["rte_s"] > 0 and ga["rte_ratio"] == pytest.approx(ga["rte_s"] / ga["retrain_rte_s"])
    assert metrics["models"]["retrain"]["metrics"]["avg_gap"] == pytest.approx(0.0)
    # the table shows the numbers that metrics.json holds
    row = next(line for line in text.splitlines() if line.startswith("| original_ga_class | unl"))
    assert f"{ga['forget_acc']:.2f}" in row and f"{ga['mia_efficacy']:.2f}" in row


def test_cli_report_and_evaluate(run_dir, tmp_path, capsys, every_metric):
    out = tmp_path / "cli_report"
    assert main(["report", str(run_dir), "--out", str(out), "--no-plots", *FAST_FLAGS]) == 0
    assert (out / "report.md").exists() and (out / "metrics.json").exists()
    assert not list(out.glob("*.png"))
    capsys.readouterr()
    assert main(["evaluate", "--model-path", str(run_dir / "original_ga_class.safetensors"),
                 "--reference", str(run_dir / "retrain.safetensors"),
                 "--original", str(run_dir / "original.safetensors"), "--json", *FAST_FLAGS]) == 0
    m = json.loads(capsys.readouterr().out)
    missing = [k for k in every_metric if k not in m]
    assert not missing
    assert m["forget"] == {"type": "class", "classes": ["3"]}
    assert m["rte_ratio"] == pytest.approx(m["rte_s"] / m["retrain_rte_s"])


def test_cli_report_errors_are_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run directory not found" in err[0]

"""The bring-your-own examples run offline end to end (``--tiny``: FakeData stands in for
CIFAR-10 when it is absent), each in a fresh interpreter on one thread."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize(("script", "methods", "needs"), [
    ("torchvision_cifar10.py", ("salun", "ssd"), "torchvision"),
    ("timm_vit.py", ("ft", "fisher"), "timm"),
])
def test_example_runs_offline(script, methods, needs, tmp_path):
    pytest.importorskip(needs)
    pytest.importorskip("torchvision")
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1",
           "FASTUNLEARN_DATA": str(tmp_path / "no-data")}
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--tiny", "--threads", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert any("FakeData" in line for line in lines)
    rows = [line.split() for line in lines if line.split()[-6:-5] and
            line.split()[-6] in methods]
    assert len(rows) == 4, proc.stdout  # two forget sets × two methods
    for row in rows:
        forget_acc, retain_acc, test_acc, mia = (float(v) for v in row[-5:-1])
        assert all(0 <= v <= 100 for v in (forget_acc, retain_acc, test_acc, mia)), row
    saved = sorted(p.name for p in out.iterdir() if p.suffix == ".safetensors")
    assert len(saved) == 4, saved

"""Issue 13 items 2, 3 and 9: a locked, self-validating model pool and results that are redone
when they are malformed."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path

import pytest
import torch

from fastunlearn.checkpoint import CheckpointError
from fastunlearn.studies import keys
from fastunlearn.studies import pool as pool_mod

RUN = keys.make_run(dataset="digits", model="small_cnn", forget={"type": "class",
                      "classes": ["3"]}, method="ga", train={"epochs": 1}, seed=0)
JOB = {"key": keys.original_key(RUN), "role": "original", "run": RUN}


def _weights(pool: Path) -> Path:
    return pool_mod.pool_path(pool, JOB["key"]).with_suffix(".safetensors")


def _training_lines(pool: Path) -> int:
    log = pool_mod.pool_path(pool, JOB["key"]).parent / "run.log"
    return log.read_text().count("training original") if log.exists() else 0


@pytest.fixture()
def pool(tmp_path):
    p = tmp_path / "pool"
    assert pool_mod.build_pool_model(JOB, str(p), "cpu", 1)["trained"]
    return p


# -------------------------------------------------------------------- item 9: the pool
@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_damaged_pool_model_is_retrained(pool, damage):
    w = _weights(pool)
    blob = w.read_bytes()
    if damage == "truncate":
        w.write_bytes(blob[: len(blob) // 2])
    elif damage == "flip":
        w.write_bytes(blob[:-3] + bytes([blob[-3] ^ 0x55]) + blob[-2:])
    else:
        w.write_bytes(b"")
    assert not pool_mod.pool_ready(pool, JOB["key"])
    assert pool_mod.build_pool_model(JOB, str(pool), "cpu", 1)["trained"]
    assert pool_mod.pool_ready(pool, JOB["key"]) and _training_lines(pool) == 2
    model, meta = pool_mod._load_pool(pool, JOB["key"])
    assert meta["pool_key"] == JOB["key"] and isinstance(model, torch.nn.Module)


def test_pool_model_is_reused_when_whole(pool):
    assert not pool_mod.build_pool_model(JOB, str(pool), "cpu", 1)["trained"]
    assert _training_lines(pool) == 1


def test_unloadable_pool_model_is_one_line_saying_what_to_do(pool):
    w = _weights(pool)
    w.write_bytes(w.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="run the study again") as err:
        pool_mod._load_pool(pool, JOB["key"])
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ item 9: result.json
GOOD = {"key": "k1", "run": {k: RUN[k] for k in keys.KEY_FIELDS}, "metrics": {"UA": 1.0}}


@pytest.mark.parametrize("content", [
    b"[]", b'"a string"', b"null", b'{"key": "k1"}', b'{"key": "k1", "run": {}, "metrics": {}}',
    json.dumps({**GOOD, "metrics": [1, 2]}).encode(), json.dumps({**GOOD, "run": [1]}).encode(),
    b'{"key": "k1", "run": \xff\xfe}', "{\"key\": \"k1\"}".encode("utf-16"), b"{not json",
], ids=["list", "string", "null", "key-only", "empty-run", "metrics-list", "run-list",
        "not-utf8", "utf16", "broken"])
def test_malformed_result_is_treated_as_absent(tmp_path, content):
    (tmp_path / keys.RESULT_FILE).write_bytes(content)
    assert keys.read_result(tmp_path, "k1") is None


def test_wellformed_result_is_kept(tmp_path):
    keys.write_json_atomic(tmp_path / keys.RESULT_FILE, GOOD)
    assert keys.read_result(tmp_path, "k1") == GOOD
    assert keys.read_result(tmp_path, "other-key") is None


# --------------------------------------------------------------------- item 3: umask
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o007, 0o660)])
def test_written_files_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        keys.write_json_atomic(tmp_path / "r.json", {"a": 1})
        pool_mod.build_pool_model(JOB, str(tmp_path / "pool"), "cpu", 1)
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == mode
    w = _weights(tmp_path / "pool")
    for f in (w, w.with_suffix(".json")):
        assert f.stat().st_mode & 0o777 == mode, f.name


# ----------------------------------------------------------- item 2: concurrent builders
def _build_after(barrier, results, pool: str) -> None:
    torch.set_num_threads(1)
    barrier.wait()  # both processes look at the pool at the same moment
    results.put(pool_mod.build_pool_model(JOB, pool, "cpu", 1))


def test_two_processes_building_one_pool_key_train_it_once(tmp_path):
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    pool = tmp_path / "pool"
    procs = [ctx.Process(target=_build_after, args=(barrier, results, str(pool)))
             for _ in range(2)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(r["trained"] for r in got) == [False, True]
    assert _training_lines(pool) == 1
    assert pool_mod.pool_ready(pool, JOB["key"])
    model, meta = pool_mod._load_pool(pool, JOB["key"])
    assert meta["pool_key"] == JOB["key"]

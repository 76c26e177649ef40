"""Two gloo processes on CPU (tests/ddp_worker.py under torch.distributed.run): the cross-rank pieces against
one process on the global batch, and every method trained a few steps under DDP."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.loop import load_checkpoint

WORKER = Path(__file__).with_name("ddp_worker.py")


def launch(check: str, out: Path, *args, port: int) -> list[dict]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           str(WORKER), check, str(out), *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parents[1])}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads((out / f"{check}_{rank}.json").read_text()) for rank in (0, 1)]
    for r in results:
        assert "error" not in r, r["error"]
    return results


@pytest.fixture(scope="module")
def primitives(tmp_path_factory):
    return launch("primitives", tmp_path_factory.mktemp("ddp"), port=29541)


@pytest.mark.slow
def test_shuffle_bn_permutes_samples_across_ranks_and_is_undone_exactly(primitives):
    seen = [r["shuffle"]["seen"] for r in primitives]
    assert sorted(seen[0] + seen[1]) == list(range(16))  # the global batch, each row encoded once
    assert any(i >= 8 for i in seen[0]) and any(i < 8 for i in seen[1])  # rows crossed ranks
    for rank, r in enumerate(primitives):
        assert r["shuffle"]["restored"]  # each rank got its own rows back, in order
        encoded_on = r["shuffle"]["encoded_on"]
        assert [seen[int(w)].count(rank * 8 + i) for i, w in enumerate(encoded_on)] == [1] * 8


@pytest.mark.slow
def test_gathered_negatives_carry_gradients_like_one_process_on_the_global_batch(primitives):
    for r in primitives:
        assert r["gather_grad"]["q"] < 1e-6 and r["gather_grad"]["k"] < 1e-6


@pytest.mark.slow
def test_sync_batchnorm_equals_batchnorm_on_the_global_batch(primitives):
    for r in primitives:
        bn = r["sync_bn"]
        assert bn["is_sync"] and max(v for k, v in bn.items() if k != "is_sync") < 1e-5, bn


@pytest.mark.slow
def test_rank_check_names_what_differs(primitives):
    for r in primitives:
        assert r["mismatches"] == {"same": [], "changed": ["0.bias", "1.running_mean"], "skipping_stats": ["0.bias"]}


@pytest.fixture(scope="module")
def runs(synth_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_runs")
    return out, launch("methods", out, synth_store, port=29542)


PAPER_BN = {"rgb": "shuffle", "mcd": "sync", "maclr": "shuffle", "mcl": "shuffle", "mcl_no_order": "shuffle",
            "fima": "shuffle", "hcml": "sync", "supervised": "local", "linear_sgd": "local", "videomae": "local",
            "mgm": "local", "mgmae": "local"}


@pytest.mark.slow
@pytest.mark.parametrize("run", sorted(PAPER_BN))
def test_every_method_trains_under_ddp_with_ranks_in_agreement(runs, run):
    """The loop compares every parameter, queue and EMA encoder across ranks at its last step (and fails the
    run when they differ, as the drifting methods show); here: both ranks finished, losses are finite."""
    out, results = runs
    for r in results:
        assert r[run] == {"ok": True, "bn": PAPER_BN[run], "world_size": 2}
    with open(out / run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(math.isfinite(float(v)) for row in rows for v in row.values())
    state = load_checkpoint(out / run / "checkpoint.pt")
    assert state["world_size"] == 2 and state["step"] == 3
    if run == "rgb":  # both ranks' keys went into one queue: 3 steps x 2 views x 2 ranks x 2 clips = 24 = 8 mod 16
        assert state["model"]["queue.ptr"].item() == 8
        assert torch.isfinite(state["model"]["queue.keys"]).all()


@pytest.mark.slow
@pytest.mark.parametrize("run, what", [("drifting_weights", "visual.head.0.bias"), ("drifting_queue", "queue.keys")])
def test_ranks_that_drift_apart_fail_the_run(runs, run, what):
    for r in runs[1]:
        assert not r[run]["ok"] and "ranks hold different values of" in r[run]["error"] and what in r[run]["error"]

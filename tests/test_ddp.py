"""Two gloo processes on CPU (tests/ddp_worker.py under torch.distributed.run): the cross-rank pieces against
one process on the global batch, and every method trained a few steps under DDP."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
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


# --- Runs that lose a rank, under torchrun (c10d rendezvous, as the README's Kubernetes line) -------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rows(run: Path) -> list[dict]:
    if not (run / "metrics.csv").exists():
        return []
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def _worker(agent: int, rank: int) -> int:
    """The pid of torchrun's worker of ``rank`` (a child of the agent whose environment says RANK=rank)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            env = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == agent and f"RANK={rank}".encode() in env:
            return int(stat.parent.name)
    raise AssertionError(f"no worker of rank {rank} under torchrun {agent}")


def _torchrun(store, run: Path, *extra, restarts: int = 0) -> subprocess.Popen:
    recipe = run.parent / "tiny.yaml"
    recipe.write_text("method: rgb\nclip_len: 4\nsize: 32\nbatch_size: 2\nwarmup_steps: 2\nworkers: 0\n"
                      "checkpoint_every: 2\nmethod_args: {queue: 0}\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--max-restarts", str(restarts),
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "--rdzv-id", run.name,
           "-m", "mvtools", "train", "--config", str(recipe), "--store", str(store), "--out", str(run),
           "--steps", "10", "--quiet", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _until_rows(proc, run: Path, n: int) -> None:
    deadline = time.time() + 180
    while proc.poll() is None and len(_rows(run)) < n and time.time() < deadline:
        time.sleep(0.05)
    if proc.poll() is not None or len(_rows(run)) < n:
        proc.terminate()  # torchrun ends its workers
        proc.communicate(timeout=120)
        raise AssertionError("the run ended before it could be disturbed, or never got there")


@pytest.fixture(scope="module")
def uninterrupted(synth_store, tmp_path_factory) -> list[dict]:
    run = tmp_path_factory.mktemp("elastic") / "straight"
    proc = _torchrun(synth_store, run)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return _rows(run)


@pytest.mark.slow
@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_torchrun_restarts_a_killed_worker_and_the_run_equals_an_uninterrupted_one(synth_store, tmp_path,
                                                                                  uninterrupted, attempt):
    """--max-restarts 1, no --resume: the restarted workers resume from the checkpoint (and agree on a fresh
    store prefix, so the dead rank's old address is never read)."""
    run = tmp_path / f"killed{attempt}"
    proc = _torchrun(synth_store, run, restarts=1)
    _until_rows(proc, run, 3 + attempt)
    os.kill(_worker(proc.pid, 1), signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert len(uninterrupted) == 10 and _rows(run) == uninterrupted


@pytest.mark.slow
def test_sigterm_to_torchrun_checkpoints_one_step_on_every_rank_and_resume_equals_an_uninterrupted_run(
        synth_store, tmp_path, uninterrupted):
    """torchrun forwards SIGTERM to its workers: both finish the same step, rank 0 writes it, one line says so."""
    run = tmp_path / "term"
    proc = _torchrun(synth_store, run)
    _until_rows(proc, run, 3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    step = load_checkpoint(run / "checkpoint.pt")["step"]
    assert 3 <= step < 10 and len(_rows(run)) == step
    assert err.count("mvtools train: stopped by SIGTERM") == 1 and f"after step {step}: checkpoint" in err, err[-3000:]
    assert "torchrun <the same options> -m mvtools train" in err and "--resume" in err
    proc = _torchrun(synth_store, run, "--resume")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert _rows(run) == uninterrupted


@pytest.mark.slow
def test_a_frozen_rank_ends_the_run_within_dist_timeout_with_one_line(synth_store, tmp_path):
    """Two ranks started by hand (what torchrun does, without its shutdown grace); rank 1 is stopped (SIGSTOP)."""
    run, port = tmp_path / "frozen", _free_port()
    cmd = [str(Path(sys.executable).with_name("mvtools")), "train", "--store", str(synth_store), "--out", str(run),
           "--steps", "200", "--batch-size", "2", "--workers", "0", "--checkpoint-every", "2", "--quiet",
           "--dist-timeout", "5", "--config", str(Path(__file__).resolve().parents[1] / "pipelines" / "train" /
                                                    "rgb_tiny.yaml")]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2",
                                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"})
             for r in (0, 1)]
    try:
        _until_rows(procs[0], run, 3)
        procs[1].send_signal(signal.SIGSTOP)
        start = time.time()
        _, err = procs[0].communicate(timeout=120)
        took = time.time() - start
    finally:
        procs[1].kill()
        procs[1].communicate()
    assert procs[0].returncode == 1 and took < 5 + 30, (took, err[-3000:])
    assert err.count("\n") == 1 and "lost contact with another rank: no answer within --dist-timeout 5 s" in err, err
    assert f"the checkpoint of step {load_checkpoint(run / 'checkpoint.pt')['step']} is kept" in err

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray

from mvtools import open_store
from mvtools.extract import extract
from mvtools.pipeline import extract_parallel
from mvtools.synth import encode_video, render

MVTOOLS = str(Path(sys.executable).with_name("mvtools"))


def content(path) -> dict:
    """Everything a reader sees in a store: root attrs, and per video its attrs and array digests."""
    store = open_store(path)
    out = {"_root": store.attrs, "_incomplete": store.incomplete()}
    for key in store.all_keys():
        group = store.root["videos"][key]
        arrays = {name: hashlib.sha256(np.ascontiguousarray(a[:]).tobytes()).hexdigest() for name, a in group.arrays()}
        out[key] = (group.attrs.asdict(), arrays)
    return out


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, synth_dir) -> Path:
    """The synthetic videos, a longer one, and two bad files."""
    src = tmp_path_factory.mktemp("dataset") / "src"
    shutil.copytree(synth_dir, src)
    encode_video(src / "up" / "long.mp4", render("up", np.random.default_rng(5), num_frames=200, width=320, height=240))
    (src / "up" / "broken.mp4").write_bytes(b"\0" * 1000)
    (src / "up" / "empty.avi").touch()
    return src


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("ref") / "ref.zarr"
    report = extract(dataset, path, progress=False)
    assert len(report.extracted) == 5 and len(report.failed) == 2
    return content(path)


def test_ray_run_equals_the_in_process_run(local_ray, dataset, reference, tmp_path):
    report = extract_parallel(dataset, tmp_path / "r.zarr", progress=False)
    assert len(report.extracted) == 5 and set(report.failed) == {"up/broken.mp4", "up/empty.avi"}
    assert content(tmp_path / "r.zarr") == reference
    again = extract_parallel(dataset, tmp_path / "r.zarr", progress=False)
    assert again.extracted == [] and len(again.skipped) == 5
    assert content(tmp_path / "r.zarr") == reference


def _kill_when(proc, store_path: Path, complete_videos: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        videos = store_path / "videos"
        done = sum(1 for g in videos.glob("*/zarr.json") if b'"complete": true' in g.read_bytes()) \
            if videos.exists() else 0
        if done >= complete_videos:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("kill_after", [0, 2, 4])
def test_kill_9_of_the_driver_then_rerun_gives_the_same_store(dataset, reference, tmp_path, kill_after):
    store = tmp_path / "k.zarr"
    cmd = [MVTOOLS, "extract", str(dataset), "-o", str(store), "--workers", "0", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(proc, store, kill_after)
    assert proc.returncode == -signal.SIGKILL
    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 3, rerun.stderr  # the two bad files
    assert content(store) == reference


def _ray_worker_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "cmdline").read_bytes().startswith(b"ray::run_job"):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def test_a_killed_ray_worker_is_retried(local_ray, dataset, reference, tmp_path):
    result = {}
    runner = threading.Thread(target=lambda: result.update(
        report=extract_parallel(dataset, tmp_path / "w.zarr", progress=False)))
    runner.start()
    killed = []
    deadline = time.time() + 30
    while not killed and time.time() < deadline and runner.is_alive():
        for pid in _ray_worker_pids():
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            break
        time.sleep(0.005)
    runner.join(120)
    assert killed, "no Ray worker was seen running a task"
    assert len(result["report"].extracted) == 5
    assert content(tmp_path / "w.zarr") == reference


PEAK = """
import json, shutil, sys
from mvtools.extract import ExtractConfig, extract_video
from mvtools.store import create_store
shutil.rmtree(sys.argv[2], ignore_errors=True)
config = ExtractConfig()
extract_video(sys.argv[1], create_store(sys.argv[2], config.settings()), "v", config)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec from the parent.
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024)
"""


def test_peak_memory_does_not_grow_with_video_length(tmp_path):
    peaks = {}
    for n in (60, 600):
        video = encode_video(tmp_path / f"{n}.mp4", render("left", np.random.default_rng(0), num_frames=n,
                                                                   width=640, height=360), preset="ultrafast")
        out = subprocess.run([sys.executable, "-c", PEAK, str(video), str(tmp_path / "s.zarr")],
                             capture_output=True, text=True, check=True)
        peaks[n] = float(out.stdout.strip().splitlines()[-1])
    # Measured: +25 MB (the shard buffers filling up); without collecting PyAV's frame cycles, +86 MB.
    assert peaks[600] - peaks[60] < 45, peaks


def test_at_most_a_window_of_tasks_is_in_flight(local_ray):
    from mvtools.pipeline import as_completed

    @ray.remote(max_retries=0)
    def square(x):
        if x == 7:
            raise ValueError("seven")
        return x * x

    state = {"in_flight": 0, "peak": 0}

    def submit(i, job):
        state["in_flight"] += 1
        state["peak"] = max(state["peak"], state["in_flight"])
        return square.remote(job)

    results = {}
    for job, result in as_completed(submit, range(30), window=3):
        state["in_flight"] -= 1
        results[job] = result
    assert sorted(results) == list(range(30)) and state["peak"] == 3
    assert isinstance(results.pop(7), ray.exceptions.RayTaskError)
    assert results == {i: i * i for i in range(30) if i != 7}


def test_batches_group_small_videos_and_a_crashing_one_fails_alone(local_ray):
    from mvtools.extract import Job, Outcome
    from mvtools.pipeline import batches, outcomes

    jobs = [Job(rel=f"{i}.mp4", key=f"k{i}", path="", size=size) for i, size in enumerate([10, 10, 10, 50, 10, 10])]
    grouped = [[j.key for j in b] for b in batches(jobs, videos=2, size=40)]
    assert grouped == [["k0", "k1"], ["k2"], ["k3"], ["k4", "k5"]]

    @ray.remote(max_retries=0)
    def work(batch):
        if any(job.key == "k4" for job in batch):
            raise RuntimeError("a decoder crash")
        return [Outcome(job.rel, job.key, frames=1) for job in batch]

    removed = []
    got = {o.key: o for o in outcomes(lambda i, batch: work.remote(batch), jobs, 3, 0, lambda j: removed.append(j.key))}
    assert sorted(got) == [f"k{i}" for i in range(6)] and removed == ["k4"]
    assert "a decoder crash" in got["k4"].error and got["k4"].removed
    assert all(got[k].error is None and got[k].frames == 1 for k in got if k != "k4")  # k5 shared k4's batch

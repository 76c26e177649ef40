"""Ray as users run it: a real `ray start --head` cluster with token authentication (Ray >= 2.59), joined by
`mvtools extract --address HOST:PORT`, and a local run beside it. The cluster lives in this module's own
HOME and RAY_TMPDIR and is stopped through its process group (the `ray start` process's own id)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    home = root / "home"
    home.mkdir()
    tmp = Path(tempfile.mkdtemp(prefix="mvr", dir="/tmp"))  # Ray's socket paths must stay under 107 bytes
    env = {**os.environ, "HOME": str(home), "RAY_TMPDIR": str(tmp), "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    subprocess.run([BIN / "ray", "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    token = (home / ".ray" / "auth_token").read_text().strip()
    port = _free_port()
    with open(root / "head.log", "w") as log:
        head = subprocess.Popen(
            [BIN / "ray", "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
             "--disable-usage-stats", "--block"], env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        deadline = time.time() + 90
        while "Ray runtime started" not in (root / "head.log").read_text():
            assert head.poll() is None and time.time() < deadline, (root / "head.log").read_text()[-2000:]
            time.sleep(0.5)
        yield {"address": f"127.0.0.1:{port}", "home": home, "tmp": tmp, "token": token, "root": root}
    finally:
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 30)):
            try:
                os.killpg(head.pid, sig)  # the group `ray start` leads: its raylet, GCS and workers
            except ProcessLookupError:
                break
            try:
                head.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    from mvtools.synth import make_dataset

    out = tmp_path_factory.mktemp("cluster_videos")
    make_dataset(out, videos=2, seed=3, num_frames=8, width=64, height=48)
    return out


def _extract(cluster, videos, out, *extra, home=None, **env):
    client = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    client.update({"HOME": str(home or cluster["home"]), "RAY_TMPDIR": str(cluster["tmp"]), **env})
    start = time.time()
    run = subprocess.run([BIN / "mvtools", "extract", videos, "-o", out, "--quiet", *extra], env=client,
                         capture_output=True, text=True, timeout=120)
    return run, time.time() - start


@pytest.mark.parametrize("where", ["default_file", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"])
def test_address_as_ray_start_prints_it_connects_with_the_token(cluster, videos, tmp_path, where):
    empty = tmp_path / "home"
    empty.mkdir()
    token_file = tmp_path / "token"
    token_file.write_text(cluster["token"])
    how = {"default_file": {}, "RAY_AUTH_TOKEN": {"home": empty, "RAY_AUTH_TOKEN": cluster["token"]},
           "RAY_AUTH_TOKEN_PATH": {"home": empty, "RAY_AUTH_TOKEN_PATH": str(token_file)}}[where]
    run, _ = _extract(cluster, videos, tmp_path / "s.zarr", "--address", cluster["address"], **how)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 videos, 16 frames" in run.stdout and "Ray start-up" in run.stdout


def test_no_token_fails_fast_with_one_line_saying_what_to_set(cluster, videos, tmp_path):
    empty = tmp_path / "home"
    empty.mkdir()
    run, seconds = _extract(cluster, videos, tmp_path / "s.zarr", "--address", cluster["address"], home=empty)
    assert run.returncode == 2 and seconds < 10, (seconds, run.stderr[-2000:])
    message = [line for line in run.stderr.splitlines() if line.startswith("mvtools extract: error:")]
    assert len(message) == 1 and cluster["address"] in message[0] and "RAY_AUTH_TOKEN" in message[0]
    assert not [p for p in (tmp_path / "s.zarr" / "videos").glob("*") if p.is_dir()]  # nothing extracted


def test_without_address_a_private_local_ray_runs_beside_the_cluster(cluster, videos, tmp_path):
    # ray.init(num_cpus=N) would join the running cluster (found through RAY_TMPDIR) and refuse num_cpus
    run, _ = _extract(cluster, videos, tmp_path / "s.zarr", "--workers", "1")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 videos, 16 frames" in run.stdout


def test_an_address_where_nothing_listens_fails_fast(videos, tmp_path):
    start = time.time()
    run = subprocess.run([BIN / "mvtools", "extract", videos, "-o", tmp_path / "s.zarr", "--quiet",
                          "--address", f"127.0.0.1:{_free_port()}"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and time.time() - start < 10
    assert run.stderr.count("\n") == 1 and "nothing answers there" in run.stderr

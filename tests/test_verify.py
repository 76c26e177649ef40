"""mvtools verify: every kind of damage found and named; --repair, then extract, gives a clean extraction back."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from stores import damage, write_store

from mvtools import open_store
from mvtools.cli import main
from mvtools.extract import extract
from mvtools.synth import make_dataset
from mvtools.verify import check_video

MVTOOLS = str(Path(sys.executable).with_name("mvtools"))


def digest(location, **options) -> dict:
    """What a reader sees: root attrs, complete and incomplete keys, per video attrs and array digests."""
    store = open_store(location, storage_options=options or None)
    out = {"_root": store.attrs, "_incomplete": store.incomplete(), "_keys": store.keys()}
    for key in store.all_keys():
        group = store.root["videos"][key]
        out[key] = (group.attrs.asdict(), {name: hashlib.sha256(np.ascontiguousarray(a[:]).tobytes()).hexdigest()
                                          for name, a in group.arrays()})
    return out


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("verify_videos")
    make_dataset(out, videos=5, seed=5, num_frames=20, width=96, height=64)
    return out


@pytest.fixture(scope="module")
def clean(videos, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("verify") / "clean.zarr"
    assert not extract(videos, path, progress=False).failed
    return path


def test_truncated_overwritten_and_deleted_shards_are_found_and_repair_then_extract_restores_the_store(
        videos, clean, tmp_path, capsys):
    store = tmp_path / "store.zarr"
    shutil.copytree(clean, store)
    keys = open_store(store).keys()
    damage(store, keys[0], "frames", "truncate")
    damage(store, keys[1], "residual", "overwrite")  # same size: only the chunk checksums can tell
    damage(store, keys[3], "mv", "delete")  # zarr alone reads it as zeros
    assert main(["verify", str(store), "--workers", "0", "--json"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert report["videos"] == 5 and sorted(report["damaged"]) == sorted([keys[0], keys[1], keys[3]])
    found = {key: {(p["array"], p["reason"].split(" (")[0]) for p in problems}
             for key, problems in report["damaged"].items()}
    assert ("frames", "does not decode") in found[keys[0]] and any("recorded at commit" in r for _, r in found[keys[0]])
    assert found[keys[1]] == {("residual", "does not decode")}
    assert ("mv", "shard c/0/0/0/0 missing") in found[keys[3]]

    assert main(["verify", str(store), "--workers", "0", "--repair", "--quiet"]) == 3
    out = capsys.readouterr().out
    assert f"damaged: {keys[3]}: array 'mv', frames 0-19: shard c/0/0/0/0 missing" in out
    assert "marked 3 incomplete" in out
    assert open_store(store).keys() == [keys[2], keys[4]]  # readers no longer see them
    assert main(["extract", str(videos), "-o", str(store), "--workers", "0", "--quiet"]) == 0
    assert "extracted                      3 videos" in capsys.readouterr().out
    assert digest(store) == digest(clean)
    assert main(["verify", str(store), "--workers", "0", "--quiet"]) == 0


def test_a_store_without_checksums_is_checked_for_decodability(tmp_path):
    """Hand-written with plain zarr (no shards, no CRC-32C, no recorded sizes): what can be checked is."""
    from stores import index_frames

    path = write_store(tmp_path / "plain.zarr", {"a": {"frames": index_frames(20)}, "b": {"frames": index_frames(20)}})
    store = open_store(path)
    assert check_video(store, "a") == []
    chunk = tmp_path / "plain.zarr" / "videos" / "b" / "frames" / "c" / "1" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:10])
    problems = check_video(store, "b")
    assert [(p.array, p.frames) for p in problems] == [("frames", (16, 20))]
    assert zarr.open_group(path, mode="r")["videos"]["a"]["frames"].metadata.codecs  # plain zarr wrote it


@pytest.mark.slow
def test_verify_runs_on_ray_against_a_store_in_s3(s3, videos, tmp_path):
    url = "s3://mvtools-test/verify.zarr"
    endpoint = ["--storage-option", f"endpoint={s3.endpoint}"]
    env = s3.env()
    subprocess.run([MVTOOLS, "extract", str(videos), "-o", url, *endpoint, "--workers", "0", "--quiet"], env=env,
                   check=True, capture_output=True)
    keys = open_store(url, storage_options=s3.options()).keys()
    client = s3.client()
    client.delete_object(Bucket="mvtools-test", Key=f"verify.zarr/videos/{keys[2]}/frames/c/0/0/0/0")
    shard = f"verify.zarr/videos/{keys[4]}/mv/c/0/0/0/0"
    body = bytearray(client.get_object(Bucket="mvtools-test", Key=shard)["Body"].read())
    body[len(body) // 3] ^= 0xFF
    client.put_object(Bucket="mvtools-test", Key=shard, Body=bytes(body))
    done = subprocess.run([MVTOOLS, "verify", url, *endpoint, "--workers", "2", "--json"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert sorted(report["damaged"]) == sorted([keys[2], keys[4]])
    assert [p["array"] for p in report["damaged"][keys[4]]] == ["mv"]

"""Clips from a store in object storage (SeaweedFS started by the test session), counted by a proxy: the
requests a clip costs, opening a dataset, reads equal to a local store's, and a default ``fork`` DataLoader."""

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mvtools.fetch import _runtime_running
from mvtools.reader import SHARD_INDEXES, VideoReader
from mvtools.shards import chunks_for, layout_of
from trainer.data import ClipDataset, ClipSpec, clip_indices, crop_view

BUCKET = "mvtools-test"


def upload(s3, local: Path, prefix: str) -> str:
    client = s3.client()
    for path in sorted(local.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(local).as_posix()}")
    return f"s3://{BUCKET}/{prefix}"


@pytest.fixture(scope="module")
def remote(s3, small_shards) -> str:
    return upload(s3, small_shards, "reads/small.zarr")


@pytest.fixture
def proxy(s3):
    from proxy import Proxy

    with Proxy(s3.endpoint) as p:
        yield p


def options(s3, endpoint: str) -> dict:
    return {**s3.options(), "endpoint": endpoint}


def test_remote_reads_equal_local_reads(s3, remote, small_shards):
    for key in ("left__left_0000", "right__right_0001"):
        here, there = VideoReader(str(small_shards), key), VideoReader(remote, key, s3.options())
        names = ["frames", "mv", "mv_mask", "residual", "keyframes", "keyframe_index", "pts", "flow", "mv_acc"]
        idx = {name: np.minimum(np.arange(7, 50, 3), here.info(name).shape[0] - 1) for name in names}
        a, b = here.read(idx), there.read(idx)
        for name in names:
            assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), name


def expected_requests(clips, arrays, layouts) -> int:
    """What ``read_view`` should cost for these clips from a cold process: each array's zarr.json once per video,
    each shard index once, then one range per shard and array per clip."""
    seen, n = set(), 0
    for key, idx in clips:
        for name in arrays:
            shards = set((chunks_for(layouts[name], idx) // layouts[name].chunks_per_shard).tolist())
            new = {(key, name)} | {(key, name, s) for s in shards}
            n += len(new - seen) + len(shards)
            seen |= new
    return n


def test_a_clip_costs_the_requests_its_shards_imply(s3, remote, small_shards, proxy):
    ds = ClipDataset(remote, modalities=("rgb", "mv"), spec=ClipSpec(16, 2, 32), train=False,
                     storage_options=options(s3, proxy.endpoint))
    reader = VideoReader(str(small_shards), ds.videos[0].key)
    layouts = {name: layout_of(reader.info(name).metadata) for name in ("frames", "mv")}
    assert (layouts["frames"].shard, layouts["mv"].shard, layouts["mv"].chunk) == (16, 16, 4)
    starts = [0, 3, 18, 19, 0, 30]
    SHARD_INDEXES.clear()  # this process's cache: earlier tests read the same objects
    clips = [(v.key, clip_indices(start, ds.spec, v.num_frames)) for v in ds.videos for start in starts]
    proxy.reset()
    for video, start in ((v, start) for v in range(len(ds.videos)) for start in starts):
        ds.read(video, crop_view(ds.videos[video], start, 0, 1))
    assert proxy.requests == expected_requests(clips, ("frames", "mv"), layouts), proxy.log
    assert all(method == "GET" for method, _, _ in proxy.log)
    # Warm (metadata and indexes known): one range per shard and array. These 31-frame clips span 2-3 shards of
    # 16 frames; in the default layout (128-frame shards) a clip spans one, two at a boundary.
    proxy.reset()
    for video, start in ((v, start) for v in range(len(ds.videos)) for start in starts):
        ds.read(video, crop_view(ds.videos[video], start, 0, 1))
    spans = sum(len(set((chunks_for(layouts[n], idx) // layouts[n].chunks_per_shard).tolist()))
                for _, idx in clips for n in ("frames", "mv"))
    assert proxy.requests == spans


def test_opening_a_dataset_costs_the_same_requests_for_more_videos(s3, small_shards, tmp_path, proxy):
    from mvtools.store import info

    wide = tmp_path / "wide.zarr"
    shutil.copytree(small_shards, wide)
    for key in ("left__left_0000", "right__right_0001"):
        for copy in range(3):
            shutil.copytree(wide / "videos" / key, wide / "videos" / f"{key}_copy{copy}")
    info(wide, rebuild_index=True)
    urls = {2: upload(s3, small_shards, "open/two.zarr"), 8: upload(s3, wide, "open/eight.zarr")}
    counts = {}
    for videos, url in urls.items():
        proxy.reset()
        ds = ClipDataset(url, modalities=("rgb", "mv"), storage_options=options(s3, proxy.endpoint))
        assert len(ds.videos) == videos
        counts[videos] = proxy.requests
    assert counts[2] == counts[8], counts  # the index, not a read per video


def helpers() -> list[int]:
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"helper_main" in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def test_a_default_fork_dataloader_reads_an_s3_store(s3, remote):
    """obstore's runtime has run in this process (the dataset's listing) when the DataLoader forks its workers:
    they read through helper processes of their own, which end with them."""
    ds = ClipDataset(remote, modalities=("rgb", "mv", "keyframe"), spec=ClipSpec(8, 2, 32), train=False,
                     clips_per_video=3, storage_options=s3.options())
    assert _runtime_running()
    want = [ds[i] for i in range(len(ds))]
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context="fork", timeout=60)
    got = [sample for batch in loader for sample in _unbatch(batch)]
    assert [s["key"] for s in got] == [s["key"] for s in want]
    for a, b in zip(got, want):
        for name in ("rgb", "mv", "keyframe"):
            assert torch.equal(a["views"][0][name], b["views"][0][name])
    deadline = time.time() + 20
    while helpers() and time.time() < deadline:
        time.sleep(0.2)
    assert not helpers()


def _unbatch(batch: dict) -> list[dict]:
    n = len(batch["key"])
    return [{"key": batch["key"][i], "views": [{k: v[i] for k, v in view.items()} for view in batch["views"]]}
            for i in range(n)]

"""Clips per second into PyTorch: ClipDataset on a store versus decoding the source videos on the fly, and (with
``--remote``) a local store versus the same store in object storage behind added latency.

Both sides serve the same clips (same videos, starts, crops, flips: one ``View`` per clip drawn from the same
seed) as RGB (3, T, S, S) + motion vectors (4, T, S/4, S/4) tensors, through a DataLoader with 2 workers.
The on-the-fly side seeks each video to the keyframe before the clip, decodes with PyAV up to the clip's last
frame (motion vectors exported, frames scaled to the store's size by swscale) and rasterises the vectors, which
is what a loader without a store has to do; it then applies the same crop code. Interleaved rounds, best of
each; also bytes read per clip (the process's read() bytes, one worker-less pass each).

    python benchmarks/loader.py [--videos 12] [--frames 150] [--clips 48] [--rounds 2]

``--remote``: the store is also uploaded to an S3 server (SeaweedFS started on 127.0.0.1, or ``--store
s3://bucket/path --storage-option endpoint=http://...`` for another plain-HTTP one) and read through a proxy on
127.0.0.1 that holds every request ``--latencies`` ms (0, 10, 40 by default: a round trip to a bucket) and
counts requests and response bytes. Each configuration reads the same clips (``ClipDataset``, one random view of
RGB + MV, batches of 8, 2 workers started with the default ``fork``) in interleaved rounds: a first pass with
fresh workers (``cold``: metadata and shard indexes read), then a timed pass on the same workers (``warm``).
Rows: the local folder (the peer of every ratio), s3 at each latency with the default reader, the settings that
hold 40 ms, exact bytes (``ObjectStoreSource.gap = 0``), and plain zarr reads (how clips were read before
``mvtools.reader``; forkserver workers, since obstore does not survive ``fork``).

    python benchmarks/loader.py --remote --videos 26 --clips 192 --rounds 2
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mvtools.decode import MotionRecord, motion_vectors_from_side_data, probe, to_rgb  # noqa: E402
from mvtools.extract import ExtractConfig, extract  # noqa: E402
from mvtools.features import stored_size  # noqa: E402
from mvtools.motion import dense_field, grid_shape, resize_field  # noqa: E402
from mvtools.synth import MOTIONS, encode_video, render  # noqa: E402
from trainer.data import (  # noqa: E402
    ClipDataset,
    ClipSpec,
    _rgb,
    clip_indices,
    crop_resize,
    random_view,
    scale_vectors,
)


def decode_range(path: Path, first: int, last: int, size: tuple[int, int], fps: float):
    """MotionRecords of frames first..last: seek to the keyframe at or before ``first``, decode forward."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        stream.codec_context.options = {"flags2": "+export_mvs"}
        t0 = stream.start_time or 0
        container.seek(t0 + int(first / fps / stream.time_base), stream=stream, backward=True)
        for packet in container.demux(stream):
            for frame in packet.decode():
                index = round(float((frame.pts - t0) * stream.time_base) * fps)
                if index > last + 4:  # past the last frame, B-frame reordering included
                    return
                yield MotionRecord(index, float(frame.time), "", bool(frame.key_frame),
                                   motion_vectors_from_side_data(frame.side_data.get("MOTION_VECTORS")),
                                   to_rgb(frame, *size))


class SourceClips(torch.utils.data.Dataset):
    """The same clips, decoded from the source files at every access (seeking to the nearest keyframe)."""

    def __init__(self, store_dataset: ClipDataset, sources: dict[str, Path], views: list):
        self.ds, self.sources, self.views = store_dataset, sources, views

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, i: int) -> dict:
        video_index, view = self.views[i]
        video, spec = self.ds.videos[video_index], self.ds.spec
        path = self.sources[video.key]
        info = probe(path)
        size = stored_size(info.width, info.height, min(video.width, video.height))
        idx = clip_indices(view.start, spec, video.num_frames)
        grid = grid_shape(size[1], size[0])
        frames, fields = {}, {}
        for rec in decode_range(path, int(idx.min()), int(idx.max()), size, info.fps):
            if rec.index in idx:
                field, mask = dense_field(rec.motion_vectors, info.height, info.width, cell=8)
                fields[rec.index] = resize_field(field, mask, grid, (size[0] / info.width,
                                                                     size[1] / info.height))[0]
                frames[rec.index] = rec.frame
        frames = np.stack([frames[int(j)] for j in idx])
        mv = np.stack([fields[int(j)] for j in idx])
        mv = scale_vectors(crop_resize(mv, view.box, spec.size // 4, cell=4), view.box, spec.size, view.flip)
        mv = mv[..., ::-1, :] if view.flip else mv
        return {"rgb": _rgb(frames, view, spec, True),
                "mv": torch.from_numpy(np.ascontiguousarray(mv.transpose(3, 0, 1, 2)))}


class StoreClips(torch.utils.data.Dataset):
    def __init__(self, store_dataset: ClipDataset, views: list):
        self.ds, self.views = store_dataset, views

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, i: int) -> dict:
        video_index, view = self.views[i]
        return self.ds.read(video_index, view)


def make_sources(folder: Path, videos: int, frames: int) -> None:
    names = list(MOTIONS)
    for i in range(videos):
        name = names[i % len(names)]
        clip = render(name, np.random.default_rng(i), num_frames=frames, width=320, height=240)
        encode_video(folder / name / f"{name}_{i:03d}.mp4", clip, gop=48)


def clips_per_second(dataset, workers: int) -> float:
    # PyAV frames whose side data was read sit in reference cycles; if a forked DataLoader worker's GC frees
    # one, FFmpeg joins decoder threads that do not exist in the child and the worker hangs. Free them here.
    gc.collect()
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, num_workers=workers)
    t0 = time.perf_counter()
    n = sum(len(batch["rgb"]) for batch in loader)
    return n / (time.perf_counter() - t0)


def read_bytes() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar")).split()[1])


def bytes_per_clip(dataset, clips: int) -> float:
    before = read_bytes()
    for i in range(clips):
        dataset[i]
    return (read_bytes() - before) / clips


class EpochItems:
    """Items ``(index, epoch)`` of ``clips`` clips, a new epoch (new random views) at every pass."""

    def __init__(self, size: int, clips: int):
        self.size, self.clips, self.epoch = size, clips, 0

    def __len__(self) -> int:
        return self.clips

    def __iter__(self):
        self.epoch += 1
        return iter([(i % self.size, self.epoch * (1 + self.clips // self.size) + i // self.size)
                     for i in range(self.clips)])


class ZarrClipDataset(ClipDataset):
    """Clips read as before ``mvtools.reader``: zarr arrays of the video's group, one array after the other."""

    def group(self, video: int):
        from mvtools.storage import open_root

        if getattr(self, "_zarr_pid", None) != os.getpid():
            self._zarr_videos, self._zarr_pid = open_root(self.store_path, self.storage_options)["videos"], os.getpid()
        return self._zarr_videos[self.videos[video].key]


def loader_pass(dataset, items: EpochItems, workers: int, context, proxy) -> dict:
    """A cold pass (fresh workers) then a timed warm pass on the same workers: clips/s, requests and bytes."""
    gc.collect()
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, sampler=items, num_workers=workers,
                                         persistent_workers=workers > 0, multiprocessing_context=context)
    counts = {}
    for name in ("cold", "warm"):
        if proxy is not None:
            proxy.reset()
        t0 = time.perf_counter()
        n = sum(len(batch["key"]) for batch in loader)
        counts[name] = {"clips/s": n / (time.perf_counter() - t0), "requests": proxy.requests / n if proxy else 0,
                        "bytes": proxy.nbytes / n if proxy else 0}
    del loader
    return counts


def upload(local: Path, url: str, options: dict) -> None:
    import obstore

    from mvtools.storage import _object_store

    store = _object_store(url, options)
    for path in sorted(local.rglob("*")):
        if path.is_file():
            obstore.put(store, path.relative_to(local).as_posix(), path.read_bytes())


def remote(args, tmp: Path, store: Path, spec: ClipSpec) -> None:
    """Local folder vs the same store in object storage behind each latency, side by side (see the docstring)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from proxy import Proxy

    from mvtools.fetch import ObjectStoreSource
    from mvtools.storage import parse_storage_options

    server = None
    if args.store:
        url, options = args.store, parse_storage_options(args.storage_option)
    else:
        from s3server import S3Server

        server = S3Server(tmp / "s3")
        server.start()
        server.create_bucket("loader-bench")
        url, options = "s3://loader-bench/store.zarr", server.options()
    try:
        upload(store, url, options)
        proxies = {ms: Proxy(options["endpoint"], ms / 1000).__enter__() for ms in args.latencies}
        via = {ms: {**options, "endpoint": p.endpoint} for ms, p in proxies.items()}
        top = max(args.latencies)
        mods = ("rgb", "mv")
        configs = {"local folder": (lambda: ClipDataset(store, mods, spec=spec, views=1), None, None, None)}
        for ms in args.latencies:
            configs[f"s3, {ms} ms"] = (lambda ms=ms: ClipDataset(url, mods, spec=spec, views=1,
                                                                   storage_options=via[ms]), None, proxies[ms], None)
        configs[f"s3, {top} ms, concurrent_clips=1"] = (
            lambda: ClipDataset(url, mods, spec=spec, views=1, storage_options=via[top], concurrent_clips=1),
            None, proxies[top], None)
        configs[f"s3, {top} ms, concurrent_clips=16"] = (
            lambda: ClipDataset(url, mods, spec=spec, views=1, storage_options=via[top], concurrent_clips=16),
            None, proxies[top], None)
        configs[f"s3, {top} ms, exact bytes (gap 0)"] = (
            lambda: ClipDataset(url, mods, spec=spec, views=1, storage_options=via[top]), None, proxies[top], 0)
        mid = sorted(args.latencies)[len(args.latencies) // 2]
        configs[f"s3, {mid} ms, RGB only"] = (
            lambda: ClipDataset(url, ("rgb",), spec=spec, views=1, storage_options=via[mid]), None, proxies[mid], None)
        configs[f"s3, {mid} ms, forkserver workers"] = (
            lambda: ClipDataset(url, mods, spec=spec, views=1, storage_options=via[mid]), "forkserver", proxies[mid],
            None)
        configs[f"s3, {mid} ms, plain zarr reads (before)"] = (
            lambda: ZarrClipDataset(url, mods, spec=spec, views=1, storage_options=via[mid], concurrent_clips=1),
            "forkserver", proxies[mid], None)
        opening = {}
        for ms, p in proxies.items():  # what opening a dataset costs: the index, then two arrays' metadata
            p.reset()
            t0 = time.perf_counter()
            ClipDataset(url, mods, spec=spec, views=1, storage_options=via[ms])
            opening[ms] = (p.requests, time.perf_counter() - t0)
        results: dict[str, list[dict]] = {name: [] for name in configs}
        default_gap = ObjectStoreSource.gap
        for _ in range(args.rounds):
            for name, (make, context, proxy, gap) in configs.items():
                ObjectStoreSource.gap = default_gap if gap is None else gap  # the workers inherit it
                dataset = make()
                results[name].append(loader_pass(dataset, EpochItems(len(dataset), args.clips), args.workers,
                                                 context, proxy))
                ObjectStoreSource.gap = default_gap
        for p in proxies.values():
            p.__exit__(None, None, None)
    finally:
        if server is not None:
            server.kill()
    best = {name: max(runs, key=lambda r: r["warm"]["clips/s"]) for name, runs in results.items()}
    peer = best["local folder"]["warm"]["clips/s"]
    print(f"{args.clips} clips per pass of 16x112x112 RGB + MV (stride 2, one random view) from {args.videos} videos "
          f"of {args.frames} frames (320x240 H.264, GOP 48; store at short side 128, shards of 128 frames); "
          f"DataLoader with {args.workers} workers, batches of 8; best warm pass of {args.rounds} rounds; s3 = "
          f"{'SeaweedFS on 127.0.0.1' if server else url} through a proxy adding the latency to every request\n")
    print("opening the dataset: " + ", ".join(f"{n} requests, {t:.2f} s at {ms} ms" for ms, (n, t) in opening.items())
          + "\n")
    print("| loader | clips/s (warm) | vs local | requests per clip (warm / cold) | kB per clip (warm / cold) |")
    print("|---|---|---|---|---|")
    for name, r in best.items():
        warm, cold = r["warm"], r["cold"]
        counted = name != "local folder"
        print(f"| {name} | {warm['clips/s']:.1f} | {warm['clips/s'] / peer:.2f}x | "
              + (f"{warm['requests']:.2f} / {cold['requests']:.2f} | {warm['bytes'] / 1e3:.0f} / "
                 f"{cold['bytes'] / 1e3:.0f} |" if counted else "| |"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--frames", type=int, default=150, help="frames per source video (320x240, GOP 48)")
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--remote", action="store_true", help="local store vs the store in object storage")
    parser.add_argument("--store", help="with --remote: an s3:// URL to upload the store to (default: a SeaweedFS "
                                        "server started here); its endpoint must be plain http")
    parser.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                        help="with --store: obstore options (endpoint=http://..., credentials)")
    parser.add_argument("--latencies", type=lambda t: [int(v) for v in t.split(",")], default=[0, 10, 40],
                        help="ms added to every request (default 0,10,40)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = ClipSpec(clip_len=16, stride=2, size=112)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_sources(tmp / "videos", args.videos, args.frames)
        store = tmp / "store.zarr"
        extract(tmp / "videos", store, ExtractConfig(), progress=False)
        if args.remote:
            remote(args, tmp, store, spec)
            return
        ds = ClipDataset(store, modalities=("rgb", "mv"), spec=spec)
        sources = {v.key: next((tmp / "videos").rglob(v.key.split("__")[-1] + ".mp4")) for v in ds.videos}
        rng = np.random.default_rng(0)
        views = [(int(v), random_view(rng, ds.videos[v], spec))
                 for v in rng.integers(0, len(ds.videos), args.clips)]
        on_store, on_the_fly = StoreClips(ds, views), SourceClips(ds, sources, views)
        a, b = on_store[0], on_the_fly[0]
        assert a["mv"].shape == b["mv"].shape and a["rgb"].shape == b["rgb"].shape
        store_rates, source_rates = [], []
        for _ in range(args.rounds):
            store_rates.append(clips_per_second(on_store, args.workers))
            source_rates.append(clips_per_second(on_the_fly, args.workers))
        store_bytes = bytes_per_clip(on_store, min(16, args.clips))
        source_bytes = bytes_per_clip(on_the_fly, min(16, args.clips))
    s, d = max(store_rates), max(source_rates)
    print(f"{args.clips} clips of 16x112x112 RGB + MV (stride 2) from {args.videos} videos of {args.frames} "
          f"frames (320x240 H.264, GOP 48; store at short side 128); DataLoader with {args.workers} workers, "
          f"best of {args.rounds}\n")
    print("| loader | clips/s | bytes read per clip |")
    print("|---|---|---|")
    print(f"| ClipDataset (store) | {s:.1f} | {store_bytes / 1e3:.0f} kB |")
    print(f"| PyAV decode + MVs on the fly | {d:.1f} | {source_bytes / 1e3:.0f} kB |")
    print(f"\nstore / on the fly: {s / d:.1f}x")


if __name__ == "__main__":
    main()

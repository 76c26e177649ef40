"""Clips per second into PyTorch: ClipDataset on a store versus decoding the source videos on the fly.

Both sides serve the same clips (same videos, starts, crops, flips: one ``View`` per clip drawn from the same
seed) as RGB (3, T, S, S) + motion vectors (4, T, S/4, S/4) tensors, through a DataLoader with 2 workers.
The on-the-fly side seeks each video to the keyframe before the clip, decodes with PyAV up to the clip's last
frame (motion vectors exported, frames scaled to the store's size by swscale) and rasterises the vectors, which
is what a loader without a store has to do; it then applies the same crop code. Interleaved rounds, best of
each; also bytes read per clip (the process's read() bytes, one worker-less pass each).

    python benchmarks/loader.py [--videos 12] [--frames 150] [--clips 48] [--rounds 2]
"""

from __future__ import annotations

import argparse
import gc
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--frames", type=int, default=150, help="frames per source video (320x240, GOP 48)")
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = ClipSpec(clip_len=16, stride=2, size=112)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_sources(tmp / "videos", args.videos, args.frames)
        store = tmp / "store.zarr"
        extract(tmp / "videos", store, ExtractConfig(), progress=False)
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

"""Extraction speed and size against the peers it replaces, side by side in one run, one core each.

  1. motion vectors only: mvtools.iter_motion(decode_frames=False) vs mvextractor (set_decode_frames(False))
  2. full extraction (default modalities, written to a store) vs PyAV plain decoding of the same file into
     RGB arrays (decode + to_ndarray("rgb24"), PyAV's defaults); decode alone is printed too
  3. store bytes / source bytes, and per array
  4. frame differences: bytes if stored vs time to derive them on read

Usage: python benchmarks/extract.py [VIDEO ...] [--repeats N]   (default: the two 720p clips in ../shared)
Targets on the 720p clip: (1) >= 1.5x, (2) >= 0.5x, (3) <= 3x.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import av
import numpy as np
from numcodecs import Zstd

from mvtools import iter_motion, open_store
from mvtools.extract import ExtractConfig, extract_video
from mvtools.motion import frame_difference
from mvtools.store import create_store, disk_bytes, info

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
DEFAULT = [str(REAL / "vid_h264.mp4"), str(REAL / "vid_mpeg4_part2.mp4")]


def mvextractor_mv_only(path: str) -> int:
    from mvextractor.videocap import VideoCap

    cap = VideoCap()
    cap.open(path)
    cap.set_decode_frames(False)  # after open(), which resets it
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def mvtools_mv_only(path: str) -> int:
    return sum(1 for _ in iter_motion(path, decode_frames=False))


def pyav_decode_only(path: str) -> int:
    with av.open(path) as c:
        return sum(1 for _ in c.decode(video=0))


def pyav_plain_decode(path: str) -> int:
    with av.open(path) as c:
        return sum(1 for frame in c.decode(video=0) if frame.to_ndarray(format="rgb24") is not None)


def mvtools_full_extract(path: str, workdir: str) -> int:
    store_path = os.path.join(workdir, "bench.zarr")
    shutil.rmtree(store_path, ignore_errors=True)
    config = ExtractConfig()
    store = create_store(store_path, config.settings())
    return extract_video(path, store, "video", config, attrs={"source": os.path.basename(path)})["num_frames"]


def best_fps(fn, repeats: int) -> tuple[float, int]:
    best, frames = float("inf"), 0
    for _ in range(repeats):
        t = time.perf_counter()
        frames = fn()
        best = min(best, time.perf_counter() - t)
    return frames / best, frames


def bench(path: str, repeats: int, work: str) -> None:
    contenders = {
        "mvextractor, MV only": lambda: mvextractor_mv_only(path),
        "mvtools, MV only": lambda: mvtools_mv_only(path),
        "PyAV decode to RGB": lambda: pyav_plain_decode(path),
        "PyAV decode only": lambda: pyav_decode_only(path),
        "mvtools full extraction": lambda: mvtools_full_extract(path, work),
    }
    fps = {name: 0.0 for name in contenders}
    for _ in range(repeats):  # interleaved, so drifts in machine load hit every contender alike
        for name, fn in contenders.items():
            fps[name] = max(fps[name], best_fps(fn, 1)[0])
    print(f"video: {path} ({os.path.getsize(path) / 1e6:.2f} MB), one core, best of {repeats}")
    for name, value in fps.items():
        print(f"  {name:<26} {value:8.1f} frames/s")
    mv_ratio = fps["mvtools, MV only"] / fps["mvextractor, MV only"]
    full_ratio = fps["mvtools full extraction"] / fps["PyAV decode to RGB"]
    print(f"motion vectors: mvtools / mvextractor          = {mv_ratio:.2f}x   (target >= 1.5x)")
    print(f"full extraction: mvtools / PyAV decode to RGB  = {full_ratio:.2f}x   (target >= 0.5x)")
    print(f"full extraction: mvtools / PyAV decode only    = "
          f"{fps['mvtools full extraction'] / fps['PyAV decode only']:.2f}x")

    store_path = os.path.join(work, "bench.zarr")
    summary = info(store_path)
    source = os.path.getsize(path)
    print(f"store / source bytes = {disk_bytes(store_path) / source:.2f}x   (target <= 3x); per array:")
    for name, size in summary["bytes_per_array"].items():
        print(f"  {name:<15} {size / 1e6:8.3f} MB  {size / source:6.3f}x")

    view = open_store(store_path)["video"]
    frames = view.frames[:]
    stored = len(Zstd(level=3).encode(np.diff(frames.astype(np.int16), axis=0)))
    starts = range(16, len(frames) - 16, 16)
    t = time.perf_counter()
    for s in starts:
        frame_difference(frames[s:s + 16], previous=frames[s - 1])
    subtract = (time.perf_counter() - t) / len(starts)
    t = time.perf_counter()
    for s in starts:
        view.frames[s:s + 16]
    read = (time.perf_counter() - t) / len(starts)
    t = time.perf_counter()
    for s in starts:
        view.frames[s - 1:s + 16]
    read_extra = (time.perf_counter() - t) / len(starts) - read
    print(f"framediff: storing it (int16, zstd) would add {stored / 1e6:.2f} MB = {stored / source:.2f}x the source; "
          f"deriving it on read costs {1e3 * subtract:.2f} ms per 16-frame clip to subtract, plus "
          f"{1e3 * read_extra:.2f} ms to read the frame before the clip (reading the clip: {1e3 * read:.2f} ms)\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="*", default=DEFAULT)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core for every contender
    work = tempfile.mkdtemp(prefix="mvtools-bench-")
    try:
        for path in args.videos:
            bench(path, args.repeats, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

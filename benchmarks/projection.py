"""Kinetics-400 and Something-Something v2 at full size, projected from measured per-video figures.

Each dataset is stood in for by a few synthetic videos of its shape, extracted with the default settings
(frames, vectors, residuals, keyframes; short side 128) in this process, one core:

- Kinetics-400: 10 s clips at 30 fps (300 frames), 426x240 (K400 as commonly distributed, short side 240-320),
  H.264 with B-frames; 240,000 videos.
- SSv2: 3.7 s clips at 12 fps (45 frames), 427x240, VP9 in WebM, as distributed, so every clip is transcoded
  to H.264 first (FFmpeg exports no VP9 vectors); 220,847 videos.

Measured per video: CPU seconds, store bytes, objects (files); projected: dataset store size, object
count, and core-hours (divide by the cores of the cluster for wall time; the per-video fixed cost of the
pipeline is in benchmarks/scale.py). Bytes depend on content: synthetic textures compress worse than most
real footage, so the bytes are an upper-side estimate (the real 720p clip stores at 2.4x its H.264 source).

Usage: python benchmarks/projection.py [--videos 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from mvtools.extract import ExtractConfig, extract
from mvtools.store import info
from mvtools.synth import MOTIONS, encode_video, render

DATASETS = {
    "Kinetics-400": {"videos": 240_000, "frames": 300, "fps": 30, "size": (426, 240), "codec": "libx264",
                     "suffix": ".mp4", "bframes": 2},
    "SSv2": {"videos": 220_847, "frames": 45, "fps": 12, "size": (427, 240), "codec": "libvpx-vp9",
             "suffix": ".webm", "bframes": 0},
}


def measure(spec: dict, videos: int, work: Path, shard_frames: int) -> dict:
    src = work / "src"
    shutil.rmtree(src, ignore_errors=True)
    rng = np.random.default_rng(0)
    for i in range(videos):
        frames = render(list(MOTIONS)[i % len(MOTIONS)], rng, num_frames=spec["frames"], width=spec["size"][0],
                        height=spec["size"][1])
        encode_video(src / "c" / f"v{i}{spec['suffix']}", frames, fps=spec["fps"], codec=spec["codec"],
                     bframes=spec["bframes"], gop=spec["fps"] * 2)
    store = work / f"s{shard_frames}.zarr"
    shutil.rmtree(store, ignore_errors=True)
    start = time.process_time()
    report = extract(src, store, ExtractConfig(shard_frames=shard_frames), progress=False)
    seconds = time.process_time() - start
    assert not report.failed, report.failed
    summary = info(store)
    source = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    return {"cpu_s": seconds / videos, "bytes": summary["bytes"] / videos, "files": summary["files"] / videos,
            "source": source / videos, "transcoded": len(report.transcoded)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=2, help="synthetic videos per dataset (default 2)")
    args = parser.parse_args()
    print("| dataset | shards of | per video: CPU s, store, objects | videos | store | objects | core-hours |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="mvtools-projection-") as tmp:
        for name, spec in DATASETS.items():
            for shard in (128, 512):
                m = measure(spec, args.videos, Path(tmp), shard)
                n = spec["videos"]
                per_video = (f"{m['cpu_s']:.2f} s, {m['bytes'] / 1e6:.2f} MB ({m['bytes'] / m['source']:.1f}x its "
                             f"source), {m['files']:.0f}")
                print(f"| {name} | {shard} frames | {per_video} | {n:,} | {n * m['bytes'] / 1e12:.2f} TB | "
                      f"{n * m['files'] / 1e6:.1f} M | {n * m['cpu_s'] / 3600:,.0f} |")


if __name__ == "__main__":
    main()

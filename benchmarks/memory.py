"""Peak memory of extracting one long video: a worker streams frames through the writer a shard at a
time, so its peak RSS must not grow with the video's length.

Encodes 1-minute and 10-minute 720p H.264 videos (cached in --cache), extracts each in a fresh process
(default modalities), and prints the peak RSS of each and their difference.

Usage: python benchmarks/memory.py [--minutes 1 10] [--cache /tmp/mvtools-memory]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mvtools.synth import encode_video, render

CHILD = """
import json, shutil, sys, time
from mvtools.extract import ExtractConfig, extract_video
from mvtools.store import create_store
def peak_mb():  # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec from the parent
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
path, store_path = sys.argv[1], sys.argv[2]
shutil.rmtree(store_path, ignore_errors=True)
config = ExtractConfig()
t = time.perf_counter()
store = create_store(store_path, config.settings())
frames = extract_video(path, store, "v", config, attrs={"source": path})["num_frames"]
print(json.dumps({"frames": frames, "seconds": time.perf_counter() - t,
                  "peak_rss_mb": peak_mb()}))
"""


def long_video(path: Path, minutes: float) -> Path:
    if path.exists():
        return path
    n = int(minutes * 60 * 25)
    scene = render("right", np.random.default_rng(0), num_frames=250, width=1280, height=720)
    clip = list(scene)  # ten seconds of camera motion, looped: the decoder still decodes every frame
    encode_video(path, (clip[i % len(clip)] for i in range(n)), preset="ultrafast", gop=250)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10])
    parser.add_argument("--cache", default="/tmp/mvtools-memory")
    args = parser.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    results = {}
    for minutes in args.minutes:
        t = time.perf_counter()
        video = long_video(cache / f"{minutes:g}min_720p.mp4", minutes)
        encode = time.perf_counter() - t
        out = subprocess.run([sys.executable, "-c", CHILD, str(video), str(cache / "store.zarr")],
                             capture_output=True, text=True, check=True)
        results[minutes] = json.loads(out.stdout.strip().splitlines()[-1])
        r = results[minutes]
        print(f"{minutes:g} min 720p: {r['frames']} frames in {r['seconds']:.0f} s, peak RSS {r['peak_rss_mb']:.0f} MB"
              f" (video {video.stat().st_size / 1e6:.0f} MB; encoding took {encode:.0f} s)")
    if len(results) > 1:
        lo, hi = results[min(results)], results[max(results)]
        print(f"peak RSS grows {hi['peak_rss_mb'] - lo['peak_rss_mb']:+.0f} MB for "
              f"{hi['frames'] / lo['frames']:.0f}x the frames")


if __name__ == "__main__":
    main()

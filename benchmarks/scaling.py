"""Ray scaling of `mvtools extract`: the same synthetic dataset with 1 and with 2 workers, in one run.

Prints extraction time (tasks submitted -> last result), Ray start-up and shutdown separately, and the
speed-up of 2 workers over 1 (target on 2 cores: >= 1.7x).

Usage: python benchmarks/scaling.py [--videos 40] [--frames 96]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import ray

from mvtools.pipeline import extract_parallel
from mvtools.synth import make_dataset


def run(src: Path, work: Path, workers: int) -> tuple[float, float, float, int]:
    store = work / f"w{workers}.zarr"
    shutil.rmtree(store, ignore_errors=True)
    t0 = time.perf_counter()
    report = extract_parallel(src, store, workers=workers, progress=False)
    total = time.perf_counter() - t0
    shutdown = total - report.startup_seconds - report.seconds
    assert not report.failed and ray.is_initialized() is False
    return report.seconds, report.startup_seconds, shutdown, report.frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mvtools-scaling-"))
    try:
        src = work / "videos"
        make_dataset(src, videos=args.videos, seed=0, num_frames=args.frames, width=320, height=240)
        best = {1: None, 2: None}
        for _ in range(args.repeats):  # interleaved
            for workers in (1, 2):
                result = run(src, work, workers)
                if best[workers] is None or result[0] < best[workers][0]:
                    best[workers] = result
        print(f"{args.videos} synthetic videos x {args.frames} frames (320x240 H.264 with B-frames), "
              f"best of {args.repeats}")
        for workers, (seconds, startup, shutdown, frames) in best.items():
            print(f"  {workers} worker{'s' if workers > 1 else ' '}: {seconds:6.2f} s extracting "
                  f"({frames / seconds:6.0f} frames/s, {seconds / args.videos * 1e3:5.0f} ms/video); "
                  f"Ray start-up {startup:.2f} s, shutdown {shutdown:.2f} s")
        print(f"speed-up, 2 workers over 1: {best[1][0] / best[2][0]:.2f}x   (target >= 1.7x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

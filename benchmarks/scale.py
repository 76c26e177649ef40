"""Dataset scale: the fixed cost per video of `mvtools extract`, a rerun, `info` and listing, from N = 300 to 30,000.

Tiny videos (8 frames, 64x48, hard links to 8 small H.264 files) make decoding negligible, so what is
measured is the per-video overhead: discovery, planning, Ray scheduling, metadata, listing. For each N:

- first extraction: the whole command (`mvtools extract DATA -o STORE --quiet`, local Ray on all cores),
  wall time per video and per video per core (target: the figure at the largest N within 1.2x of the
  smallest N's, and at most 25 ms per video per core);
- rerun of the same command on the complete store (target: >= 20x faster than the first extraction);
- `mvtools info --json` (target < 3 s at 30,000) and `trainer.data.list_videos` (target < 1 s);
- the driver's peak memory (VmHWM of the `mvtools` process, polled while it runs).

Then the Ray driver loop alone, with no-op tasks: the pattern it replaces (every task submitted, then
`ray.wait(list(pending), num_returns=1)` until done) against `mvtools.pipeline.as_completed` (a bounded
window), ms per task at 1,000 and 8,000 tasks, side by side in one run.

Usage: python benchmarks/scale.py [--sizes 300,3000,30000] [--work DIR] [--loop-sizes 1000,8000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MVTOOLS = [sys.executable, "-m", "mvtools"]


def make_dataset(root: Path, n: int) -> Path:
    """n hard links to 8 tiny synthetic videos, 1,000 per folder, labelled by class folder."""
    from mvtools.synth import make_dataset as synth

    seeds = root / "seed_videos"
    if not seeds.exists():
        synth(seeds, videos=8, seed=0, num_frames=8, width=64, height=48)
    data = root / f"data_{n}"
    if data.exists():
        return data
    files = sorted(seeds.rglob("*.mp4"))
    for i in range(n):
        src = files[i % len(files)]
        folder = data / src.parent.name / f"g{i // 1000:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        os.link(src, folder / f"v{i:06d}.mp4")
    return data


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS of the process in MB, stdout) of a command."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        with contextlib.suppress(OSError, StopIteration):  # the process may end between poll and read
            peak = max(peak, next(int(line.split()[1]) for line in status.read_text().splitlines()
                                  if line.startswith("VmHWM")))
        time.sleep(0.05)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return time.perf_counter() - start, peak / 1024, out


def list_seconds(store: Path) -> float:
    from trainer.data import list_videos

    start = time.perf_counter()
    videos = list_videos(str(store))
    seconds = time.perf_counter() - start
    assert videos, store
    return seconds


def driver_loop(sizes: list[int]) -> list[tuple[int, float, float]]:
    """ms per no-op task: all submitted + ray.wait over every pending ref, against the bounded window."""
    import ray

    from mvtools.pipeline import WINDOW_PER_CPU, as_completed

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    noop = ray.remote(num_cpus=1)(lambda x: x)
    window = WINDOW_PER_CPU * os.cpu_count()
    rows = []
    try:
        ray.get([noop.remote(0) for _ in range(200)])  # workers warm
        for n in sizes:
            start = time.perf_counter()
            pending = {noop.remote(i): i for i in range(n)}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    pending.pop(ref)
                    ray.get(ref)
            old = (time.perf_counter() - start) / n * 1000
            start = time.perf_counter()
            count = sum(1 for _ in as_completed(lambda i, job: noop.remote(job), range(n), window))
            new = (time.perf_counter() - start) / n * 1000
            assert count == n
            rows.append((n, old, new))
    finally:
        ray.shutdown()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="300,3000,30000")
    parser.add_argument("--loop-sizes", default="1000,8000")
    parser.add_argument("--work", help="folder for datasets and stores (default: a temporary one, removed)")
    parser.add_argument("--size", type=int, default=48,
                        help="stored short side (default 48: the sources' own size, so nothing is upscaled and "
                             "decoding stays a small share of the per-video cost)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(args.work or tempfile.mkdtemp(prefix="mvtools-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count()
    rows = []
    try:
        for n in sizes:
            data = make_dataset(work, n)
            store = work / f"store_{n}.zarr"
            shutil.rmtree(store, ignore_errors=True)
            command = [*MVTOOLS, "extract", str(data), "-o", str(store), "--quiet", "--size", str(args.size)]
            first, peak, out = timed(command)
            assert f"{n} videos" in out, out
            rerun, rerun_peak, out = timed(command)
            assert "already complete" in out and f"  {n}\n" in out, out
            info, _, _ = timed([*MVTOOLS, "info", str(store), "--json"])
            rows.append((n, first, peak, rerun, info, list_seconds(store)))
            print(f"N={n}: first {first:.1f} s, rerun {rerun:.2f} s, info {info:.2f} s", flush=True)
            shutil.rmtree(store)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\n{cores} cores; tiny videos of 8 frames, 64x48, stored at short side {args.size}; whole commands")
    print("| videos | first extraction | ms per video | ms per video per core | rerun | first / rerun | "
          "info --json | list_videos | driver peak memory |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n, first, peak, rerun, info, listing in rows:
        print(f"| {n:,} | {first:.1f} s | {first / n * 1000:.1f} | {first / n * 1000 * cores:.1f} | {rerun:.2f} s | "
              f"{first / rerun:.0f}x | {info:.2f} s | {listing:.3f} s | {peak:.0f} MB |")
    small, large = rows[0], rows[-1]
    growth = (large[1] / large[0]) / (small[1] / small[0])
    per_core = large[1] / large[0] * 1000 * cores
    print(f"\nper-video time at {large[0]:,} / at {small[0]:,}: {growth:.2f}x (target <= 1.2x); "
          f"{per_core:.1f} ms per video per core at {large[0]:,} (target <= 25)")
    print(f"rerun at {large[0]:,}: {large[1] / large[3]:.0f}x faster than the first extraction (target >= 20x); "
          f"info {large[4]:.2f} s (target < 3 s); list_videos {large[5]:.3f} s (target < 1 s); driver memory "
          f"{small[2]:.0f} -> {large[2]:.0f} MB ({(large[2] - small[2]) * 1024 / max(1, large[0] - small[0]):.2f} "
          "kB per added video)")

    loop = driver_loop([int(s) for s in args.loop_sizes.split(",")])
    print("\n| Ray driver loop, no-op tasks | all submitted + ray.wait(all pending) | bounded window (as_completed) | "
          "ratio |")
    print("|---|---|---|---|")
    for n, old, new in loop:
        print(f"| {n:,} tasks | {old:.2f} ms/task | {new:.2f} ms/task | {old / new:.1f}x |")


if __name__ == "__main__":
    main()

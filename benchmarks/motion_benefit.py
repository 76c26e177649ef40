"""Does motion-aware pretraining learn motion? Pretrain each method on a dataset whose classes differ only by
motion (``mvtools synth``: camera moves over random textures), with the same backbone, steps and seed, then
evaluate by linear probe and retrieval. Prints a markdown table (mean +- std over seeds).

    python benchmarks/motion_benefit.py [--methods rgb,mcd,maclr] [--seeds 0,1,2] [--steps 150]

Each method trains from its tiny recipe ``pipelines/train/<method>_tiny.yaml`` (same backbone and clip spec
for all); ``--steps`` and ``--batch-size`` override every recipe alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mvtools.extract import ExtractConfig, extract  # noqa: E402
from mvtools.synth import make_dataset  # noqa: E402
from trainer.evaluate import evaluate  # noqa: E402
from trainer.loop import TrainConfig, train  # noqa: E402
from trainer.methods import REGISTRY  # noqa: E402


def recipe(method: str) -> Path:
    return ROOT / "pipelines" / "train" / f"{method}_tiny.yaml"


def build_store(work: Path, videos: int, frames: int, flow: str) -> Path:
    make_dataset(work / "videos", videos=videos, seed=1234, num_frames=frames)
    store = work / "store.zarr"
    modalities = ("frames", "mv", "residual", "keyframes")
    report = extract(work / "videos", store, ExtractConfig(modalities=modalities, flow=flow), progress=False)
    assert not report.failed, report.failed
    return store


def run(method: str, seed: int, store: Path, work: Path, args) -> dict:
    out = work / "runs" / f"{method}_{seed}"
    config = TrainConfig.from_yaml(recipe(method), store=str(store), out=str(out), seed=seed, steps=args.steps,
                                   batch_size=args.batch_size, workers=args.workers)
    t0 = time.perf_counter()
    train(config, progress=False)
    seconds = time.perf_counter() - t0
    result = evaluate(out / "checkpoint.pt", store, workers=args.workers)
    return {**result, "train_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(m for m in REGISTRY if recipe(m).exists()))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--videos", type=int, default=64, help="8 motion classes, videos / 8 each")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--flow", default="none", help="extract flow too (for methods that read it)")
    parser.add_argument("--json", metavar="FILE", help="also write every run's result here")
    args = parser.parse_args()
    methods, seeds = args.methods.split(","), [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        store = build_store(work, args.videos, args.frames, args.flow)
        results = {m: [run(m, s, store, work, args) for s in seeds] for m in methods}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))

    def cell(values):
        mean = statistics.mean(values) * 100
        return f"{mean:.1f} +- {statistics.stdev(values) * 100:.1f}" if len(values) > 1 else f"{mean:.1f}"

    first = next(iter(results.values()))[0]
    print(f"\n{args.videos} synthetic videos, {first['classes']} motion classes, {first['train_videos']} train / "
          f"{first['test_videos']} test; tiny backbone, {args.steps} steps x batch {args.batch_size}; "
          f"seeds {args.seeds}\n")
    print("| method | linear top-1 (%) | kNN top-1 (%) | recall@5 (%) | train s/run |")
    print("|---|---|---|---|---|")
    base = statistics.mean(r["linear_top1"] for r in results.get("rgb", first and [first]))
    for m, rs in results.items():
        gain = (statistics.mean(r["linear_top1"] for r in rs) - base) * 100
        print(f"| {m} | {cell([r['linear_top1'] for r in rs])} ({gain:+.1f} vs rgb) | "
              f"{cell([r['knn_top1'] for r in rs])} | {cell([r['recall@5'] for r in rs])} | "
              f"{statistics.mean(r['train_s'] for r in rs):.0f} |")


if __name__ == "__main__":
    main()

"""Training speed per method: steps/s, clips/s, and the share of step time spent waiting for data.

    python benchmarks/train_speed.py [--methods rgb,mcd,maclr,mcl,fima,hcml] [--steps 30] [--store S]
    python benchmarks/train_speed.py --backbone tiny --vit-backbone vit_tiny --clip-len 8 --size 64 --steps 5  # CPU

Every method trains from its paper-scale recipe ``pipelines/train/<method>.yaml`` (its heads, encoders,
optimiser and queue), with the backbone, clip spec and batch size overridden alike: by default the issues'
protocol, R(2+1)D-18 (ViT-B/16 for videomae and mgm) on 16 x 112 x 112 clips, batch 16, on a GPU when there is
one (bfloat16 autocast). The store is synthetic (``mvtools synth``: 192x128 H.264, 150 frames) unless ``--store``
names one.
Timings leave out the first step (worker start-up, kernel warm-up); data wait is the time the loop spends
blocked on the DataLoader (target: under 5% of step time). The loader's own speed against decoding the
sources on the fly is ``benchmarks/loader.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mvtools.extract import ExtractConfig, extract  # noqa: E402
from mvtools.synth import make_dataset  # noqa: E402
from trainer.loop import TrainConfig, train  # noqa: E402
from trainer.methods import REGISTRY  # noqa: E402


def build_store(work: Path, videos: int, frames: int) -> Path:
    make_dataset(work / "videos", videos=videos, seed=7, num_frames=frames)
    store = work / "store.zarr"
    report = extract(work / "videos", store, ExtractConfig(modalities=("frames", "mv", "residual", "keyframes")),
                     progress=False)
    assert not report.failed, report.failed
    return store


def measure(method: str, store: Path, out: Path, args) -> dict:
    recipe = ROOT / "pipelines" / "train" / f"{method}.yaml"
    vit = TrainConfig.from_yaml(recipe).backbone.startswith("vit")  # masked modelling: a ViT stands in
    config = TrainConfig.from_yaml(
        recipe, store=str(store), out=str(out), seed=0,
        steps=args.steps, warmup_steps=1, checkpoint_every=args.steps, batch_size=args.batch_size,
        workers=args.workers, backbone=args.vit_backbone if vit else args.backbone, clip_len=args.clip_len,
        size=args.size)
    summary = train(config, progress=False)
    return {"steps_per_s": summary["steps_per_s"], "clips_per_s": summary["steps_per_s"] * args.batch_size,
            "data_wait": summary["data_wait_fraction"], "device": summary["device"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(REGISTRY))
    parser.add_argument("--backbone", default="r2plus1d_18")
    parser.add_argument("--vit-backbone", default="vit_b16", help="the backbone of the masked-modelling methods "
                                                                  "(videomae, mgm), whose recipes need a ViT")
    parser.add_argument("--clip-len", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30, help="timed steps + 1")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers")
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--store", help="an existing store to read instead of a synthetic one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        store = Path(args.store) if args.store else build_store(work, args.videos, args.frames)
        results = {m: measure(m, store, work / "runs" / m, args) for m in args.methods.split(",")}
    device = next(iter(results.values()))["device"]
    name = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    print(f"\n{args.backbone}, {args.clip_len} x {args.size} x {args.size} clips, batch {args.batch_size}, "
          f"{args.workers} DataLoader workers, {args.steps - 1} timed steps; {name}\n")
    print("| method | steps/s | clips/s | data wait (% of step time) |")
    print("|---|---|---|---|")
    for m, r in results.items():
        print(f"| {m} | {r['steps_per_s']:.2f} | {r['clips_per_s']:.1f} | {100 * r['data_wait']:.1f} |")


if __name__ == "__main__":
    main()

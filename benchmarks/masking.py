"""Where do the masks fall, and what does repeated sampling buy the loader? Two measurements on the objects set
(``benchmarks/synth_objects.py``: 3-5 objects moving on their own over a drifting texture), same run:

1. **Motion energy under the mask**: for evaluation clips of every video (centre crop, 16 frames at stride 2, 128 px,
   tokens 2 x 16 x 16: 8 x 8 x 8; vectors per frame, as the recipes read them), the share of the clip's motion energy
   (sum over cells of |mv|, past vectors) that lies in hidden tokens, for tube, mgm and warped masks at the same
   ratio, drawn by the training code (``trainer.masking.clip_mask``); its ratio to the hidden share of tokens
   (1 = motion-blind); and the visible tokens' persistence (of the visible tokens whose content moved by half a
   token or more since the previous step, the share whose content was visible there too: what warped masks are
   for; a mask blind to motion scores about 1 - ratio). A random mask hides ``ratio`` of the energy on average,
   so no mask can reach more than 1 / ratio times tube: the 2x target is reachable only below a ratio of 0.5.
2. **Repeated sampling** (``repeated_sampling: K``): clips per CPU second of the masked methods' sampler reading
   16 x 112 x 112 RGB clips with mgm masks, K = 1, 2, 4 (K views per decoded clip), one process pinned to one core
   and one thread (CPU time: what a core pays, robust to whatever else runs), interleaved rounds, best of
   ``--rounds``; a clip = one view the model trains on. Wall-clock rates are printed too.

    python benchmarks/masking.py [--videos 32] [--ratios 0.25,0.5,0.75,0.9] [--json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.synth_objects import make_object_dataset  # noqa: E402
from mvtools.extract import ExtractConfig, extract  # noqa: E402
from mvtools.masking import KINDS, motion_share, token_displacement, token_energy, visible_persistence  # noqa: E402
from trainer.data import ClipDataset, ClipSpec  # noqa: E402
from trainer.masking import MaskedClips, clip_mask  # noqa: E402

PATCH, TUBELET = 16, 2


def build_store(work: Path, videos: int, frames: int) -> Path:
    store = work / "objects.zarr"
    if not (store / "zarr.json").exists():
        make_object_dataset(work / "objects_videos", videos=videos, seed=1234, num_frames=frames)
        report = extract(work / "objects_videos", store, ExtractConfig(), progress=False)
        assert not report.failed, report.failed
    return store


def mask_statistics(store: Path, ratios: list[float], clips: int, seed: int) -> dict:
    """{kind: {ratio: {"share", "enrichment", "persistence", "ms"}}}, means over every clip with motion."""
    spec = ClipSpec(16, 2, 128, mv_per_frame=True)
    data = ClipDataset(store, modalities=("mv",), train=False, clips_per_video=clips, crops=1, spec=spec)
    grid = (spec.clip_len // TUBELET, spec.size // PATCH, spec.size // PATCH)
    rng = np.random.default_rng(seed)
    found: dict = {k: {r: {"share": [], "persistence": [], "ms": []} for r in ratios} for k in KINDS}
    for i in range(len(data)):
        motion = data[i]["views"][0]["mv"]
        field = motion[:2].permute(1, 2, 3, 0).numpy()
        energy = token_energy(field, TUBELET, PATCH)
        if energy.sum() == 0:
            continue
        shift = token_displacement(field, TUBELET, PATCH, frames_per_step=TUBELET * spec.stride)
        for kind in KINDS:
            for r in ratios:
                t0 = time.perf_counter()
                mask = clip_mask(kind, grid, r, rng, motion, "mv", PATCH, TUBELET, spec.stride)
                found[kind][r]["ms"].append(1000 * (time.perf_counter() - t0))
                found[kind][r]["share"].append(motion_share(mask, energy))
                found[kind][r]["persistence"].append(visible_persistence(mask, shift, moving_only=True))
    out = {}
    for kind, by_ratio in found.items():
        out[kind] = {}
        for r, v in by_ratio.items():
            share = statistics.mean(v["share"])
            persistence = [p for p in v["persistence"] if p == p]  # clips with moving visible tokens
            out[kind][r] = {"share": share, "enrichment": share / r,
                            "persistence": statistics.mean(persistence) if persistence else None,
                            "ms": statistics.median(v["ms"]), "clips": len(v["share"])}
    return out


def loader_rates(store: Path, repeats: list[int], rounds: int, items: int) -> dict:
    """{K: {"cpu": clips (views) per CPU second of this process, "wall": per wall second}} of the mgm sampler,
    best of ``rounds`` (CPU time: what a core pays, whatever else the machine runs)."""
    import torch

    torch.set_num_threads(1)
    spec = ClipSpec(16, 2, 112, mv_per_frame=True)
    datasets = {k: ClipDataset(store, modalities=("rgb", "mv"), views=1, spec=spec,
                               sampler=MaskedClips("mgm", 0.75, PATCH, TUBELET, k)) for k in repeats}
    best = {k: {"cpu": 0.0, "wall": 0.0} for k in repeats}
    for r in range(rounds):
        for k, data in datasets.items():  # interleaved: every K sees the same machine state
            c0, t0 = time.process_time(), time.perf_counter()
            for i in range(items):
                data[(i % len(data), r)]
            cpu, wall = time.process_time() - c0, time.perf_counter() - t0
            best[k] = {"cpu": max(best[k]["cpu"], items * k / cpu), "wall": max(best[k]["wall"], items * k / wall)}
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=32, help="videos of the objects set (8 classes)")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--clips", type=int, default=2, help="evaluation clips per video")
    parser.add_argument("--ratios", default="0.25,0.5,0.75,0.9")
    parser.add_argument("--repeats", default="1,2,4", help="repeated_sampling values timed")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--items", type=int, default=24, help="decoded clips per timed round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", metavar="DIR", help="keep the videos and the store here (reused)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args()
    ratios = [float(r) for r in args.ratios.split(",")]
    repeats = [int(k) for k in args.repeats.split(",")]
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core: rates per core
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        store = build_store(work, args.videos, args.frames)
        masks = mask_statistics(store, ratios, args.clips, args.seed)
        rates = loader_rates(store, repeats, args.rounds, args.items)
    if args.json:
        print(json.dumps({"videos": args.videos, "clips_per_video": args.clips, "masks": masks,
                          "clips_per_s_per_core": rates}))
        return
    clips = masks["tube"][ratios[0]]["clips"]
    print(f"\nMotion energy under the mask: {args.videos} objects-set videos x {args.clips} centre clips "
          f"({clips} with motion), 16 x 128 x 128, tokens 2 x 16 x 16 (8 x 8 x 8)\n")
    print("| ratio | mask | motion energy hidden | / hidden share of tokens | vs tube | visible persistence (moving) | "
          "ms per mask |")
    print("|---|---|---|---|---|---|---|")
    for r in ratios:
        for kind in KINDS:
            m = masks[kind][r]
            vs = m["share"] / masks["tube"][r]["share"]
            persistence = "no moving token visible" if m["persistence"] is None else f"{m['persistence']:.1%}"
            print(f"| {r:.2f} | {kind} | {m['share']:.1%} | {m['enrichment']:.2f} | {vs:.2f}x | {persistence} | "
                  f"{m['ms']:.2f} |")
    print("\nRepeated sampling: mgm sampler, 16 x 112 x 112 RGB + mv, one core, best of "
          f"{args.rounds} interleaved rounds of {args.items} decoded clips\n")
    print("| repeated_sampling | clips per CPU second (one core) | vs K = 1 | clips per wall second |")
    print("|---|---|---|---|")
    for k, rate in rates.items():
        print(f"| {k} | {rate['cpu']:.1f} | {rate['cpu'] / rates[repeats[0]]['cpu']:.2f}x | {rate['wall']:.1f} |")


if __name__ == "__main__":
    main()

"""Probe one part of a pretrained method: the linear top-1 (and kNN top-1) of its frozen features on a labelled
store, to see where a method's motion went (``motion_benefit.py`` probes only the exported encoder).

    python benchmarks/motion_probe.py --checkpoint RUN/checkpoint.pt --store S --part motion_path.backbone --input mv
    python benchmarks/motion_probe.py ... --part motion_features --input mv      # MCD's MV encoder (upsampled)
    python benchmarks/motion_probe.py ... --part encoder --input rgb             # what mvtools eval probes

``--part`` is a dotted attribute of the method: a module receives the ``--input`` clip as a network input
(``motion_input``: vectors clamped and scaled; RGB as stored), a method of the ``Method`` receives the clip
as read. Feature maps are averaged to one vector per clip, clips to one per video (``--clips``), as in
``mvtools eval``; the split is the store's (or the last quarter of each class).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.data import ClipDataset, ClipSpec, list_videos, split_keys  # noqa: E402
from trainer.evaluate import linear_probe, retrieval  # noqa: E402
from trainer.loop import build_method, load_checkpoint  # noqa: E402
from trainer.methods.base import motion_input  # noqa: E402
from trainer.models import pool  # noqa: E402


def part_of(method, dotted: str):
    obj = method
    for name in dotted.split("."):
        obj = getattr(obj, name)
    return obj


@torch.no_grad()
def features(method, part, modality: str, dataset: ClipDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-video features (V, D) normalised, labels (V,))."""
    sums, labels = {}, {}
    for batch in torch.utils.data.DataLoader(dataset, batch_size=16, num_workers=0):
        x = batch["views"][0][modality]
        if isinstance(part, torch.nn.Module):
            x = part(x if modality == "rgb" else motion_input(x, modality))
        else:
            x = part(x)
        x = pool(x) if x.ndim > 2 else x
        for f, vid, lab in zip(x.float(), batch["video"].tolist(), batch["label"].tolist()):
            sums[vid] = sums.get(vid, 0) + f
            labels[vid] = lab
    order = sorted(sums)
    return F.normalize(torch.stack([sums[v] for v in order]), dim=1), torch.tensor([labels[v] for v in order])


def probe(checkpoint: str, store: str, part: str, modality: str, clips: int = 4) -> dict:
    state = load_checkpoint(checkpoint)
    config = state["config"]
    method = build_method(config)
    method.load_state_dict(state["model"])
    method.eval()
    train_keys, test_keys, _ = split_keys(list_videos(store))
    spec = ClipSpec(config["clip_len"], config["stride"], config["size"], mv_channels=2,
                    mv_per_frame=config.get("mv_per_frame", False))
    feats = {}
    for name, keys in (("train", train_keys), ("test", test_keys)):
        ds = ClipDataset(store, modalities=(modality,), train=False, clips_per_video=clips, keys=keys, spec=spec)
        feats[name] = features(method, part_of(method, part), modality, ds)
    (xtr, ytr), (xte, yte) = feats["train"], feats["test"]
    return {"part": part, "input": modality, "linear_top1": linear_probe(xtr, ytr, xte, yte, len(ds.classes)),
            "knn_top1": retrieval(xtr, ytr, xte, yte)["knn_top1"], "method": config["method"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, nargs="+", help="one or more RUN/checkpoint.pt")
    parser.add_argument("--store", required=True)
    parser.add_argument("--part", required=True)
    parser.add_argument("--input", default="rgb", help="the modality the part reads (rgb, mv, framediff, ...)")
    parser.add_argument("--clips", type=int, default=4)
    args = parser.parse_args()
    for checkpoint in args.checkpoint:
        print(json.dumps({"checkpoint": checkpoint, **probe(checkpoint, args.store, args.part, args.input,
                                                             args.clips)}))


if __name__ == "__main__":
    main()

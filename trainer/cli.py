"""``mvtools train`` and ``mvtools eval``: argument parsing and the thin calls into ``loop`` and ``evaluate``.

``register`` is the ``mvtools.commands`` entry point. Building the parsers imports no torch (``mvtools --help``
stays fast): method names come from the module names of ``trainer/methods``, backbone names from
``CLIP_BACKBONES`` here (a test checks both against the registries).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pkgutil
import sys
import warnings
from pathlib import Path

#: The clip backbones ``--backbone`` offers (``trainer.models.CLIP_BACKBONES``, without importing torch).
CLIP_BACKBONES = ("tiny", "r2plus1d_18", "r3d_18", "s3d")


def method_names() -> list[str]:
    """One method per module of ``trainer/methods`` (``base`` holds the contract), found without importing."""
    folder = Path(__file__).with_name("methods")
    return sorted(m.name for m in pkgutil.iter_modules([str(folder)]) if m.name != "base")


def register(sub) -> dict:
    """Add ``train`` and ``eval`` to the ``mvtools`` sub-parsers; returns their handlers."""
    add_parsers(sub)
    return {"train": run_train, "eval": run_eval}

TRAIN_EXIT = """exit codes:
  0  trained to --steps; RUN_DIR/checkpoint.pt holds the last state
  1  training failed (a NaN loss, ...): the last good checkpoint is kept
  2  usage error (unknown method, store without the method's modalities, existing run without --resume)

multi-GPU: torchrun --nproc_per_node N -m mvtools train ... (DDP; --batch-size is per process)"""


def add_parsers(sub) -> None:
    tr = sub.add_parser(
        "train", help="pretrain an encoder on a store with a self-supervised method",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Stream clips from STORE and pretrain with METHOD. Writes RUN_DIR/checkpoint.pt every\n"
                    "--checkpoint-every steps, RUN_DIR/metrics.csv (step, loss, one column per loss term, lr)\n"
                    "and TensorBoard logs in RUN_DIR/tb. --resume continues a run exactly where it stopped.",
        epilog=TRAIN_EXIT)
    tr.add_argument("--method", choices=method_names(), help="pretraining method (default rgb)")
    tr.add_argument("--store", help="an mvtools store (mvtools extract): a folder or a URL (s3://bucket/x.zarr)")
    tr.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                    help="an object-store option, repeatable (endpoint=http://host:9000, ...; see mvtools extract)")
    tr.add_argument("--out", metavar="RUN_DIR", help="run folder: checkpoint, metrics.csv, tb/")
    tr.add_argument("--config", metavar="YAML", help="a recipe from pipelines/ (e.g. pipelines/rgb_tiny.yaml); "
                                                     "flags given here override it")
    tr.add_argument("--steps", type=int, help="optimiser steps (default 100)")
    tr.add_argument("--backbone", choices=CLIP_BACKBONES, help="clip encoder (default tiny)")
    tr.add_argument("--batch-size", type=int, help="clips per step and process (default 8)")
    tr.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    tr.add_argument("--seed", type=int, help="seed of weights, batches and augmentations (default 0)")
    tr.add_argument("--workers", type=int, help="DataLoader worker processes (default 2)")
    tr.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 50)")
    tr.add_argument("--resume", action="store_true", help="continue RUN_DIR from its checkpoint")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")

    ev = sub.add_parser(
        "eval", help="linear probe and retrieval of a pretrained encoder",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Freeze the checkpoint's encoder, embed every video of STORE (centre crops of evenly spaced\n"
                    "clips, averaged), train a linear classifier on the train split and report its top-1 on the\n"
                    "test split (linear_top1), and nearest-neighbour retrieval test -> train (knn_top1,\n"
                    "recall@1/5/10/20). Splits come from the store (--recipe at extraction); a store without\n"
                    "them is split per class, the last quarter of each class's keys being the test set.",
        epilog="exit codes:\n  0  evaluated\n  2  usage error (no checkpoint, unlabelled store, empty split)")
    ev.add_argument("--checkpoint", required=True, help="RUN_DIR/checkpoint.pt")
    ev.add_argument("--store", required=True, help="a labelled mvtools store: a folder or a URL")
    ev.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                    help="an object-store option, repeatable (endpoint=http://host:9000, ...)")
    ev.add_argument("--clips", type=int, default=4, help="clips per video, averaged (default 4)")
    ev.add_argument("--batch-size", type=int, default=16)
    ev.add_argument("--workers", type=int, default=2)
    ev.add_argument("--json", action="store_true", help="print one JSON object")


def _storage_options(args, error) -> dict:
    from mvtools.storage import parse_storage_options

    try:
        return parse_storage_options(args.storage_option)
    except ValueError as e:
        raise error(str(e)) from None


def run_train(args) -> int:
    from .loop import TrainConfig, TrainError, TrainingFailed, train

    overrides = {"method": args.method, "store": args.store, "out": args.out, "steps": args.steps,
                 "backbone": args.backbone, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                 "workers": args.workers, "checkpoint_every": args.checkpoint_every}
    try:
        config = TrainConfig.from_yaml(args.config, **overrides) if args.config else \
            TrainConfig(**{k: v for k, v in overrides.items() if v is not None})
    except (ValueError, TypeError) as e:
        raise TrainError(str(e)) from None
    if not config.store or not config.out:
        raise TrainError("--store and --out are required (on the command line or in --config)")
    if args.storage_option:
        config = dataclasses.replace(config, storage_options={**config.storage_options,
                                                              **_storage_options(args, TrainError)})
    try:
        with warnings.catch_warnings():  # settings worth a second look (a queue too long for the store, ...)
            warnings.showwarning = lambda message, *_, **__: print(f"mvtools train: warning: {message}",
                                                                  file=sys.stderr)
            summary = train(config, resume=args.resume, progress=not args.quiet)
    except TrainingFailed as e:  # a usage error (TrainError) is exit 2, reported by mvtools.cli
        print(f"mvtools train: error: {e}", file=sys.stderr)
        return 1
    if summary["rank"]:
        return 0  # under torchrun, rank 0 reports
    last = summary["last"]
    terms = ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k not in ("step", "lr"))
    print(f"trained {config.method} ({config.backbone}) to step {summary['steps']}: {terms}; "
          f"{summary['steps_per_s']:.2f} steps/s, data wait {summary['data_wait_fraction']:.0%} of step time; "
          f"{config.out}/checkpoint.pt")
    return 0


def run_eval(args) -> int:
    from .data import DataError
    from .evaluate import evaluate

    result = evaluate(args.checkpoint, args.store, clips=args.clips, batch_size=args.batch_size,
                      workers=args.workers, storage_options=_storage_options(args, DataError))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['method']} ({result['backbone']}, step {result['step']}) on {result['train_videos']} train / "
          f"{result['test_videos']} test videos, {result['classes']} classes ({result['split']})")
    print(f"linear_top1  {result['linear_top1']:.3f}")
    print(f"knn_top1     {result['knn_top1']:.3f}")
    print("recall       " + "  ".join(f"@{k.split('@')[1]} {v:.3f}" for k, v in result.items()
                                      if k.startswith("recall@")))
    return 0

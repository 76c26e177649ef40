"""``mvtools train``, ``eval``, ``finetune`` and ``export``: argument parsing and thin calls into ``loop``,
``evaluate`` and ``finetune``.

``register`` is the ``mvtools.commands`` entry point. Building the parsers imports no torch (``mvtools --help``
stays fast): method names come from the module names of ``trainer/methods``, backbone names from
``CLIP_BACKBONES`` here (a test checks both against the registries).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pkgutil
import sys
import warnings
from pathlib import Path

#: The clip backbones ``--backbone`` offers (``trainer.models.CLIP_BACKBONES``, without importing torch).
CLIP_BACKBONES = ("tiny", "r2plus1d_18", "r3d_18", "mc3_18", "s3d", "i3d", "vit_tiny", "vit_s16", "vit_b16")


def method_names() -> list[str]:
    """One method per module of ``trainer/methods`` (``base`` holds the contract), found without importing."""
    folder = Path(__file__).with_name("methods")
    return sorted(m.name for m in pkgutil.iter_modules([str(folder)]) if m.name != "base")


def register(sub) -> dict:
    """Add ``train``, ``eval``, ``finetune`` and ``export`` to the ``mvtools`` sub-parsers; returns their handlers."""
    add_parsers(sub)
    add_downstream_parsers(sub)
    return {"train": run_train, "eval": run_eval, "finetune": run_finetune, "export": run_export}

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
        "eval", help="linear probes and retrieval of a pretrained encoder, multi-view test of a classifier",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="--protocol lbfgs (default for a pretraining run): freeze the encoder, embed every video of\n"
                    "STORE (centre crops of --clips evenly spaced clips, averaged), train an L-BFGS linear\n"
                    "classifier on standardised train features and report its top-1 on the test split\n"
                    "(linear_top1), and nearest-neighbour retrieval test -> train (knn_top1, recall@1/5/10/20).\n"
                    "--protocol linear-sgd: the linear protocol of MCL/FIMA: a linear classifier trained with SGD\n"
                    "on augmented clips of the frozen encoder, tested multi-view (--clips x --crops, softmax\n"
                    "averaged per video: top1, top5, mean class accuracy).\n"
                    "--protocol multiview (default for a fine-tuned run, mvtools finetune): its multi-view test.\n"
                    "Splits come from the store (--recipe at extraction); a store without them is split per\n"
                    "class, the last quarter of each class's keys being the test set.",
        epilog="exit codes:\n  0  evaluated\n  2  usage error (no checkpoint, unlabelled store, empty split, protocol "
               "that does not fit the checkpoint)")
    ev.add_argument("--checkpoint", required=True, help="RUN_DIR/checkpoint.pt")
    ev.add_argument("--store", required=True, help="a labelled mvtools store: a folder or a URL")
    ev.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                    help="an object-store option, repeatable (endpoint=http://host:9000, ...)")
    ev.add_argument("--protocol", choices=("lbfgs", "linear-sgd", "multiview"),
                    help="lbfgs (pretraining runs) or multiview (fine-tuned runs) by default")
    ev.add_argument("--clips", type=int, help="clips per video (default 4 for lbfgs, 10 for the multi-view test)")
    ev.add_argument("--crops", type=int, default=3, help="spatial crops per clip in the multi-view test (default 3)")
    ev.add_argument("--clip-len", type=int, help="frames per clip (default: the run's)")
    ev.add_argument("--stride", type=int, help="frame stride (default: the run's)")
    ev.add_argument("--size", type=int, help="crop size in pixels (default: the run's)")
    ev.add_argument("--steps", type=int, help="linear-sgd: classifier training steps (default 100)")
    ev.add_argument("--lr", type=float, help="linear-sgd: learning rate (default 0.1)")
    ev.add_argument("--out", metavar="RUN_DIR", help="linear-sgd: keep the classifier's run here (default: none)")
    ev.add_argument("--batch-size", type=int, default=16)
    ev.add_argument("--workers", type=int, default=2)
    ev.add_argument("--plot", metavar="PNG", help="multi-view protocols: write the confusion matrix here")
    ev.add_argument("--json", action="store_true", help="print one JSON object")


DOWNSTREAM_EXIT = """exit codes:
  0  fine-tuned and tested; RUN_FT/test.json holds the test metrics
  1  training failed (a NaN loss, ...): the last good checkpoint is kept
  2  usage error (unlabelled store, test classes missing from train, --init or --checkpoint that does not fit
     the backbone, existing run without --resume): one line says what; nothing is written

multi-GPU: torchrun --nproc_per_node N -m mvtools finetune ... (DDP; --batch-size is per process)"""


def add_downstream_parsers(sub) -> None:
    ft = sub.add_parser(
        "finetune", help="fine-tune an encoder on a labelled store and test it multi-view",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train the encoder plus dropout and a linear classifier end to end with cross-entropy on\n"
                    "STORE's train split (SGD or AdamW, step or cosine schedule; for ViTs VideoMAE's layer-wise lr\n"
                    "decay, drop path, label smoothing, mixup and cutmix: --config pipelines/finetune/*_vit*.yaml),\n"
                    "starting from a pretraining run (--checkpoint), a state dict (--init: mvtools export's,\n"
                    "torchvision's, or a transformers VideoMAE checkpoint's: pytorch_model.bin) or\n"
                    "random weights (--from-scratch, the baseline). Then test on the test split with 10 clips x 3\n"
                    "crops per video, softmax averaged: top1, top5, mean class and per-class accuracy\n"
                    "(RUN_FT/test.json; RUN_FT/confusion.png with --plot). Same loop as mvtools train: resume,\n"
                    "DDP, metrics.csv, TensorBoard.",
        epilog=DOWNSTREAM_EXIT)
    ft.add_argument("--store", required=True, help="a labelled mvtools store: a folder or a URL")
    ft.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                    help="an object-store option, repeatable (endpoint=http://host:9000, ...)")
    ft.add_argument("--out", required=True, metavar="RUN_FT", help="run folder: checkpoint, metrics.csv, tb/, "
                                                                   "test.json")
    ft.add_argument("--checkpoint", help="RUN/checkpoint.pt of mvtools train: its exported encoder")
    ft.add_argument("--init", metavar="PATH", help="a state dict (mvtools export, torchvision's video weights)")
    ft.add_argument("--from-scratch", action="store_true", help="random initialisation (the baseline)")
    ft.add_argument("--config", metavar="YAML", help="a recipe (pipelines/finetune/ucf101.yaml, ...); flags override")
    ft.add_argument("--backbone", choices=CLIP_BACKBONES, help="with --init / --from-scratch (default tiny); a "
                                                               "--checkpoint fixes its own")
    ft.add_argument("--steps", type=int)
    ft.add_argument("--batch-size", type=int, help="clips per step and process")
    ft.add_argument("--lr", type=float)
    ft.add_argument("--seed", type=int)
    ft.add_argument("--workers", type=int)
    ft.add_argument("--clips", type=int, help="test clips per video (default 10)")
    ft.add_argument("--crops", type=int, help="test crops per clip (default 3)")
    ft.add_argument("--resume", action="store_true", help="continue RUN_FT from its checkpoint")
    ft.add_argument("--plot", action="store_true", help="write RUN_FT/confusion.png")
    ft.add_argument("--quiet", action="store_true", help="no progress bar")
    ft.add_argument("--json", action="store_true", help="print the test metrics as one JSON object")

    ex = sub.add_parser(
        "export", help="write a run's encoder as a plain state dict (torchvision's or transformers' names)",
        description="Write the encoder of RUN/checkpoint.pt (mvtools train or finetune) as a {name: tensor} state "
                    "dict. For r2plus1d_18, r3d_18, mc3_18 and s3d the names and shapes are torchvision's: "
                    "torchvision.models.video.r2plus1d_18().load_state_dict(torch.load(PATH), strict=False) "
                    "reports only the classifier (fc) missing; for vit_s16 / vit_b16 those of transformers' "
                    "VideoMAEModel (use_mean_pooling=False after pretraining, True after fine-tuning). An hcml run "
                    "exports its appearance backbone, or with --whole the backbone with its motion modules (the "
                    "network finetune --checkpoint fine-tunes). mvtools finetune --init PATH reads the backbone "
                    "form back.",
        epilog="exit codes:\n  0  written\n  2  usage error (not a checkpoint)")
    ex.add_argument("--checkpoint", required=True, help="RUN/checkpoint.pt")
    ex.add_argument("--whole", action="store_true", help="the encoder with what the method embedded in it (HCML's "
                                                         "motion modules), not only its backbone")
    ex.add_argument("-o", "--out", required=True, metavar="PATH", help="where to write the state dict (.pt)")
    ex.add_argument("--json", action="store_true", help="print what was written as one JSON object")


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
    from .finetune import evaluate_classifier, linear_sgd
    from .loop import load_checkpoint

    options = _storage_options(args, DataError)
    finetuned = load_checkpoint(args.checkpoint)["config"]["method"] == "supervised"
    protocol = args.protocol or ("multiview" if finetuned else "lbfgs")
    clip = {"clip_len": args.clip_len, "stride": args.stride, "size": args.size}
    if protocol == "lbfgs":
        if finetuned:
            from .loop import TrainError

            raise TrainError(f"{args.checkpoint} is a fine-tuned classifier: use --protocol multiview")
        result = evaluate(args.checkpoint, args.store, clips=args.clips or 4, batch_size=args.batch_size,
                          workers=args.workers, storage_options=options, **clip)
    elif protocol == "multiview":
        result = evaluate_classifier(args.checkpoint, args.store, clips=args.clips or 10, crops=args.crops,
                                 batch_size=args.batch_size, workers=args.workers, storage_options=options, **clip)
        result["protocol"] = "multiview"
    else:
        overrides = {"steps": args.steps, "lr": args.lr, "workers": args.workers, **clip}
        result = linear_sgd(args.checkpoint, args.store, args.out, overrides=overrides, storage_options=options,
                            test_views={"clips": args.clips, "crops": args.crops})
    if protocol != "lbfgs" and args.plot:
        from .multiview import plot_confusion

        plot_confusion(result["confusion"], result["classes"], args.plot,
                       f"{protocol}: top-1 {result['top1']:.1%} ({result['views']})")
    if args.json:
        print(json.dumps(result))
        return 0
    if protocol == "lbfgs":
        print(f"{result['method']} ({result['backbone']}, step {result['step']}) on {result['train_videos']} train / "
              f"{result['test_videos']} test videos, {result['classes']} classes ({result['split']})")
        print(f"linear_top1  {result['linear_top1']:.3f}")
        print(f"knn_top1     {result['knn_top1']:.3f}")
        print("recall       " + "  ".join(f"@{k.split('@')[1]} {v:.3f}" for k, v in result.items()
                                          if k.startswith("recall@")))
    else:
        print_classification(result)
    return 0


def print_classification(result: dict) -> None:
    print(f"{result['protocol']} ({result['backbone']}, step {result['step']}) on {result['test_videos']} test videos,"
          f" {len(result['classes'])} classes, {result['views']} per video")
    print(f"top1  {result['top1']:.3f}   top5  {result['top5']:.3f}   mean class  {result['mean_class_accuracy']:.3f}")


def run_finetune(args) -> int:
    from .finetune import finetune
    from .loop import TrainError, TrainingFailed

    overrides = {"backbone": args.backbone, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                 "seed": args.seed, "workers": args.workers}
    try:
        result = finetune(args.store, args.out, checkpoint=args.checkpoint, init=args.init,
                          from_scratch=args.from_scratch, recipe=args.config, overrides=overrides,
                          resume=args.resume, progress=not args.quiet, plot=args.plot,
                          test_views={"clips": args.clips, "crops": args.crops},
                          storage_options=_storage_options(args, TrainError))
    except TrainingFailed as e:
        print(f"mvtools finetune: error: {e}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")):
        return 0  # under torchrun, rank 0 reports
    if args.json:
        print(json.dumps(result))
    else:
        print_classification(result)
        print(f"{args.out}/test.json" + (f", {args.out}/confusion.png" if args.plot else ""))
    return 0


def run_export(args) -> int:
    from .finetune import export_encoder

    written = export_encoder(args.checkpoint, args.out, whole=args.whole)
    if args.json:
        print(json.dumps(written))
    else:
        print(f"{written['backbone']} encoder of {written['method']} ({written['tensors']} tensors): {written['out']}")
    return 0

"""``mvtools train``, ``eval``, ``finetune`` and ``export``: argument parsing and thin calls into ``loop``,
``evaluate`` and ``finetune``.

``register`` is the ``mvtools.commands`` entry point. Building the parsers imports no torch (``mvtools --help``
stays fast): method names come from the module names of ``trainer/methods``, backbone names from
``CLIP_BACKBONES`` here (a test checks both against the registries).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pkgutil
import shlex
import sys
import traceback
import warnings
from pathlib import Path

from mvtools.strict_json import dumps

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


def add_set_option(parser, where: str) -> None:
    """``--set KEY=VALUE`` (repeatable): a recipe key, dotted into a mapping (``trainer.overrides``)."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"set a recipe key, repeatable ({where}): steps=200, clip_len=8, size=64, lr=1e-3, "
                             "method_args.queue=0, augment.flip=false; a dotted key updates one entry of a mapping "
                             "field; values are YAML (numbers, true/false, null, [lists])")


STOPPED_EXIT = """  75   stopped by SIGTERM, SIGUSR1 or Ctrl-C: the step in progress was finished and checkpointed;
       rerun with --resume (the line printed) to continue exactly there
  130  stopped at once by a second Ctrl-C: the last periodic checkpoint is kept"""
TRAIN_EXIT = f"""exit codes:
  0    trained to --steps; RUN_DIR/checkpoint.pt holds the last state
  1    training failed (a NaN loss, a store that stays unreachable, damaged data, a rank that stops answering):
       one line says why; the last good checkpoint is kept (--debug for the traceback)
  2    usage error (unknown method, store without the method's modalities, existing run without --resume)
{STOPPED_EXIT}

examples:
  mvtools train --config rgb_tiny --store demo/store.zarr --out runs/rgb        # a bundled recipe (mvtools recipes)
  mvtools train --config maclr --store k400.zarr --out runs/maclr --set method_args.queue=0 --set clip_len=8
  mvtools train --config my_recipe.yaml --store k400.zarr --out runs/mine --resume

multi-GPU: torchrun --nproc_per_node N -m mvtools train ... (DDP; --batch-size is per process); under
torchrun --max-restarts N a restarted run resumes from its checkpoint"""


def add_robustness_arguments(parser) -> None:
    """--on-bad-clip, --max-bad-clips, --dist-timeout (train and finetune)."""
    parser.add_argument("--on-bad-clip", choices=("skip", "fail"),
                        help="a clip whose stored bytes are damaged: skip replaces it with another sample (logged once "
                             "per video, counted in metrics.csv's bad_clips) up to --max-bad-clips; fail stops the "
                             "run (default skip)")
    parser.add_argument("--max-bad-clips", type=float, metavar="FRACTION",
                        help="most damaged clips replaced, as a fraction of the run's samples (steps x global batch; "
                             "default 0.001); beyond it the run stops (exit 1)")
    parser.add_argument("--dist-timeout", type=float, metavar="SECONDS",
                        help="under torchrun: how long a rank waits for the others before the run fails with one "
                             "line (a frozen or lost rank; default 300)")


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
    tr.add_argument("--config", metavar="NAME|YAML",
                    help="a bundled recipe by name (rgb_tiny, maclr, ...: `mvtools recipes` lists them) or a YAML "
                         "file of yours; --set and the flags here override it")
    add_set_option(tr, "any field of the recipe; the flags below win over it")
    tr.add_argument("--steps", type=int, help="optimiser steps (default 100)")
    tr.add_argument("--backbone", choices=CLIP_BACKBONES, help="clip encoder (default tiny)")
    tr.add_argument("--batch-size", type=int, help="clips per step and process (default 8)")
    tr.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    tr.add_argument("--seed", type=int, help="seed of weights, batches and augmentations (default 0)")
    tr.add_argument("--workers", type=int, help="DataLoader worker processes (default 2)")
    tr.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 50)")
    tr.add_argument("--resume", action="store_true", help="continue RUN_DIR from its checkpoint (none yet: start "
                                                           "at step 0, and say so)")
    add_robustness_arguments(tr)
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
        epilog="exit codes:\n  0  evaluated\n  1  evaluation failed while reading the store (damaged data: always an "
               "error here; a store that stays unreachable): one line says which\n  2  usage error (no checkpoint, "
               "unlabelled store, empty split, protocol that does not fit the checkpoint)")
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
    add_set_option(ev, "linear-sgd: any key of a finetune recipe; lbfgs, multiview: clip_len, stride, size")


DOWNSTREAM_EXIT = f"""exit codes:
  0    fine-tuned and tested; RUN_FT/test.json holds the test metrics
  1    training failed (a NaN loss, a store that stays unreachable, damaged data, a lost rank): the last good
       checkpoint is kept
  2    usage error (unlabelled store, test classes missing from train, --init or --checkpoint that does not fit
       the backbone, existing run without --resume): one line says what; nothing is written
{STOPPED_EXIT}

examples:
  mvtools finetune --config ucf101_tiny --checkpoint runs/rgb/checkpoint.pt --store demo/store.zarr --out runs/ft
  mvtools finetune --config ucf101 --init r2plus1d_18-91a641e6.pth --store ucf101.zarr --out runs/ft_tv --set lr=0.01

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
    ft.add_argument("--config", metavar="NAME|YAML",
                    help="a bundled recipe by name (ucf101, ucf101_tiny, hmdb51, ...: `mvtools recipes` lists them) or "
                         "a YAML file of yours; --set and the flags here override it")
    add_set_option(ft, "any key of the recipe, test_clips and test_crops too; the flags here win over it")
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
    add_robustness_arguments(ft)
    ft.add_argument("--plot", action="store_true", help="write RUN_FT/confusion.png")
    ft.add_argument("--quiet", action="store_true", help="no progress bar")
    ft.add_argument("--json", action="store_true", help="print the test metrics as one JSON object")

    ex = sub.add_parser(
        "export", help="write a run's encoder as a plain state dict (torchvision's or transformers' names)",
        description="Write the encoder of RUN/checkpoint.pt (mvtools train or finetune) as a {name: tensor} state "
                    "dict. For r2plus1d_18, r3d_18, mc3_18 and s3d the names and shapes are torchvision's: "
                    "torchvision.models.video.r2plus1d_18().load_state_dict(torch.load(PATH, weights_only=True), "
                    "strict=False) "
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


def _recipe(args, kind: str, keys: dict, settable: dict, error) -> dict:
    """The ``--config`` recipe of command ``kind`` (only ``keys`` allowed in it) with ``--set`` applied (only
    ``settable`` keys); ``error`` (a TrainError type) for what does not fit."""
    from .overrides import apply_settings, read_recipe

    recipe, source = read_recipe(getattr(args, "config", None), kind)
    unknown = sorted(set(recipe) - set(keys))
    if unknown:
        raise error(f"{source}: unknown keys {unknown}; valid keys: {', '.join(sorted(keys))}")
    try:
        return apply_settings(recipe, args.set, settable)
    except ValueError as e:
        raise error(str(e)) from None


def _storage_options(args, error) -> dict:
    from mvtools.storage import parse_storage_options

    try:
        return parse_storage_options(args.storage_option)
    except ValueError as e:
        raise error(str(e)) from None


def resume_command(argv: list[str]) -> str:
    """The command that continues a stopped run: this one with --resume (under torchrun: its launch line)."""
    argv = list(argv) if "--resume" in argv else [*argv, "--resume"]
    command = f"mvtools {shlex.join(argv)}"
    return f"torchrun <the same options> -m {command}" if os.environ.get("TORCHELASTIC_RUN_ID") else command


def stopped(command: str, args, out, error: BaseException) -> int:
    """Report how a run ended early, in one line (rank 0 only for a stop), and its exit code."""
    from .loop import CHECKPOINT, Interrupted, load_checkpoint
    from .signals import EXIT_ABORTED, EXIT_INTERRUPTED

    rank = int(os.environ.get("RANK", "0"))
    resume = resume_command(getattr(args, "argv", sys.argv[1:]))
    if isinstance(error, Interrupted):
        if rank == 0:
            print(f"mvtools {command}: {error}; resume with: {resume}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(error, KeyboardInterrupt):
        path = Path(out) / CHECKPOINT if out else None
        kept = (f"the checkpoint of step {load_checkpoint(path)['step']} is kept ({path}); resume with: {resume}"
                if path is not None and path.exists() else "no checkpoint was written")
        if rank == 0:
            print(f"mvtools {command}: stopped at once by a second Ctrl-C: {kept}", file=sys.stderr)
        return EXIT_ABORTED
    if getattr(args, "debug", False):
        traceback.print_exception(error)
    print(f"mvtools {command}: error: {error}", file=sys.stderr)
    return 1


def _robustness(args) -> dict:
    return {"on_bad_clip": args.on_bad_clip, "max_bad_clips": args.max_bad_clips, "dist_timeout": args.dist_timeout}


def run_train(args) -> int:
    from .loop import Interrupted, RunNotice, TrainConfig, TrainError, TrainingFailed, train
    from .overrides import field_defaults

    overrides = {"method": args.method, "store": args.store, "out": args.out, "steps": args.steps,
                 "backbone": args.backbone, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                 "workers": args.workers, "checkpoint_every": args.checkpoint_every, **_robustness(args)}
    fields = field_defaults(TrainConfig)
    recipe = _recipe(args, "train", fields, fields, TrainError)
    try:
        config = TrainConfig(**{**recipe, **{k: v for k, v in overrides.items() if v is not None}})
    except (ValueError, TypeError) as e:
        raise TrainError(str(e)) from None
    if not config.store or not config.out:
        raise TrainError("--store and --out are required (on the command line or in --config)")
    if args.storage_option:
        config = dataclasses.replace(config, storage_options={**config.storage_options,
                                                              **_storage_options(args, TrainError)})
    try:
        with warnings.catch_warnings():  # settings worth a second look (a queue too long for the store, ...)
            warnings.showwarning = lambda message, category, *_, **__: print(
                f"mvtools train: {'note' if category is RunNotice else 'warning'}: {message}", file=sys.stderr)
            summary = train(config, resume=args.resume, progress=not args.quiet)
    except (TrainingFailed, Interrupted, KeyboardInterrupt) as e:  # a usage error (TrainError): exit 2, mvtools.cli
        return stopped("train", args, config.out, e)
    if summary["rank"]:
        return 0  # under torchrun, rank 0 reports
    last = summary["last"]
    terms = ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k not in ("step", "lr", "bad_clips"))
    replaced = f"; {summary['bad_clips']} damaged clips replaced" if summary["bad_clips"] else ""
    print(f"trained {config.method} ({config.backbone}) to step {summary['steps']}: {terms}; "
          f"{summary['steps_per_s']:.2f} steps/s, data wait {summary['data_wait_fraction']:.0%} of step time"
          f"{replaced}; {config.out}/checkpoint.pt")
    return 0


def run_eval(args) -> int:
    from .data import DataError
    from .evaluate import evaluate
    from .finetune import evaluate_classifier, linear_sgd
    from .loop import TrainError, load_checkpoint
    from .overrides import apply_settings

    options = _storage_options(args, DataError)
    finetuned = load_checkpoint(args.checkpoint)["config"]["method"] == "supervised"
    protocol = args.protocol or ("multiview" if finetuned else "lbfgs")
    if protocol == "linear-sgd":
        recipe = _recipe(args, "finetune", *downstream_keys(), TrainError)
    else:
        try:
            recipe = apply_settings({}, args.set, {"clip_len": 16, "stride": 2, "size": 112})
        except ValueError as e:
            raise TrainError(f"{e} (with --protocol {protocol}; --protocol linear-sgd takes every key of a "
                             "finetune recipe)") from None
    clip = {k: v if v is not None else recipe.get(k) for k, v in
            {"clip_len": args.clip_len, "stride": args.stride, "size": args.size}.items()}
    try:
        if protocol == "lbfgs":
            if finetuned:
                raise TrainError(f"{args.checkpoint} is a fine-tuned classifier: use --protocol multiview")
            result = evaluate(args.checkpoint, args.store, clips=args.clips or 4, batch_size=args.batch_size,
                              workers=args.workers, storage_options=options, **clip)
        elif protocol == "multiview":
            result = evaluate_classifier(args.checkpoint, args.store, clips=args.clips or 10, crops=args.crops,
                                         batch_size=args.batch_size, workers=args.workers, storage_options=options,
                                         **clip)
            result["protocol"] = "multiview"
        else:
            overrides = {"steps": args.steps, "lr": args.lr, "workers": args.workers, **clip}
            result = linear_sgd(args.checkpoint, args.store, args.out, recipe=recipe, overrides=overrides,
                                storage_options=options, test_views={"clips": args.clips, "crops": args.crops})
    except Exception as e:  # usage errors (the store, the checkpoint) are exit 2; failures while reading, 1
        return evaluation_failed(e, args)
    if protocol != "lbfgs" and args.plot:
        from .multiview import plot_confusion

        plot_confusion(result["confusion"], result["classes"], args.plot,
                       f"{protocol}: top-1 {result['top1']:.1%} ({result['views']})")
    if args.json:
        print(dumps(result))
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


def evaluation_failed(error: Exception, args) -> int:
    """Exit 1 with one line for what ended an evaluation while it read the store (damaged data, a store that stays
    unreachable, a DataLoader worker's error); usage errors (``MvtoolsError`` other than damage) go on to exit 2."""
    from mvtools.errors import DamagedData, MvtoolsError

    from .loop import Interrupted, TrainingFailed, failure

    if isinstance(error, (TrainingFailed, Interrupted)):
        return stopped("eval", args, args.out, error)
    if isinstance(error, MvtoolsError) and not isinstance(error, DamagedData):
        raise error
    if getattr(args, "debug", False):
        traceback.print_exception(error)
    print(f"mvtools eval: error: {failure(error, args.store, 0)}", file=sys.stderr)
    return 1


def print_classification(result: dict) -> None:
    print(f"{result['protocol']} ({result['backbone']}, step {result['step']}) on {result['test_videos']} test videos,"
          f" {len(result['classes'])} classes, {result['views']} per video")
    print(f"top1  {result['top1']:.3f}   top5  {result['top5']:.3f}   mean class  {result['mean_class_accuracy']:.3f}")


#: TrainConfig fields that finetune and linear-sgd set themselves (not --set)
FIXED_BY_COMMAND = ("method", "store", "out", "split")


def downstream_keys() -> tuple[dict, dict]:
    """(keys a finetune recipe may hold, keys --set may change), with their defaults."""
    from .finetune import TEST_CLIPS, TEST_CROPS
    from .loop import TrainConfig
    from .overrides import field_defaults

    keys = {**field_defaults(TrainConfig), "test_clips": TEST_CLIPS, "test_crops": TEST_CROPS}
    return keys, {k: v for k, v in keys.items() if k not in FIXED_BY_COMMAND}


def run_finetune(args) -> int:
    from .finetune import finetune
    from .loop import Interrupted, RunNotice, TrainError, TrainingFailed

    overrides = {"backbone": args.backbone, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                 "seed": args.seed, "workers": args.workers, **_robustness(args)}
    recipe = _recipe(args, "finetune", *downstream_keys(), TrainError)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", RunNotice)
            warnings.showwarning = lambda message, category, *_, **__: print(
                f"mvtools finetune: {'note' if category is RunNotice else 'warning'}: {message}", file=sys.stderr)
            result = finetune(args.store, args.out, checkpoint=args.checkpoint, init=args.init,
                              from_scratch=args.from_scratch, recipe=recipe, overrides=overrides,
                              resume=args.resume, progress=not args.quiet, plot=args.plot,
                              test_views={"clips": args.clips, "crops": args.crops},
                              storage_options=_storage_options(args, TrainError))
    except (TrainingFailed, Interrupted, KeyboardInterrupt) as e:
        return stopped("finetune", args, args.out, e)
    if int(os.environ.get("RANK", "0")):
        return 0  # under torchrun, rank 0 reports
    if args.json:
        print(dumps(result))
    else:
        print_classification(result)
        print(f"{args.out}/test.json" + (f", {args.out}/confusion.png" if args.plot else ""))
    return 0


def run_export(args) -> int:
    from .finetune import export_encoder

    written = export_encoder(args.checkpoint, args.out, whole=args.whole)
    if args.json:
        print(dumps(written))
    else:
        print(f"{written['backbone']} encoder of {written['method']} ({written['tensors']} tensors): {written['out']}")
    return 0

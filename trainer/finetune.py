"""Downstream protocols: fine-tuning and the linear-SGD probe, both trained by the loop and tested multi-view.

``finetune``: a pretrained encoder (``--checkpoint`` of ``mvtools train``: the method's encoder whole, HCML's with
its motion modules), an exported, torchvision or transformers VideoMAE state dict (``--init``) or random weights
(``--from-scratch``), then dropout and a linear classifier, trained end to end with
cross-entropy on the store's train split (``trainer.supervised``), then ``evaluate_classifier`` on the test split.
``linear_sgd``: the same with the encoder frozen (the linear protocol of MCL and FIMA). Every check (weights
that fit the backbone, labels, classes of the test split present in train, an existing run) happens before
anything is written: a bad input leaves ``--out`` as it was.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch

from mvtools.bundled import resolve_config
from mvtools.extract import read_yaml
from mvtools.strict_json import dumps

from .data import ClipDataset, ClipSpec, DataError, list_videos, split_keys
from .loop import CHECKPOINT, TrainConfig, TrainError, build_method, load_checkpoint, resumes, train
from .multiview import classification_metrics, plot_confusion, video_scores
from .supervised import build_encoder
from .weights import checkpoint_encoder, load_encoder, read_state_dict

#: what fine-tuning uses where its recipe is silent (pipelines/finetune/*.yaml cite the papers' values)
FINETUNE_DEFAULTS = {"optimizer": "sgd", "lr": 0.05, "weight_decay": 5e-4, "warmup_steps": 0, "schedule": "step",
                     "milestones": [0.6, 0.85], "steps": 100, "batch_size": 8, "checkpoint_every": 100}
#: the linear-SGD protocol: only the classifier trains (no dropout, no weight decay), cosine schedule
LINEAR_DEFAULTS = {"optimizer": "sgd", "lr": 0.1, "weight_decay": 0.0, "warmup_steps": 0, "schedule": "cosine",
                   "steps": 100, "batch_size": 8, "checkpoint_every": 100}
#: views per test video (clips x crops), the papers' 10 x 3
TEST_CLIPS, TEST_CROPS = 10, 3
RESULT = "test.json"
CONFUSION = "confusion.png"


def read_recipe(path: str | os.PathLike | Mapping | None) -> tuple[dict, dict]:
    """(TrainConfig fields, test views {"clips", "crops"}) of a finetune recipe: a bundled name (``ucf101_tiny``), a
    file, or its settings already read (a mapping)."""
    recipe = dict(path) if isinstance(path, Mapping) else dict(read_yaml(resolve_config(path, "finetune"))) \
        if path else {}
    views = {"clips": recipe.pop("test_clips", TEST_CLIPS), "crops": recipe.pop("test_crops", TEST_CROPS)}
    unknown = set(recipe) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise TrainError(f"{path}: unknown keys {sorted(unknown)}")
    return recipe, views


def labelled_split(store: str, storage_options: dict | None) -> tuple[list[str], list[str], list[str]]:
    """(train keys, test keys, classes of the store); a ``DataError`` for an unlabelled store, an empty side, or
    test classes that train lacks (a classifier could never predict them)."""
    videos = list_videos(store, storage_options)
    if not videos:
        raise DataError(f"{store}: no complete videos")
    train_keys, test_keys, source = split_keys(videos)
    if not train_keys or not test_keys:
        raise DataError(f"{store}: the {'train' if not train_keys else 'test'} split is empty ({source})")
    label = {v.key: v.label for v in videos}
    missing = sorted({label[k] for k in test_keys} - {label[k] for k in train_keys})
    if missing:
        raise DataError(f"{store}: classes {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} of the test "
                        f"split have no train videos ({source})")
    return train_keys, test_keys, sorted({v.label for v in videos})


def pretrained_encoder(checkpoint) -> tuple[dict, dict[str, torch.Tensor], dict]:
    """(the run's config, its encoder's state dict whole, the classifier's ``method_args`` that rebuild that
    encoder: ``Method.encoder_args``) of an ``mvtools train`` / ``finetune`` checkpoint."""
    state = load_checkpoint(checkpoint)
    method = build_method(state["config"])
    method.load_state_dict(state["model"])
    encoder = {k: v.detach().clone() for k, v in method.encoder.state_dict().items()}
    return state["config"], encoder, method.encoder_args()


def starting_weights(checkpoint, init, from_scratch: bool, backbone: str | None
                     ) -> tuple[str, dict, dict | None, str, dict | None, dict]:
    """(backbone, backbone_args, encoder state or None for random, where it came from, the pretraining run's config
    or None, the classifier's encoder arguments), for exactly one source."""
    if sum(map(bool, (checkpoint, init, from_scratch))) != 1:
        raise TrainError("give exactly one of --checkpoint (a pretraining run), --init (a state dict) "
                         "or --from-scratch")
    if checkpoint:
        config, state, encoder_args = pretrained_encoder(checkpoint)
        if backbone and backbone != config["backbone"]:
            raise TrainError(f"{checkpoint} holds a {config['backbone']!r} encoder, but {backbone!r} was asked for "
                             f"(--backbone or the recipe): use a recipe for {config['backbone']} or another checkpoint")
        return (config["backbone"], dict(config["backbone_args"]), state, f"{checkpoint} ({config['method']})", config,
                encoder_args)
    name = backbone or "tiny"
    return (name, {}, (read_state_dict(init) if init else None), (os.fspath(init) if init else "random weights"), None,
            {})


def in_names_of(encoder, state: dict) -> dict:
    """``state`` in ``encoder``'s names: a ViT takes transformers' VideoMAE state dicts (``ViT.import_state``: the
    Hub's bias names, the pretraining and classification wrappers, the final norm its mean-pooling form has not);
    other backbones take a state dict as it is."""
    convert = getattr(encoder, "import_state", None)
    return convert(state) if convert is not None else state


def finetune(store: str | os.PathLike, out: str | os.PathLike, *, checkpoint=None, init=None, from_scratch=False,
             recipe=None, overrides: dict | None = None, freeze: bool = False, resume: bool = False,
             progress: bool = True, plot: bool = False, test_views: dict | None = None,
             storage_options: dict | None = None) -> dict:
    """Train a classifier on ``store``'s train split from the given weights, then test it (``evaluate_classifier``);
    writes ``out/checkpoint.pt``, ``metrics.csv``, ``tb/``, ``test.json`` (and ``confusion.png``). Returns the
    test metrics with the training summary under ``train``."""
    store = os.fspath(store)
    fields, views = read_recipe(recipe)
    views.update({k: v for k, v in (test_views or {}).items() if v is not None})
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    backbone, backbone_args, state, source, pretrained, encoder_args = starting_weights(
        checkpoint, init, from_scratch, overrides.get("backbone", fields.get("backbone")))
    clip = {k: pretrained[k] for k in ("clip_len", "stride", "size")} if pretrained else {}
    fields = {**(LINEAR_DEFAULTS if freeze else FINETUNE_DEFAULTS), **clip, **fields, **overrides}
    backbone_args = {**backbone_args, **fields.get("backbone_args", {})}
    if state is not None:  # checked before anything is written
        encoder = build_encoder(backbone, backbone_args, **encoder_args)
        state = in_names_of(encoder, state)
        load_encoder(encoder, state, source, backbone)
    _, _, classes = labelled_split(store, storage_options)
    method_args = {"dropout": 0.0 if freeze else 0.5, **fields.get("method_args", {}), **encoder_args,
                   "classes": len(classes), "freeze": freeze}
    fields.update(method="supervised", store=store, out=os.fspath(out), backbone=backbone,
                  backbone_args=backbone_args, method_args=method_args, split="train",
                  storage_options={**fields.get("storage_options", {}), **(storage_options or {})})
    try:
        config = TrainConfig(**fields)
    except TypeError as e:
        raise TrainError(str(e)) from None
    resume = resumes(out, resume)
    initialise = None if state is None else (lambda m: load_encoder(m.backbone, state, source, backbone))
    summary = train(config, resume=resume, progress=progress, initialise=initialise)
    result = evaluate_classifier(Path(out) / CHECKPOINT, store, **views, storage_options=storage_options,
                             workers=config.workers)
    result.update(protocol="linear-sgd" if freeze else "finetune", weights=source,
                  train={k: summary[k] for k in ("steps", "steps_per_s", "data_wait_fraction", "last")})
    if summary["rank"] == 0:
        (Path(out) / RESULT).write_text(dumps(result, indent=1))
        if plot:
            plot_confusion(result["confusion"], result["classes"], Path(out) / CONFUSION,
                           f"{result['protocol']}: top-1 {result['top1']:.1%} ({result['views']})")
    return result


def linear_sgd(checkpoint, store, out=None, **kwargs) -> dict:
    """The linear-SGD protocol on a pretraining checkpoint: ``finetune(..., freeze=True)``; without ``out`` the
    classifier's run lives in a temporary folder."""
    if out is not None:
        return finetune(store, out, checkpoint=checkpoint, freeze=True, **kwargs)
    with tempfile.TemporaryDirectory(prefix="mvtools-linear-") as tmp:
        return finetune(store, Path(tmp) / "run", checkpoint=checkpoint, freeze=True, progress=False, **kwargs)


def evaluate_classifier(checkpoint, store, *, clips: int = TEST_CLIPS, crops: int = TEST_CROPS,
                    clip_len: int | None = None, stride: int | None = None, size: int | None = None,
                    batch_size: int = 16, workers: int = 2, device: str | None = None,
                    storage_options: dict | None = None) -> dict:
    """Multi-view test (``trainer.multiview``) of a classifier checkpoint (``finetune``, ``linear_sgd``) on the
    store's test split: top1, top5, mean_class_accuracy, per_class, confusion."""
    state = load_checkpoint(checkpoint)
    config = state["config"]
    if config["method"] != "supervised":
        raise TrainError(f"{checkpoint} is a {config['method']!r} pretraining run, not a classifier: fine-tune it "
                         f"first (mvtools finetune) or use --protocol lbfgs / linear-sgd")
    method = build_method(config)
    method.load_state_dict(state["model"])
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    method.eval().to(device)
    store = os.fspath(store)
    _, test_keys, classes = labelled_split(store, storage_options)
    if len(classes) != config["method_args"]["classes"]:
        raise DataError(f"{store} has {len(classes)} classes; {checkpoint} was trained on "
                        f"{config['method_args']['classes']}")
    spec = ClipSpec(clip_len or config["clip_len"], stride or config["stride"], size or config["size"])
    data = ClipDataset(store, modalities=method.modalities, keys=test_keys, train=False, clips_per_video=clips,
                       crops=crops, spec=spec, storage_options=storage_options)
    scores, labels = video_scores(method.logits, data, batch_size=batch_size, workers=workers, device=device)
    return {**classification_metrics(scores, labels, data.classes), "views": f"{clips} clips x {crops} crops",
            "clip": {"clip_len": spec.clip_len, "stride": spec.stride, "size": spec.size},
            "backbone": config["backbone"], "step": int(state["step"]), "test_videos": len(test_keys)}


def export_encoder(checkpoint, out: str | os.PathLike, whole: bool = False) -> dict:
    """Write a checkpoint's encoder as a plain state dict; returns what was written. By default the backbone in
    torchvision's (or transformers', for a ViT) names; ``whole``: the encoder with what a method embedded in it
    (HCML's motion modules: ``backbone.*``, ``motion0.*``, ``levels.*``, for
    ``trainer.methods.hcml.HierarchicalNet``), as ``finetune --checkpoint`` carries it."""
    if whole:
        config, state, encoder_args = pretrained_encoder(checkpoint)
    else:
        (config, state), encoder_args = checkpoint_encoder(checkpoint), {}
    tmp = Path(f"{os.fspath(out)}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, out)
    return {"backbone": config["backbone"], "method": config["method"], "tensors": len(state), "out": os.fspath(out),
            "form": "whole" if whole else "backbone", **encoder_args}


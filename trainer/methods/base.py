"""The contract between a method and the loop, and the parts several methods share."""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..batchnorm import shuffled
from ..data import Sampler
from ..losses import momentum_update
from ..models import Backbone, build, mlp

REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by its ``name``."""
    REGISTRY[cls.name] = cls
    return cls


class Method(nn.Module):
    """A self-supervised method: an ``nn.Module`` whose forward maps a batch to named loss terms.

    ``modalities``: what ``ClipDataset`` must read for it; ``views``: views per sample;
    ``eval_modalities``: what the exported ``encoder`` takes (RGB clips for every method here).
    ``forward(batch) -> {term: scalar}``; the loss is the sum of the terms (weights applied inside).
    ``after_step()`` runs after each optimiser step (EMA updates). ``sampler()`` may return a custom
    ``(dataset, video, rng) -> sample`` when the default independent views do not fit the method.
    ``bn``: how batch statistics are kept from leaking the positive (``trainer.batchnorm``); the class value is
    the paper's choice, a recipe's ``bn`` replaces it per run. Key encoders run through ``keys``.
    ``param_groups(weight_decay)``: how the optimiser treats each parameter (weight decay, learning-rate scale).
    """

    name: ClassVar[str]
    modalities: ClassVar[tuple[str, ...]] = ("rgb",)
    views: ClassVar[int] = 2
    eval_modalities: ClassVar[tuple[str, ...]] = ("rgb",)
    bn: str = "shuffle"
    no_weight_decay: ClassVar[tuple[str, ...]] = ()  # parameter names (last component) kept out of weight decay

    def keys(self, encode, *xs: torch.Tensor):
        """``encode(*xs)`` for a key encoder (no gradients): with Shuffle-BN when the run's ``bn`` is "shuffle"."""
        if self.bn == "shuffle":
            return shuffled(encode, *xs)
        with torch.no_grad():
            return encode(*xs)

    @property
    def encoder(self) -> Backbone:
        """The network pretraining produces, evaluated and exported (motion pathways are dropped)."""
        raise NotImplementedError

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def after_step(self) -> None:
        pass

    def param_groups(self, weight_decay: float) -> list[dict]:
        """The optimiser's parameter groups: ``weight_decay`` on weights (2 or more dimensions), none on biases,
        norms and ``no_weight_decay``; a group's ``lr_scale`` (default 1) multiplies the learning rate, and the
        loop logs the first group's."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 or name.rsplit(".", 1)[-1] in self.no_weight_decay else decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def sampler(self) -> Sampler | None:
        return None

    @torch.no_grad()
    def embed(self, view: dict[str, torch.Tensor]) -> torch.Tensor:
        """Features of one evaluation view (B, D): the pooled output of the exported encoder."""
        return self.encoder(view["rgb"])

    def encoder_args(self) -> dict:
        """The classifier's ``method_args`` (``trainer.supervised``) that rebuild ``encoder`` whole for fine-tuning,
        beyond its backbone: {} for a plain backbone."""
        return {}


class MomentumEncoder(nn.Module):
    """A backbone with a projection head (queries), and its frozen EMA copy (keys).

    query(x) = normalize(g(f(x))); key(x) = normalize(g_k(f_k(x))) without gradients; ``update(m)`` sets
    theta_k <- m theta_k + (1 - m) theta.
    """

    def __init__(self, backbone: str, in_channels: int, dim: int, backbone_args: dict | None = None):
        super().__init__()
        self.backbone = build(backbone, in_channels, **(backbone_args or {}))
        d = self.backbone.out_dim
        self.head = mlp([d, d, dim])
        self.key_backbone = copy.deepcopy(self.backbone).requires_grad_(False)
        self.key_head = copy.deepcopy(self.head).requires_grad_(False)

    def query(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(x)), dim=1)

    @torch.no_grad()
    def key(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.key_head(self.key_backbone(x)), dim=1)

    @torch.no_grad()
    def update(self, m: float) -> None:
        momentum_update(self.key_backbone, self.backbone, m)
        momentum_update(self.key_head, self.head, m)


MOTION_CHANNELS = {"mv": 2, "flow": 2, "residual": 3, "framediff": 3}


def motion_input(x: torch.Tensor, modality: str, clamp: float = 10.0) -> torch.Tensor:
    """A motion clip as network input: vectors (``mv``'s past dx, dy or ``flow``, output pixels) clamped to
    +-``clamp`` px and divided by it (as in the MCD authors' code); ``residual`` / ``framediff`` ([-1, 1]) x 4."""
    if modality in ("mv", "flow"):
        return x[:, :2].clamp(-clamp, clamp) / clamp
    return x * 4.0

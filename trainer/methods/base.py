"""The contract between a method and the loop."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ..data import Sampler
from ..models import Backbone

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
    """

    name: ClassVar[str]
    modalities: ClassVar[tuple[str, ...]] = ("rgb",)
    views: ClassVar[int] = 2
    eval_modalities: ClassVar[tuple[str, ...]] = ("rgb",)

    @property
    def encoder(self) -> Backbone:
        """The network pretraining produces, evaluated and exported (motion pathways are dropped)."""
        raise NotImplementedError

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def after_step(self) -> None:
        pass

    def sampler(self) -> Sampler | None:
        return None

    @torch.no_grad()
    def embed(self, view: dict[str, torch.Tensor]) -> torch.Tensor:
        """Features of one evaluation view (B, D): the pooled output of the exported encoder."""
        return self.encoder(view["rgb"])

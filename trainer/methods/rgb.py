"""The RGB-only baseline: MoCo v2 on two clips of one video (He et al. 2020; Chen et al. 2020).

q = normalize(g(f(x_a))), k = normalize(g_k(f_k(x_b))) with (f_k, g_k) the EMA of (f, g);
L_inst = 1/2 [nce(q_a, k_b, Q) + nce(q_b, k_a, Q)], then both key sets enter the queue Q.
With ``queue=0`` the negatives are the batch's other keys (gathered across ranks), as in MoCo v3.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..losses import Queue, batch_nce, info_nce, momentum_update
from ..models import build, mlp
from .base import Method, register


class MomentumEncoder(torch.nn.Module):
    """An encoder with a projection head, and its frozen EMA copy for keys."""

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


@register
class RGB(Method):
    name = "rgb"
    modalities = ("rgb",)

    def __init__(self, backbone: str = "tiny", backbone_args: dict | None = None, dim: int = 128,
                 queue: int = 4096, momentum: float = 0.99, temperature: float = 0.2):
        super().__init__()
        self.visual = MomentumEncoder(backbone, 3, dim, backbone_args)
        self.queue = Queue(dim, queue) if queue else None
        self.momentum, self.temperature = momentum, temperature

    @property
    def encoder(self):
        return self.visual.backbone

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        a, b = (view["rgb"] for view in batch["views"][:2])
        qa, qb = self.visual.query(a), self.visual.query(b)
        ka, kb = self.visual.key(a), self.visual.key(b)
        return {"inst": 0.5 * (self.contrast(qa, kb) + self.contrast(qb, ka))}

    def contrast(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        if self.queue is None:
            return batch_nce(q, k, self.temperature)
        loss = info_nce(q, k, self.queue.keys.clone(), self.temperature)
        if self.training:
            self.queue.push(k)
        return loss

    def after_step(self) -> None:
        self.visual.update(self.momentum)

"""The RGB-only baseline: MoCo v2 on two clips of one video (He et al. 2020; Chen et al. 2020).

q = normalize(g(f(x_a))), k = normalize(g_k(f_k(x_b))) with (f_k, g_k) the EMA of (f, g);
L_inst = 1/2 [nce(q_a, k_b, Q) + nce(q_b, k_a, Q)], then both key sets enter the queue Q.
With ``queue=0`` the negatives are the batch's other keys (gathered across ranks), as in MoCo v3.
"""

from __future__ import annotations

import torch

from ..losses import Queue, batch_nce, info_nce
from .base import Method, MomentumEncoder, register


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

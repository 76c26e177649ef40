"""The RGB-only baseline: MoCo v2 on two clips of one video (He et al. 2020; Chen et al. 2020).

q = normalize(g(f(x_a))), k = normalize(g_k(f_k(x_b))) with (f_k, g_k) the EMA of (f, g). Symmetric MoCo:
    L_inst = 1/2 [nce(q_a, k_b, Q) + nce(q_b, k_a, Q)]
with both terms against the same snapshot of the queue Q, which then receives both key sets (pushing k_b before
the second term would put q_b's own positive k_b among its negatives).
With ``queue=0`` the negatives are the batch's other keys (gathered across ranks), as in MoCo v3.
Keys are computed with Shuffle-BN by default (``bn``, as in MoCo).
"""

from __future__ import annotations

import torch

from ..losses import Queue, queue_nce
from .base import Method, MomentumEncoder, register


@register
class RGB(Method):
    name = "rgb"
    modalities = ("rgb",)
    bn = "shuffle"  # MoCo's Shuffle-BN

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
        ka, kb = self.keys(self.visual.key, a), self.keys(self.visual.key, b)
        loss = 0.5 * (queue_nce(qa, kb, self.queue, self.temperature) + queue_nce(qb, ka, self.queue, self.temperature))
        if self.training and self.queue is not None:
            self.queue.push(torch.cat([ka, kb]))
        return {"inst": loss}

    def after_step(self) -> None:
        self.visual.update(self.momentum)

"""MCL, motion-focused contrastive learning (Li et al., ICCV 2021, arXiv 2201.04029).

Motion decides what the network looks at. The sampler (``trainer.samplers.MotionFocused``) draws motion-focused
tubelets: a query clip q (start among the most moving clips with p = 0.7, crop covering the motion box), its
other view k (same clip, another crop and colour), and two clips o1, o2 from the other half of the video,
plus q's motion-boundary map M (from ``flow`` when stored, else the MV field). With an EMA encoder
(m = 0.999), a queue Q and t = 0.1, three heads on the pooled features give:
    L_inter = 1/3 sum_{p in k, o1, o2} nce(z_q, z_p, Q)                video-level: every clip of the video
    L_intra = 1/2 sum_{j in 1, 2} nce(y_q, y_k, {y_oj})               clip-level: its own clip, not the others
    L_order = CE(W [h_q, h_o1, h_o2], q's half of the video)          optional
and the motion alignment of the last block's Grad-CAM map G = relu(sum_c mean_hw(dS/dA_c) A_c), S = z_q . z_k
(computed with create_graph: double backprop), pooled M on G's grid:
    L_MAL = 3 - s_st(G, M) - s_t(G, M) - s_s(G, M)                    (``trainer.losses.alignment_similarities``)
    L = L_inter + L_intra + w L_order + lam L_MAL
The authors' code builds the map from the gradient alone; Grad-CAM proper weights the activation, used here.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import Queue, gradcam, info_nce, momentum_update, motion_alignment_loss, queue_nce
from ..models import build, mlp, pool
from ..samplers import MotionFocused
from .base import Method, register


class Heads(nn.Module):
    """The backbone and MCL's three heads: inter (video), intra (clip) and order features (none with
    ``order_dim=0``: a head no loss uses would be a parameter without gradient, which DDP refuses)."""

    def __init__(self, backbone: str, backbone_args: dict, dim: int, order_dim: int):
        super().__init__()
        self.backbone = build(backbone, 3, **backbone_args)
        d = self.backbone.out_dim
        self.inter, self.intra = mlp([d, d, dim]), mlp([d, d, dim])
        self.order = mlp([d, d, order_dim]) if order_dim else None

    def embed(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        order = self.order(pooled) if self.order is not None else None
        return F.normalize(self.inter(pooled), dim=1), F.normalize(self.intra(pooled), dim=1), order


@register
class MCL(Method):
    name = "mcl"
    modalities = ("rgb", "mv")
    views = 4
    bn = "shuffle"  # the authors' code (DistributedShuffle on every key clip)

    def __init__(self, backbone: str = "tiny", backbone_args: dict | None = None, dim: int = 128,
                 queue: int = 4096, momentum: float = 0.999, temperature: float = 0.1,
                 intra_temperature: float = 0.1, order_weight: float = 0.5, mal_weight: float = 1.0,
                 order_dim: int = 128, motion: str = "auto", p: float = 0.7, top: float = 0.5, window: int = 8):
        super().__init__()
        if motion not in ("auto", "mv", "flow"):
            raise ValueError(f"mcl: motion must be auto, mv or flow, got {motion!r}")
        self.modalities = ("rgb", "flow" if motion == "flow" else "mv")
        self.online = Heads(backbone, dict(backbone_args or {}), dim, order_dim if order_weight else 0)
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        self.order_classifier = nn.Linear(3 * order_dim, 2) if order_weight else None
        self.queue = Queue(dim, queue, per_sample=3) if queue else None  # its other view and the two other clips
        self.momentum, self.temperature, self.intra_temperature = momentum, temperature, intra_temperature
        self.order_weight, self.mal_weight = order_weight, mal_weight
        self._sampler = MotionFocused(p=p, top=top, window=window, source=motion)

    @property
    def encoder(self):
        return self.online.backbone

    def sampler(self):
        return self._sampler

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        q, k, o1, o2 = (view["rgb"] for view in batch["views"][:4])
        activation = self.online.backbone.forward_features(q)
        zq, yq, hq = self.online.embed(pool(activation))
        (zk, yk, _), (z1, y1, h1), (z2, y2, h2) = (self.keys(lambda v: self.target.embed(self.target.backbone(v)), x)
                                                     for x in (k, o1, o2))
        terms = {
            "inter": sum(queue_nce(zq, z, self.queue, self.temperature) for z in (zk, z1, z2)) / 3,
            "intra": 0.5 * sum(info_nce(yq, yk, temperature=self.intra_temperature, own_negatives=y[:, None])
                               for y in (y1, y2)),
        }
        if self.order_classifier is not None:
            logits = self.order_classifier(torch.cat([hq, h1, h2], 1))
            terms["order"] = self.order_weight * F.cross_entropy(logits, batch["order"])
        if self.mal_weight:
            similarity = (zq * zk).sum()
            grad, = torch.autograd.grad(similarity, activation, create_graph=True)
            attention = gradcam(activation, grad)
            motion = F.adaptive_avg_pool3d(batch["motion_map"][:, None], attention.shape[1:])[:, 0]
            terms["mal"] = self.mal_weight * motion_alignment_loss(attention, motion)
        if self.training and self.queue is not None:
            self.queue.push(torch.cat([zk, z1, z2]))
        return terms

    def after_step(self) -> None:
        momentum_update(self.target, self.online, self.momentum)

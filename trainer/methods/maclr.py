"""MaCLR: motion-aware contrastive learning (Xiao, Tighe, Modolo, ECCV 2022, arXiv 2106.09703).

A visual pathway (RGB clips) and a thin motion pathway (the same architecture at ``motion_width`` of its
channels, 1/8 by default) on a motion clip of the same time span: ``mv`` (default; free from the decoder),
``residual`` or ``flow``. Each pathway has an EMA key encoder (m = 0.999) and a queue; for two clips a, b of
a video, with z = query embeddings, k = key embeddings, t = 0.1:
    L_vis   = 1/2 [nce(z_v^a, k_v^b, Q_v) + nce(z_v^b, k_v^a, Q_v)]
    L_cross = 1/2 sum_{x in a, b} [nce(z_v^x, k_m^x, Q_m) + nce(z_m^x, k_v^x, Q_v)]
    L_mot   = 1/2 [nce(z_m^a, k_m^b, Q_m) + nce(z_m^b, k_m^a, Q_m)]
    L = L_vis + lam L_cross + beta L_mot           (lam = 1; beta in {0, 1}, the optional motion instance term)
The cross terms make the visual features predict the clip's motion. The motion pathway is dropped after
pretraining: the exported encoder is the visual backbone. The two clips start ``min_gap_s`` to ``max_gap_s``
seconds apart (0.5-10 s, the paper's; ``trainer.samplers.ClipsApart``).
"""

from __future__ import annotations

import torch

from ..losses import Queue, queue_nce
from ..samplers import ClipsApart
from .base import MOTION_CHANNELS, Method, MomentumEncoder, motion_input, register

MOTIONS = ("mv", "residual", "flow")


@register
class MaCLR(Method):
    name = "maclr"
    modalities = ("rgb", "mv")
    views = 2
    bn = "shuffle"  # [default]: no public code; MoCo's choice for its EMA encoders and queues

    def __init__(self, backbone: str = "tiny", backbone_args: dict | None = None, dim: int = 128,
                 queue: int = 4096, momentum: float = 0.999, temperature: float = 0.1, motion: str = "mv",
                 motion_width: float = 0.125, lam: float = 1.0, beta: float = 1.0, clamp: float = 10.0,
                 min_gap_s: float = 0.5, max_gap_s: float = 10.0):
        super().__init__()
        if motion not in MOTIONS:
            raise ValueError(f"maclr: motion must be one of {', '.join(MOTIONS)}, got {motion!r}")
        args = dict(backbone_args or {})
        self.modalities = ("rgb", motion)
        self.motion = motion
        self.visual = MomentumEncoder(backbone, 3, dim, args)
        self.motion_path = MomentumEncoder(backbone, MOTION_CHANNELS[motion], dim,
                                           {**args, "width": args.get("width", 1.0) * motion_width})
        self.queue_v = Queue(dim, queue) if queue else None
        self.queue_m = Queue(dim, queue) if queue else None
        self.momentum, self.temperature, self.lam, self.beta, self.clamp = momentum, temperature, lam, beta, clamp
        self._sampler = ClipsApart(min_gap_s, max_gap_s)

    @property
    def encoder(self):
        return self.visual.backbone

    def sampler(self):
        return self._sampler

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        views = batch["views"][:2]
        rgb = [v["rgb"] for v in views]
        motion = [motion_input(v[self.motion], self.motion, self.clamp) for v in views]
        zv, kv = [self.visual.query(x) for x in rgb], [self.keys(self.visual.key, x) for x in rgb]
        zm, km = [self.motion_path.query(x) for x in motion], [self.keys(self.motion_path.key, x) for x in motion]

        def nce(q, k, queue):
            return queue_nce(q, k, queue, self.temperature)

        terms = {"vis": 0.5 * (nce(zv[0], kv[1], self.queue_v) + nce(zv[1], kv[0], self.queue_v)),
                 "cross": self.lam * 0.5 * sum(nce(zv[i], km[i], self.queue_m) + nce(zm[i], kv[i], self.queue_v)
                                               for i in range(2))}
        if self.beta:
            terms["mot"] = self.beta * 0.5 * (nce(zm[0], km[1], self.queue_m) + nce(zm[1], km[0], self.queue_m))
        if self.training and self.queue_v is not None:
            self.queue_v.push(torch.cat(kv))
            self.queue_m.push(torch.cat(km))
        return terms

    def after_step(self) -> None:
        self.visual.update(self.momentum)
        self.motion_path.update(self.momentum)

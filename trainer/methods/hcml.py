"""Hierarchical contrastive motion learning (Yang et al., arXiv 2007.10321). No public code: the abstract fixes
the idea, the rest is ours ([default] in ``../shared/papers/METHODS.md``).

Motion features are built level by level next to the appearance stream and fused back into it:
    m_0 = conv(level-0 motion)                 frame differences of the input clip (default), or ``mv`` /
                                               ``residual`` read from the store
    m_l = conv([a_l(t) - a_l(t-1), pool(m_{l-1})]),   a_l <- a_l + W_l m_l     at each backbone stage l
so the network that comes out (``HierarchicalNet``, the exported encoder) sees motion at every scale. Each
level is trained to predict the motion of the level below one step ahead: a 1x1 predictor P_l maps m_l at
step t to m_{l-1} at step t+1 (stop-gradient target, pooled to level l's spatial grid; time at level l-1's
resolution, m_l repeated to it), contrasted with every other sampled position (b, t, y, x) of the batch:
    L_l = nce(P_l m_l(b, t, y, x), sg m_{l-1}(b, t+1, y, x), {sg m_{l-1} at other sampled positions}),  t = 0.1
    L_motion = sum_{l=1..L+1} L_l              (``motion_loss``: usable as an auxiliary loss by any trainer)
with m_{L+1} = a_L, the fused output itself, so the features the encoder exports must anticipate the top
level's motion (and the last fusion is trained). A target with a single step is predicted at that step.
``instance`` > 0 adds an RGB MoCo term on the same network (EMA copy and queue), to use the hierarchy as an
auxiliary to instance discrimination.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import Queue, batch_nce, momentum_update, queue_nce
from ..models import Backbone, build, mlp, pool
from .base import MOTION_CHANNELS, Method, motion_input, register


def temporal_difference(x: torch.Tensor) -> torch.Tensor:
    """x_t - x_{t-1} along axis 2 of (B, C, T, H, W); 0 at t = 0."""
    return torch.cat([torch.zeros_like(x[:, :, :1]), x[:, :, 1:] - x[:, :, :-1]], 2)


def _conv_bn_relu(cin: int, cout: int, stride=(1, 1, 1)) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


class MotionModule(nn.Module):
    """One level: m = conv([a(t) - a(t-1), pool(m_below)]); returns (a + W m, m)."""

    def __init__(self, appearance: int, below: int, channels: int):
        super().__init__()
        self.motion = _conv_bn_relu(appearance + below, channels)
        self.fuse = nn.Conv3d(channels, appearance, 1)

    def forward(self, a: torch.Tensor, below: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.motion(torch.cat([temporal_difference(a), F.adaptive_avg_pool3d(below, a.shape[2:])], 1))
        return a + self.fuse(m), m


class HierarchicalNet(Backbone):
    """A clip backbone with a motion module after every stage; ``forward`` is the usual pooled feature."""

    def __init__(self, backbone: Backbone, level0: str = "framediff", motion_width: float = 0.25):
        super().__init__()
        self.level0 = level0
        self.backbone, self.stage_dims = backbone, backbone.stage_dims  # its names: the backbone's (exported)
        widths = [max(8, round(c * motion_width)) for c in self.stage_dims]
        # vectors have a quarter of the frames' resolution: no spatial stride for them
        stride = (1, 1, 1) if level0 == "mv" else (1, 2, 2)
        self.motion0 = _conv_bn_relu(MOTION_CHANNELS[level0], widths[0], stride)
        self.levels = nn.ModuleList(MotionModule(c, below, m) for c, below, m in
                                    zip(self.stage_dims, [widths[0]] + widths[:-1], widths))
        self.motion_dims = [widths[0]] + widths

    def forward_levels(self, x: torch.Tensor, motion: torch.Tensor | None = None
                       ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(appearance map per stage, motion map per level 0..L) of an RGB clip (and its level-0 motion)."""
        m = [self.motion0(temporal_difference(x) if motion is None else motion)]
        a, maps = self.backbone.stem(x), []
        for stage, level in zip(self.backbone.stages, self.levels):
            a, ml = level(stage(a), m[-1])
            maps.append(a)
            m.append(ml)
        return maps, m

    def forward_stages(self, x: torch.Tensor, motion: torch.Tensor | None = None) -> list[torch.Tensor]:
        return self.forward_levels(x, motion)[0]

    def forward(self, x: torch.Tensor, motion: torch.Tensor | None = None) -> torch.Tensor:
        return pool(self.forward_stages(x, motion)[-1])


def next_step_pairs(upper: torch.Tensor, below: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align level l (B, C, T, H, W) with level l-1 for next-step prediction: level l-1 pooled to l's grid
    (time kept at its own resolution, level l repeated to it), then (upper at t, below at t + 1) as (N, C) rows
    ((upper at t, below at t) when level l-1 has a single step)."""
    t = below.shape[2]
    below = F.adaptive_avg_pool3d(below, (t, *upper.shape[3:]))
    upper = F.interpolate(upper, size=(t, *upper.shape[3:]), mode="nearest")
    rows = lambda x: x.permute(0, 2, 3, 4, 1).reshape(-1, x.shape[1])  # noqa: E731
    if t < 2:
        return rows(upper), rows(below)
    return rows(upper[:, :, :-1]), rows(below[:, :, 1:])


def motion_loss(motions: list[torch.Tensor], predictors: nn.ModuleList, temperature: float = 0.1,
                positions: int = 512) -> torch.Tensor:
    """sum over levels l >= 1 of nce(P_l m_l(t), sg m_{l-1}(t + 1)) over ``positions`` random positions."""
    total = motions[0].new_zeros(())
    for level, predictor in enumerate(predictors, start=1):
        upper, below = motions[level], motions[level - 1].detach()
        pred, target = next_step_pairs(predictor(upper), below)
        if len(pred) > positions:
            pick = torch.randperm(len(pred), device=pred.device)[:positions]
            pred, target = pred[pick], target[pick]
        total = total + batch_nce(F.normalize(pred, dim=1), F.normalize(target, dim=1), temperature)
    return total


@register
class HCML(Method):
    name = "hcml"
    modalities = ("rgb",)
    views = 1
    bn = "sync"  # [default]: positives and the in-batch negatives of other ranks then share statistics

    def __init__(self, backbone: str = "tiny", backbone_args: dict | None = None, level0: str = "framediff",
                 motion_width: float = 0.25, temperature: float = 0.1, positions: int = 512,
                 instance: float = 0.0, dim: int = 128, queue: int = 4096, momentum: float = 0.999):
        super().__init__()
        if level0 not in ("framediff", "mv", "residual"):
            raise ValueError(f"hcml: level0 must be framediff, mv or residual, got {level0!r}")
        self.level0, self.motion_width = level0, motion_width
        self.modalities = ("rgb",) if level0 == "framediff" else ("rgb", level0)
        self.eval_modalities = self.modalities
        self.views = 2 if instance else 1
        appearance = build(backbone, 3, **(backbone_args or {}))
        if not hasattr(appearance, "stem"):
            raise ValueError(f"hcml embeds a motion module after every stage of a convolutional backbone; "
                             f"{backbone!r} has no stages (choose tiny, r2plus1d_18, r3d_18, mc3_18, s3d or i3d)")
        self.net = HierarchicalNet(appearance, level0, motion_width)
        dims = self.net.motion_dims + [self.net.out_dim]  # the fused output tops the hierarchy
        self.predictors = nn.ModuleList(nn.Conv3d(dims[i + 1], dims[i], 1) for i in range(len(dims) - 1))
        self.temperature, self.positions, self.instance, self.momentum = temperature, positions, instance, momentum
        if instance:
            d = self.net.out_dim
            self.head = mlp([d, d, dim])
            self.key_net = copy.deepcopy(self.net).requires_grad_(False)
            self.key_head = copy.deepcopy(self.head).requires_grad_(False)
            self.queue = Queue(dim, queue) if queue else None

    @property
    def encoder(self):
        return self.net

    def encoder_args(self) -> dict:
        """Fine-tuning keeps the motion modules: the paper's network is the backbone with them embedded."""
        return {"motion_modules": {"level0": self.level0, "motion_width": self.motion_width}}

    def level0_input(self, view: dict) -> torch.Tensor | None:
        return None if self.level0 == "framediff" else motion_input(view[self.level0], self.level0)

    @torch.no_grad()
    def embed(self, view: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(view["rgb"], self.level0_input(view))

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        views = batch["views"][: self.views]
        out = [self.net.forward_levels(v["rgb"], self.level0_input(v)) for v in views]
        terms = {"motion": sum(motion_loss(m + [maps[-1]], self.predictors, self.temperature, self.positions)
                               for maps, m in out) / len(out)}
        if self.instance:
            q = [F.normalize(self.head(pool(maps[-1])), dim=1) for maps, _ in out]
            k = [self.keys(self.key, v["rgb"], *([] if self.level0 == "framediff" else [self.level0_input(v)]))
                 for v in views]
            terms["inst"] = self.instance * 0.5 * (queue_nce(q[0], k[1], self.queue, self.temperature)
                                                   + queue_nce(q[1], k[0], self.queue, self.temperature))
            if self.training and self.queue is not None:
                self.queue.push(torch.cat(k))
        return terms

    def key(self, rgb: torch.Tensor, motion: torch.Tensor | None = None) -> torch.Tensor:
        """normalised g_k(f_k(x)) of the EMA network (the instance term's keys)."""
        return F.normalize(self.key_head(self.key_net(rgb, motion)), dim=1)

    def after_step(self) -> None:
        if self.instance:
            momentum_update(self.key_net, self.net, self.momentum)
            momentum_update(self.key_head, self.head, self.momentum)

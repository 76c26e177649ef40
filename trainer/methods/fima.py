"""FIMA, fine-grained motion alignment (Zhu et al., ACM MM 2023, arXiv 2309.00297).

Frame differences as the motion source, aligned with RGB features cell by cell and step by step. Two clips
a, b of a video come with T + 1 frames each (``trainer.samplers.ClipPair``); after cropping, x = the first T
frames and d_t = x_{t+1} - x_t (T differences, no wrap-around). f is the backbone, f_k its EMA (m = 0.999),
which encodes both RGB clips and frame differences; t = 0.1.
- L_inst = 1/2 [nce(q_a, k_b, Q) + nce(q_b, k_a, Q)], MoCo on the RGB clips (g / g_k projection heads).
- Foreground: per step and cell, mean_c f_k(x) + mean_c f_k(d); cells above the step's median are foreground.
- Motion decoder: at every feature step i, a transformer reads a CLS token and the dense projections P(f(x_a))
  of a's foreground cells (background cells masked out) and outputs, per cell, a prediction of the motion
  features and, from CLS, a clip-level motion embedding.
- L_dense: each foreground cell u of a predicts P_k(f_k(d_b)) at step i: positives are b's foreground cells
  whose centres lie within ``radius`` cell sizes of u's centre in image coordinates (from the crop boxes and
  flips, PixPro-style), negatives every other cell of every sample at that step. Symmetric in a, b.
- L_frame: a's CLS output at step i must match g_k(f_k(d_a^h)), the key of a's local sub-clip h (first or second
  half of its differences) that spans step i; the other half is a hard negative, plus a motion queue Q_m.
L = L_inst + L_dense + L_frame. The exported encoder is f.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import Queue, info_nce, momentum_update, multi_positive_nce, queue_nce
from ..models import build, mlp, pool, sincos_positions
from ..samplers import ClipPair
from .base import Method, register


def cell_centres(boxes: torch.Tensor, flips: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Image coordinates (stored pixels) of the centres of a (H, W) feature grid over each crop: (B, H W, 2).

    Column u of the (possibly flipped) output covers x0 + (u + 1/2) / W (x1 - x0), or x1 - ... when flipped.
    """
    h, w = grid
    x0, y0, x1, y1 = boxes.unbind(1)
    u = (torch.arange(w, device=boxes.device) + 0.5) / w
    v = (torch.arange(h, device=boxes.device) + 0.5) / h
    xs = torch.where(flips[:, None], x1[:, None] - u * (x1 - x0)[:, None], x0[:, None] + u * (x1 - x0)[:, None])
    ys = y0[:, None] + v * (y1 - y0)[:, None]
    return torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), -1).flatten(1, 2)


def near_cells(centres_a: torch.Tensor, centres_b: torch.Tensor, boxes_a: torch.Tensor, boxes_b: torch.Tensor,
               grid: tuple[int, int], radius: float) -> torch.Tensor:
    """(B, Na, Nb) bool: centres closer than ``radius`` x the larger of the two views' cell sizes (PixPro)."""
    h, w = grid

    def cell(boxes):
        return ((boxes[:, 2] - boxes[:, 0]) / w + (boxes[:, 3] - boxes[:, 1]) / h) / 2

    scale = torch.maximum(cell(boxes_a), cell(boxes_b))[:, None, None]
    return torch.cdist(centres_a, centres_b) < radius * scale


def foreground(rgb_map: torch.Tensor, diff_map: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) key maps -> (B, T, H W) bool: channel means summed, above the step's median."""
    score = (rgb_map.mean(1) + diff_map.mean(1)).flatten(2)
    return score > score.median(dim=2, keepdim=True).values


class DenseProjector(nn.Sequential):
    """Per cell and step: 1x1x1 conv, BN, ReLU, 1x1x1 conv to ``dim`` channels."""

    def __init__(self, cin: int, dim: int):
        super().__init__(nn.Conv3d(cin, cin, 1), nn.BatchNorm3d(cin), nn.ReLU(inplace=True), nn.Conv3d(cin, dim, 1))


class MotionDecoder(nn.Module):
    """A small transformer over [CLS; cell tokens] of one step: (cell outputs (N, HW, dim), CLS out (N, dim))."""

    def __init__(self, dim: int, width: int = 128, layers: int = 2, heads: int = 4):
        super().__init__()
        self.width = width
        self.embed = nn.Linear(dim, width)
        self.cls = nn.Parameter(torch.randn(width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.cells, self.motion = nn.Linear(width, dim), nn.Linear(width, dim)

    def forward(self, cells: torch.Tensor, grid: tuple[int, int], keep: torch.Tensor):
        """cells (N, HW, dim), keep (N, HW) bool: tokens to attend to (the foreground)."""
        x = self.embed(cells) + sincos_positions(grid, self.width).to(cells.device)
        x = torch.cat([self.cls.expand(len(x), 1, -1), x], 1)
        mask = torch.cat([torch.zeros_like(keep[:, :1]), ~keep], 1)  # True = ignored; CLS always attended
        out = self.transformer(x, src_key_padding_mask=mask)
        return self.cells(out[:, 1:]), self.motion(out[:, 0])


@register
class FIMA(Method):
    name = "fima"
    modalities = ("rgb",)
    views = 2
    bn = "shuffle"  # the authors' code (MoCo's batch shuffle on every key-encoder input)

    def __init__(self, backbone: str = "tiny", backbone_args: dict | None = None, dim: int = 128,
                 dense_dim: int = 128, queue: int = 4096, motion_queue: int = 4096, momentum: float = 0.999,
                 temperature: float = 0.1, radius: float = 0.7, width: int = 128, layers: int = 2, heads: int = 4):
        super().__init__()
        self.backbone = build(backbone, 3, **(backbone_args or {}))
        d = self.backbone.out_dim
        self.head, self.dense = mlp([d, d, dim]), DenseProjector(d, dense_dim)
        self.key_backbone = copy.deepcopy(self.backbone).requires_grad_(False)
        self.key_head = copy.deepcopy(self.head).requires_grad_(False)
        self.key_dense = copy.deepcopy(self.dense).requires_grad_(False)
        self.decoder = MotionDecoder(dense_dim, width, layers, heads)
        self.frame_head = mlp([dense_dim, dense_dim, dim])
        self.queue = Queue(dim, queue) if queue else None
        self.motion_queue = Queue(dim, motion_queue) if motion_queue else None
        self.momentum, self.temperature, self.radius = momentum, temperature, radius

    @property
    def encoder(self):
        return self.backbone

    def sampler(self):
        return ClipPair()

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        views = batch["views"][:2]
        clips = [v["rgb"] for v in views]
        rgb = [c[:, :, :-1] for c in clips]
        diff = [c[:, :, 1:] - c[:, :, :-1] for c in clips]
        maps = [self.backbone.forward_features(x) for x in rgb]
        q = [F.normalize(self.head(pool(m)), dim=1) for m in maps]
        keyed = [self.keys(self.key_rgb, x) for x in rgb]  # (map, k) per clip
        key_diff = [self.keys(self.key_diff, x) for x in diff]  # (map, dense target) per clip
        key_rgb, k = [m for m, _ in keyed], [z for _, z in keyed]
        targets = [t for _, t in key_diff]  # (B, dd, T', H', W')
        fg = [foreground(r, m) for r, (m, _) in zip(key_rgb, key_diff)]
        half = rgb[0].shape[2] // 2
        sub = [[self.keys(self.key_clip, x[:, :, s]) for s in (slice(0, half), slice(half, None))] for x in diff]
        terms = {"inst": 0.5 * (queue_nce(q[0], k[1], self.queue, self.temperature)
                                + queue_nce(q[1], k[0], self.queue, self.temperature))}
        dense, frame = [], []
        for a, b in ((0, 1), (1, 0)):
            cells, motion = self.decode(maps[a], fg[a])
            dense.append(self.dense_loss(cells, targets[b], fg[a], fg[b], views[a], views[b]))
            frame.append(self.frame_loss(motion, sub[a]))
        terms["dense"] = 0.5 * sum(dense)
        terms["frame"] = 0.5 * sum(frame)
        if self.training:
            if self.queue is not None:
                self.queue.push(torch.cat(k))
            if self.motion_queue is not None:
                self.motion_queue.push(torch.cat([s[0] for s in sub]))
        return terms

    def key_rgb(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f_k(x) feature map, normalised g_k(pool f_k(x))) of an RGB clip."""
        m = self.key_backbone.forward_features(x)
        return m, F.normalize(self.key_head(pool(m)), dim=1)

    def key_diff(self, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f_k(d) feature map, normalised P_k(f_k(d)) dense targets) of frame differences."""
        m = self.key_backbone.forward_features(d)
        return m, F.normalize(self.key_dense(m), dim=1)

    def key_clip(self, d: torch.Tensor) -> torch.Tensor:
        """normalised g_k(f_k(d)): the key of a local sub-clip of differences."""
        return F.normalize(self.key_head(self.key_backbone(d)), dim=1)

    def decode(self, feature_map: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(predicted motion features (B, T', HW, dd), CLS motion embeddings (B, T', dim)), per step."""
        projected = self.dense(feature_map)  # (B, dd, T', H', W')
        b, dd, t, h, w = projected.shape
        cells = projected.permute(0, 2, 3, 4, 1).reshape(b * t, h * w, dd)
        out_cells, out_cls = self.decoder(cells, (h, w), keep.reshape(b * t, h * w))
        return (F.normalize(out_cells, dim=-1).reshape(b, t, h * w, dd),
                F.normalize(self.frame_head(out_cls), dim=-1).reshape(b, t, -1))

    def dense_loss(self, predicted, target, fg_a, fg_b, view_a, view_b) -> torch.Tensor:
        """multi-positive nce of a's foreground cells against every cell of b's targets (all samples), step by step."""
        b, dd, t, h, w = target.shape
        centres_a = cell_centres(view_a["box"], view_a["flip"], (h, w))
        centres_b = cell_centres(view_b["box"], view_b["flip"], (h, w))
        near = near_cells(centres_a, centres_b, view_a["box"], view_b["box"], (h, w), self.radius)  # (B, HW, HW)
        losses = []
        for i in range(t):
            keys = target[:, :, i].flatten(2).transpose(1, 2).reshape(b * h * w, dd)
            queries = predicted[:, i].reshape(b * h * w, dd)
            positive = torch.zeros(b, h * w, b, h * w, dtype=torch.bool, device=keys.device)
            idx = torch.arange(b, device=keys.device)
            positive[idx, :, idx, :] = near & fg_b[:, i, None, :]
            positive = positive.reshape(b * h * w, b * h * w) & fg_a[:, i].reshape(-1, 1)
            losses.append(multi_positive_nce(queries @ keys.T, positive, self.temperature))
        return sum(losses) / t

    def frame_loss(self, motion: torch.Tensor, halves: list[torch.Tensor]) -> torch.Tensor:
        """nce(CLS_i, key of the half spanning step i, {the other half} + Q_m), averaged over steps."""
        t = motion.shape[1]
        negatives = self.motion_queue.keys.clone() if self.motion_queue is not None else None
        losses = []
        for i in range(t):
            h = min(1, 2 * i // t) if t > 1 else 0
            losses.append(info_nce(motion[:, i], halves[h], negatives, self.temperature,
                                   own_negatives=halves[1 - h][:, None]))
        return sum(losses) / t

    def after_step(self) -> None:
        for key, online in ((self.key_backbone, self.backbone), (self.key_head, self.head),
                            (self.key_dense, self.dense)):
            momentum_update(key, online, self.momentum)

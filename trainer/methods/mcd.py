"""Context and motion decoupling (Huang et al., CVPR 2021, arXiv 2104.00862), on stored motion vectors.

An RGB clip is asked two things. Context: its embedding must match an I-frame from within 5 frames of the
clip (a 2D encoder; the I-frame has the clip's crop and flip but its own colour jitter),
    L_ctx = in-batch nce(z_clip, z_iframe)     (the I-frame carries the scene, not the motion).
Motion: a transformer encoder-decoder reads the clip's feature map, averaged over time (a spatial grid of
tokens: the motion the decoder needs must be in the backbone's features, not re-derived by the decoder from
appearance at two times), and predicts, at every cell of a future motion-vector clip's feature grid, that
clip's features (from a 3D encoder of the vectors):
    L_mot = mean over cells p of nce(pred_p, target_p, {targets at every other cell of every sample}
                                     + {every cell of the video's negative MV clips})
Both use in-batch negatives gathered across DDP ranks with gradients (both sides are trained, and the
authors' code reduces the remote keys' gradients too), temperature 0.1; L = L_ctx + L_mot; SyncBatchNorm
(``bn: sync``) as in the authors' code. MVs are clamped to +-10 px, divided by 10 and upsampled
``motion_scale`` x (nearest: 4 gives per-pixel vectors as CoViAR's loader does), so that at paper scale the MV
ResNet-10 maps 8 x 28 x 28 stored vectors (112 crops) to a 1 x 7 x 7 target grid, the authors' (their clip map is
7 x 7 too); on the stored 4-pixel cells it would be 1 x 2 x 2, hardly dense. Paper-scale encoders: I-frame
ResNet-10 (2D), MV ResNet-10 (3D); the exported encoder is the clip backbone. Difference from the paper: H.264
vectors; the authors re-encoded to MPEG-4 with short GOPs and no B-frames (``mvtools extract --reencode``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import batch_nce
from ..models import build, mlp, pool, sincos_positions
from ..samplers import FutureMotion
from .base import Method, motion_input, register

RESNET10 = {"blocks": [1, 1, 1, 1]}


def tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """(B, D, *grid) -> (B, prod(grid), D)."""
    return feature_map.flatten(2).transpose(1, 2)


def future_motion_loss(predicted: torch.Tensor, target: torch.Tensor, negatives: torch.Tensor,
                       temperature: float = 0.1) -> torch.Tensor:
    """L_mot: ``predicted``, ``target`` (B, P, D) and ``negatives`` (..., D), all normalised; cell p of sample b
    must pick target (b, p) among every target cell of the batch (gathered across ranks) and the negatives."""
    d = predicted.shape[-1]
    return batch_nce(predicted.reshape(-1, d), target.reshape(-1, d), temperature,
                     extra_negatives=negatives.reshape(-1, d))


class FuturePredictor(nn.Module):
    """Transformer encoder-decoder: clip feature tokens -> one output per cell of a target grid.

    Both grids carry sine-cosine codes of their cells' normalised (t, y, x) positions, so a decoder query and
    the clip tokens at the same image location share a spatial code whatever the two resolutions.
    """

    def __init__(self, in_dim: int, out_dim: int, width: int = 256, layers: int = 2, heads: int = 4):
        super().__init__()
        self.width = width
        self.embed = nn.Linear(in_dim, width)
        self.query = nn.Parameter(torch.randn(width) * 0.02)
        self.transformer = nn.Transformer(width, heads, layers, layers, dim_feedforward=2 * width, dropout=0.0,
                                          batch_first=True)
        self.out = mlp([width, width, out_dim])

    def codes(self, grid, device) -> torch.Tensor:
        grid = (1, *grid) if len(grid) == 2 else tuple(grid)  # a spatial grid is one step of (t, y, x)
        return sincos_positions(grid, self.width, normalised=True).to(device)

    def forward(self, features: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """features (B, D, H, W) or (B, D, T, H, W), grid (T', H', W') -> (B, T'H'W', out_dim)."""
        memory = self.embed(tokens(features)) + self.codes(features.shape[2:], features.device)
        queries = (self.query + self.codes(grid, features.device)).expand(len(features), -1, -1)
        return self.out(self.transformer(memory, queries))


@register
class MCD(Method):
    name = "mcd"
    modalities = ("rgb", "keyframe", "mv")
    views = 1
    bn = "sync"  # the authors' code converts every BN layer to SyncBatchNorm

    def __init__(self, backbone: str = "tiny", backbone_args: dict | None = None, dim: int = 128,
                 temperature: float = 0.1, iframe_backbone: str = "resnet18_2d", iframe_args: dict | None = None,
                 motion_backbone: str = "r3d_18", motion_args: dict | None = None, future_len: int = 8,
                 gap: int = 2, motion_stride: int = 1, negatives: int = 3, clamp: float = 10.0,
                 width: int = 256, layers: int = 2, heads: int = 4, motion_scale: int = 4, iframe_window: int = 5):
        super().__init__()
        self.clip = build(backbone, 3, **(backbone_args or {}))
        self.iframe = build(iframe_backbone, 3, **(RESNET10 if iframe_args is None else iframe_args))
        self.motion = build(motion_backbone, 2, **(RESNET10 if motion_args is None else motion_args))
        d, di, dm = self.clip.out_dim, self.iframe.out_dim, self.motion.out_dim
        self.clip_head, self.iframe_head = mlp([d, d, dim]), mlp([di, di, dim])
        self.motion_head = mlp([dm, dm, dim])
        self.predictor = FuturePredictor(d, dim, width, layers, heads)
        self.temperature, self.clamp, self.motion_scale = temperature, clamp, motion_scale
        self._sampler = FutureMotion(future_len, gap, motion_stride, negatives, iframe_window)

    @property
    def encoder(self):
        return self.clip

    def sampler(self):
        return self._sampler

    def motion_features(self, mv: torch.Tensor) -> torch.Tensor:
        """MV clips (N, 2, F, h, w) in output pixels -> the MV encoder's feature map (N, D, *target grid)."""
        x = motion_input(mv, "mv", self.clamp)
        if self.motion_scale != 1:
            x = F.interpolate(x, scale_factor=(1, self.motion_scale, self.motion_scale), mode="nearest")
        return self.motion.forward_features(x)

    @torch.no_grad()
    def target_grid(self, size: int) -> tuple[int, ...]:
        """The (T, H, W) grid of dense motion targets for ``size`` crops (vectors at size / 4)."""
        probe = torch.zeros(1, 2, self._sampler.future_len, size // 4, size // 4)
        training = self.motion.training
        self.motion.eval()  # no BN statistics from the probe
        try:
            return tuple(self.motion_features(probe).shape[2:])
        finally:
            self.motion.train(training)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        view = batch["views"][0]
        features = self.clip.forward_features(view["rgb"])
        z_clip = F.normalize(self.clip_head(pool(features)), dim=1)
        z_iframe = F.normalize(self.iframe_head(self.iframe(view["keyframe"])), dim=1)
        future, negatives = batch["future"], batch["negatives"]
        b = len(future)
        motion = self.motion_features(torch.cat([future, negatives.flatten(0, 1)]))
        keys = F.normalize(self.motion_head(tokens(motion)), dim=-1)  # (B + B K, cells, dim)
        predicted = F.normalize(self.predictor(features.mean(2), motion.shape[2:]), dim=-1)
        return {"ctx": batch_nce(z_clip, z_iframe, self.temperature),
                "mot": future_motion_loss(predicted, keys[:b], keys[b:], self.temperature)}

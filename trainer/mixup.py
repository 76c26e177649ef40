"""Label smoothing, mixup and cutmix for fine-tuning (VideoMAE's recipe, after DeiT / timm), on clips (B, C, T, H, W).

    soft targets  y~ = (1 - e) onehot(y) + e / K                                   (label smoothing e, K classes)
    mixup         x <- l x + (1 - l) x_flip,   y~ <- l y~ + (1 - l) y~_flip,   l ~ Beta(a, a)
    cutmix        x <- x with a box of x_flip pasted into every frame (area (1 - l) H W, centred uniformly, clipped
                  at the border), y~ <- l' y~ + (1 - l') y~_flip with l' = 1 - box area / (H W)
    loss          -sum_k y~_k log softmax(z)_k, averaged over the batch

``x_flip`` is the batch in reverse order (timm's batch mode). With both enabled, each batch takes cutmix with
probability ``switch_prob``, else mixup. Draws come from torch's global generator, which the loop seeds and
checkpoints, so a resumed run mixes as an uninterrupted one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def smoothed_targets(labels: torch.Tensor, classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """(B, K) soft targets: 1 - e + e / K at the label, e / K elsewhere."""
    return F.one_hot(labels, classes).float() * (1 - smoothing) + smoothing / classes


def cutmix_box(height: int, width: int, lam: float) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of a box of about (1 - lam) of the frame's area, centred uniformly at random, clipped."""
    ratio = math.sqrt(1 - lam)
    bh, bw = int(height * ratio), int(width * ratio)
    cy, cx = int(torch.randint(height, ())), int(torch.randint(width, ()))
    return (max(cy - bh // 2, 0), min(cy + bh // 2, height), max(cx - bw // 2, 0), min(cx + bw // 2, width))


def mix(x: torch.Tensor, targets: torch.Tensor, mixup: float = 0.0, cutmix: float = 0.0, switch_prob: float = 0.5
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(mixed clips, mixed soft targets) of a batch; ``mixup`` / ``cutmix`` are the Beta parameters a (0: off)."""
    if not mixup and not cutmix:
        return x, targets
    use_cutmix = bool(cutmix) and (not mixup or bool(torch.rand(()) < switch_prob))
    alpha = cutmix if use_cutmix else mixup
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    other = x.flip(0)
    if use_cutmix:
        y0, y1, x0, x1 = cutmix_box(x.shape[-2], x.shape[-1], lam)
        x = x.clone()
        x[..., y0:y1, x0:x1] = other[..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (x.shape[-2] * x.shape[-1])
    else:
        x = lam * x + (1 - lam) * other
    return x, lam * targets + (1 - lam) * targets.flip(0)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-sum_k t_k log softmax(z)_k, averaged over the batch."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(1).mean()

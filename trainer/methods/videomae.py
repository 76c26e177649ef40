"""VideoMAE (Tong et al., NeurIPS 2022): masked video modelling on a ViT; ``mask: warped`` makes it MGMAE-style.

A clip of T x S x S px is cut into T/2 x (S/16)^2 tokens (tubelet 2 x 16 x 16); a mask hides a fraction ``ratio``
of them (``trainer.masking``, drawn in the loader); the encoder ``f`` sees only the visible tokens, a light decoder
``g`` sees those plus a shared mask token at every hidden position (``trainer.vit.MaskedAutoencoder``, transformers'
``VideoMAEForPreTraining``) and predicts the pixels of every hidden token:

    L_recon = mean over hidden tokens i of || g(f(x_visible))_i - y_i ||^2 / (tubelet p^2 C)
    y_i = (x_i - mean(x_i)) / (std(x_i) + 1e-6)   per channel, over the token's pixels in [0, 1]  (``norm_targets``)

Masks (``mvtools.masking``): ``tube`` (VideoMAE: the same random places at every step, 90%), ``mgm`` (the ``mgm``
method), ``warped`` (MGMAE, Huang et al., ICCV 2023: random first-step scores carried along the stored vectors, or
``flow``, so the visible tokens follow the content; 90%). What VideoMAE states and we follow: the tubelet, 90% tube
masking, normalised-pixel targets, loss on hidden tokens only, a 4-block decoder narrower than the encoder, AdamW
(0.9, 0.95). Choices of ours: targets are computed from the loader's normalisation undone (x 0.225 + 0.45, where
VideoMAE undoes ImageNet's; per-token normalisation makes the two differ only through the 1e-6); under
``repeated_sampling: K`` every decoded clip gives K views, each with its own crop and mask (a batch is
batch_size x K clips), as VideoMAE's and ST-MAE's repeated sampling do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mvtools.masking import RATIOS

from ..data import MEAN, STD
from ..masking import MaskedClips
from ..models import build
from ..vit import CONFIGS, MaskedAutoencoder, ViT, normalised_targets, patchify
from .base import Method, register

#: the decoder of a ViT that ``trainer.vit.CONFIGS`` does not name (``decoder`` in method_args overrides it)
DEFAULT_DECODER = dict(hidden=192, depth=4, heads=3, intermediate=768)


@register
class VideoMAE(Method):
    name = "videomae"
    modalities = ("rgb",)
    views = 1
    bn = "local"  # a ViT has no batch norm: nothing to leak
    default_mask = "tube"
    no_weight_decay = ("mask_token",)  # as VideoMAE (its position table is no parameter)

    def __init__(self, backbone: str = "vit_tiny", backbone_args: dict | None = None, mask: str | None = None,
                 ratio: float | None = None, decoder: dict | None = None, norm_targets: bool = True,
                 repeated_sampling: int = 1, motion: str = "mv"):
        super().__init__()
        mask = mask or self.default_mask
        ratio = RATIOS.get(mask, 0.9) if ratio is None else ratio
        if not 0 < ratio < 1:
            raise ValueError(f"{self.name}: ratio must lie in (0, 1), got {ratio}")
        if motion not in ("mv", "flow", "auto"):
            raise ValueError(f"{self.name}: motion must be mv, flow or auto, got {motion!r}")
        encoder = build(backbone, 3, **(backbone_args or {}))
        if not isinstance(encoder, ViT):
            raise ValueError(f"{self.name}: masked modelling needs a ViT backbone (vit_tiny, vit_s16, vit_b16), "
                             f"got {backbone!r}")
        self.mae = MaskedAutoencoder(encoder, **{**CONFIGS.get(backbone, {}).get("decoder", DEFAULT_DECODER),
                                                 **(decoder or {})})
        self.mask, self.ratio, self.norm_targets = mask, ratio, norm_targets
        self.modalities = ("rgb",) if mask == "tube" else ("rgb", "flow" if motion == "flow" else "mv")
        self._sampler = MaskedClips(mask, ratio, encoder.patch, encoder.tubelet, repeated_sampling, motion)

    @property
    def encoder(self) -> ViT:
        return self.mae.videomae

    def sampler(self) -> MaskedClips:
        return self._sampler

    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, tubelet p^2 C) what each token's prediction is compared with, from normalised clips."""
        encoder = self.encoder
        pixels = patchify(x * STD + MEAN, encoder.tubelet, encoder.patch)
        return normalised_targets(pixels) if self.norm_targets else pixels.flatten(2)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        x = torch.cat([view["rgb"] for view in batch["views"]])  # (K B, C, T, S, S), view k's batch at block k
        mask = batch["mask"].transpose(0, 1).reshape(x.shape[0], -1)
        predicted = self.mae(x, mask)
        with torch.no_grad():
            target = self.targets(x.float())
            target = target[mask].reshape(x.shape[0], -1, target.shape[-1])
        return {"recon": F.mse_loss(predicted.float(), target)}

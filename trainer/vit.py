"""Video ViTs in plain torch.nn with Hugging Face transformers' VideoMAE names, shapes and function.

``ViT`` computes ``transformers.VideoMAEModel``: a tubelet embedding (``Conv3d``, kernel = stride = tubelet x patch x
patch), plus a fixed sinusoid position table (not a state-dict entry), then ``depth`` pre-norm blocks of joint
space-time attention (query and value biases, no key bias) and a GELU MLP,

    h <- h + Attn(LN_before(h)),   h <- h + W_out GELU(W_in LN_after(h))      (LayerNorm eps 1e-12, as transformers)

then ``layernorm`` over the tokens, except in the ``mean_pooling`` form (transformers' ``use_mean_pooling=True``,
VideoMAE's fine-tuned checkpoints), whose norm is the classifier's ``fc_norm`` after pooling (``trainer.supervised``).
``forward(x)`` is the mean over tokens; ``forward_tokens(x, mask)`` the tokens a masked autoencoder sees.

State-dict names are those of transformers 5 (``encoder.layer.0.attention.attention.query.bias``); the checkpoints
on the Hugging Face Hub (and transformers 4) name the two biases ``q_bias`` / ``v_bias``: ``import_state`` renames
them, strips the ``videomae.`` prefix of ``VideoMAEForPreTraining`` / ``VideoMAEForVideoClassification`` state
dicts and drops their decoder and classifier. ``MaskedAutoencoder`` is ``VideoMAEForPreTraining`` (``mask_token``,
``videomae``, ``encoder_to_decoder``, ``decoder.decoder_layers``, ``decoder.norm``, ``decoder.head``). Checked
against transformers in ``tests/data/videomae_reference.json``.

The position table is VideoMAE's: p / 10000^(2 floor(j/2) / D), sine on even j and cosine on odd j, over the
flattened token index p of the reference grid (``frames`` / tubelet x (``image`` / patch)^2), rounded to float32 as
transformers does. A clip of another size gets the table trilinearly resampled over (t, y, x) to its grid (what
VideoMAE V2's fine-tuning does to a table of another size); at the reference grid it is the table itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .models import Backbone

#: the named ViTs (patch 16, tubelet 2) and the decoder VideoMAE pretrains each with: ViT-S and ViT-B as in VideoMAE
#: (decoder of 4 blocks, 192 / 384 wide; ViT-B's are transformers' ``VideoMAEConfig`` defaults); ``vit_tiny`` for CPU
CONFIGS = {
    "vit_tiny": dict(hidden=64, depth=2, heads=4, intermediate=256, frames=8, image=64,
                     decoder=dict(hidden=32, depth=1, heads=2, intermediate=128)),
    "vit_s16": dict(hidden=384, depth=12, heads=6, intermediate=1536, frames=16, image=224,
                    decoder=dict(hidden=192, depth=4, heads=3, intermediate=768)),
    "vit_b16": dict(hidden=768, depth=12, heads=12, intermediate=3072, frames=16, image=224,
                    decoder=dict(hidden=384, depth=4, heads=6, intermediate=1536)),
}
EPS = 1e-12  # transformers' VideoMAEConfig.layer_norm_eps (the encoder's and the decoder's blocks)


def sinusoid_table(positions: int, dim: int) -> torch.Tensor:
    """VideoMAE's fixed position codes (positions, dim): angle p / 10000^(2 floor(j / 2) / dim), sin at even j, cos
    at odd j; computed in float64 and rounded to float32, as transformers' ``get_sinusoid_encoding_table``."""
    p = torch.arange(positions, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)
    angle = p / torch.pow(torch.tensor(10000.0, dtype=torch.float64), 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.where(j.long() % 2 == 0, angle.sin(), angle.cos())
    return table.float()


def resample_table(table: torch.Tensor, grid: Sequence[int], to: Sequence[int]) -> torch.Tensor:
    """A (prod(grid), D) table over a (t, y, x) ``grid`` resampled trilinearly to grid ``to`` (the table itself
    when they are equal)."""
    if tuple(grid) == tuple(to):
        return table
    cube = table.T.reshape(1, table.shape[1], *grid)
    return F.interpolate(cube, size=tuple(to), mode="trilinear", align_corners=False).reshape(table.shape[1], -1).T


class SelfAttention(nn.Module):
    """Multi-head attention over all tokens: softmax(q k^T / sqrt(d_head)) v; ``query`` and ``value`` have biases,
    ``key`` none (transformers' ``VideoMAESelfAttention``)."""

    def __init__(self, dim: int, heads: int, qv_bias: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not a multiple of {heads} heads")
        self.heads = heads
        self.query = nn.Linear(dim, dim, bias=qv_bias)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=qv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (f(x).view(b, n, self.heads, -1).transpose(1, 2) for f in (self.query, self.key, self.value))
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)


class Dense(nn.Module):
    """One ``dense`` linear layer (transformers wraps each in a module of that name)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.dense = nn.Linear(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(x)


class Attention(nn.Module):
    """``attention`` (the heads) then ``output.dense`` (the projection back)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attention = SelfAttention(dim, heads)
        self.output = Dense(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.attention(x))


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a residual branch for a whole sample with probability p and scale the
    kept ones by 1 / (1 - p); the identity in evaluation."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype) >= self.p
        return x * keep / (1 - self.p)


class Layer(nn.Module):
    """One pre-norm block (transformers' ``VideoMAELayer``, its names in its order); ``drop_path`` is VideoMAE's
    fine-tuning regulariser (transformers has none: 0 computes its function)."""

    def __init__(self, dim: int, heads: int, intermediate: int, drop_path: float = 0.0, eps: float = EPS):
        super().__init__()
        self.attention = Attention(dim, heads)
        self.intermediate = Dense(dim, intermediate)
        self.output = Dense(intermediate, dim)
        self.layernorm_before = nn.LayerNorm(dim, eps=eps)
        self.layernorm_after = nn.LayerNorm(dim, eps=eps)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attention(self.layernorm_before(x)))
        return x + self.drop_path(self.output(F.gelu(self.intermediate(self.layernorm_after(x)))))


class PatchEmbeddings(nn.Module):
    """(B, C, T, H, W) -> (B, N, D) tokens in (t, y, x) order: ``projection``, a Conv3d with kernel = stride."""

    def __init__(self, in_channels: int, dim: int, tubelet: int, patch: int):
        super().__init__()
        self.projection = nn.Conv3d(in_channels, dim, (tubelet, patch, patch), (tubelet, patch, patch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x).flatten(2).transpose(1, 2)


class Embeddings(nn.Module):
    def __init__(self, in_channels: int, dim: int, tubelet: int, patch: int):
        super().__init__()
        self.patch_embeddings = PatchEmbeddings(in_channels, dim, tubelet, patch)


class Encoder(nn.Module):
    def __init__(self, layers: list[Layer]):
        super().__init__()
        self.layer = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x)
        return x


def keep_visible(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The unmasked tokens (B, N_visible, D) of (B, N, D), in order; ``mask`` (B, N) is True where masked, with the
    same count in every row (transformers' ``bool_masked_pos``)."""
    if mask is None:
        return tokens
    return tokens[~mask].reshape(tokens.shape[0], -1, tokens.shape[-1])


class ViT(Backbone):
    """A video ViT with transformers' ``VideoMAEModel`` names (see the module docstring). ``frames`` and ``image``
    fix the reference grid of the position table; ``drop_path`` rises linearly from 0 to its value over the blocks
    (VideoMAE's stochastic depth)."""

    def __init__(self, in_channels: int = 3, hidden: int = 768, depth: int = 12, heads: int = 12,
                 intermediate: int = 3072, patch: int = 16, tubelet: int = 2, frames: int = 16, image: int = 224,
                 mean_pooling: bool = False, drop_path: float = 0.0):
        super().__init__()
        if frames % tubelet or image % patch:
            raise ValueError(f"the reference clip {frames} x {image} x {image} is not divided by the tubelet "
                             f"{tubelet} x {patch} x {patch}")
        self.patch, self.tubelet, self.mean_pooling, self.depth = patch, tubelet, mean_pooling, depth
        self.embeddings = Embeddings(in_channels, hidden, tubelet, patch)
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.encoder = Encoder([Layer(hidden, heads, intermediate, r) for r in rates])
        self.layernorm = None if mean_pooling else nn.LayerNorm(hidden, eps=EPS)
        self.grid = (frames // tubelet, image // patch, image // patch)
        self.register_buffer("position_table", sinusoid_table(math.prod(self.grid), hidden), persistent=False)
        self.stage_dims = [hidden]

    def check_input(self, clip_len: int, size: int) -> None:
        if clip_len % self.tubelet or size % self.patch:
            raise ValueError(f"a clip of {clip_len} frames x {size} x {size} px is not divided by the tubelet "
                             f"{self.tubelet} x {self.patch} x {self.patch} (clip_len a multiple of {self.tubelet}, "
                             f"size of {self.patch})")

    def token_grid(self, x: torch.Tensor) -> tuple[int, int, int]:
        """(T', H', W') of a clip (B, C, T, H, W)."""
        t, h, w = x.shape[2:]
        if t % self.tubelet or h % self.patch or w % self.patch:
            raise ValueError(f"a clip of {t} x {h} x {w} is not divided by the tubelet {self.tubelet} x {self.patch} "
                             f"x {self.patch}")
        return t // self.tubelet, h // self.patch, w // self.patch

    def positions(self, grid: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        """The position table (N, D) for a token grid, in ``dtype``."""
        return resample_table(self.position_table, self.grid, grid).to(dtype)

    def forward_tokens(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder's output tokens (B, N_visible, D) of a clip, its masked tokens (``mask`` True) left out;
        after ``layernorm`` unless ``mean_pooling``: transformers' ``VideoMAEModel(x, bool_masked_pos=mask)``."""
        tokens = self.embeddings.patch_embeddings(x)
        tokens = tokens + self.positions(self.token_grid(x), tokens.dtype)
        tokens = self.encoder(keep_visible(tokens, mask))
        return tokens if self.layernorm is None else self.layernorm(tokens)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The token map (B, D, T', H', W'): one stage."""
        t, h, w = self.token_grid(x)
        tokens = self.forward_tokens(x)
        return [tokens.transpose(1, 2).reshape(x.shape[0], -1, t, h, w)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(x).mean(1)

    def layer_of(self, name: str) -> int:
        """The depth of a parameter for layer-wise learning-rate decay: 0 for the embeddings, i + 1 for block i,
        depth + 1 for anything after the blocks (the final norm)."""
        if name.startswith("embeddings."):
            return 0
        if name.startswith("encoder.layer."):
            return int(name.split(".")[2]) + 1
        return self.depth + 1

    def import_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A transformers VideoMAE state dict in this module's names (see ``from_transformers``)."""
        return from_transformers(state, has_layernorm=self.layernorm is not None)


#: entries of transformers' VideoMAE wrappers that are not the encoder (``VideoMAEModel``)
WRAPPER_ENTRIES = ("encoder_to_decoder.", "mask_token", "decoder.", "fc_norm.", "classifier.")


def from_transformers(state: dict[str, torch.Tensor], has_layernorm: bool = True) -> dict[str, torch.Tensor]:
    """The encoder's entries of a transformers VideoMAE state dict, in transformers 5's names: the ``videomae.``
    prefix of the pretraining and classification models stripped, their decoder and classifier (``WRAPPER_ENTRIES``)
    dropped when the prefix is there, ``q_bias`` / ``v_bias`` (the Hub's checkpoints, transformers 4) renamed
    ``query.bias`` / ``value.bias``; and without ``has_layernorm`` (the mean-pooling form) the encoder's final
    ``layernorm`` dropped: VideoMAE's fine-tuning starts its classifier norm (``fc_norm``) afresh. Anything else is
    left for the strict load to report."""
    wrapped = any(k.startswith("videomae.") for k in state)
    out = {}
    for k, v in state.items():
        if wrapped:
            if not k.startswith("videomae."):
                if k.startswith(WRAPPER_ENTRIES):
                    continue
            else:
                k = k.removeprefix("videomae.")
        k = k.replace("attention.attention.q_bias", "attention.attention.query.bias")
        k = k.replace("attention.attention.v_bias", "attention.attention.value.bias")
        if not has_layernorm and k.startswith("layernorm."):
            continue
        out[k] = v
    return out


class MaskedDecoder(nn.Module):
    """VideoMAE's decoder (transformers' ``VideoMAEDecoder``): ``decoder_layers`` blocks over all tokens, then on
    the last ``n`` (the masked ones) ``norm`` (LayerNorm eps 1e-5) and ``head`` to tubelet x patch^2 x C values."""

    def __init__(self, hidden: int, depth: int, heads: int, intermediate: int, outputs: int):
        super().__init__()
        self.decoder_layers = nn.ModuleList(Layer(hidden, heads, intermediate) for _ in range(depth))
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, outputs)

    def forward(self, x: torch.Tensor, n: int) -> torch.Tensor:
        for layer in self.decoder_layers:
            x = layer(x)
        return self.head(self.norm(x[:, -n:]))


class MaskedAutoencoder(nn.Module):
    """transformers' ``VideoMAEForPreTraining`` (its names and order): the encoder ``videomae`` sees the visible
    tokens; ``encoder_to_decoder`` maps them to the decoder's width; the decoder sees them (plus their positions)
    followed by ``mask_token`` plus the position of every masked token, and predicts those tokens' pixels:

        z = [E(x_visible) W + pos_visible, m + pos_masked]  ->  decoder  ->  (B, N_masked, tubelet p^2 C)

    in the order of the masked tokens (not unshuffled: the positions carry where each token is)."""

    def __init__(self, encoder: ViT, hidden: int, depth: int, heads: int, intermediate: int, in_channels: int = 3):
        super().__init__()
        self.mask_token = nn.Parameter(torch.zeros(1, 1, hidden))
        self.videomae = encoder
        self.encoder_to_decoder = nn.Linear(encoder.stage_dims[0], hidden, bias=False)
        outputs = in_channels * encoder.tubelet * encoder.patch ** 2
        self.decoder = MaskedDecoder(hidden, depth, heads, intermediate, outputs)
        table = sinusoid_table(math.prod(encoder.grid), hidden)
        self.register_buffer("position_table", table, persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Predicted pixels of the masked tokens (B, N_masked, tubelet p^2 C) of clips (B, C, T, H, W)."""
        visible = self.encoder_to_decoder(self.videomae.forward_tokens(x, mask))
        grid = self.videomae.token_grid(x)
        positions = resample_table(self.position_table, self.videomae.grid, grid).to(visible.dtype)
        positions = positions.expand(x.shape[0], -1, -1)
        b, d = x.shape[0], visible.shape[-1]
        masked = positions[mask].reshape(b, -1, d)
        z = torch.cat([visible + positions[~mask].reshape(b, -1, d), self.mask_token.to(visible.dtype) + masked], 1)
        return self.decoder(z, masked.shape[1])


def patchify(frames: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, N, tubelet x patch x patch, C): each token's pixels, tokens in (t, y, x) order and
    pixels in (t, y, x) order within a token (transformers' order, channels last)."""
    b, c, t, h, w = frames.shape
    x = frames.reshape(b, c, t // tubelet, tubelet, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, -1, tubelet * patch * patch, c)


def normalised_targets(pixels: torch.Tensor) -> torch.Tensor:
    """VideoMAE's reconstruction targets from ``patchify`` output (B, N, P, C) of pixels in [0, 1]: per token and
    channel (x - mean) / (std + 1e-6), std with Bessel's correction; flattened to (B, N, P C)."""
    mean = pixels.mean(dim=-2, keepdim=True)
    std = pixels.var(dim=-2, unbiased=True, keepdim=True).sqrt()
    return ((pixels - mean) / (std + 1e-6)).flatten(2)


def build_vit(name: str, in_channels: int = 3, **kwargs) -> ViT:
    """``vit_tiny``, ``vit_s16`` or ``vit_b16`` (``CONFIGS``); kwargs override any field (``drop_path``,
    ``mean_pooling``, ``frames``, ``image``, ``patch``, ...)."""
    config = {k: v for k, v in CONFIGS[name].items() if k != "decoder"}
    return ViT(in_channels, **{**config, **kwargs})

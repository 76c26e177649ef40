"""Backbones in plain torch.nn: R3D-18, R(2+1)D-18, S3D-G and a tiny 3D CNN for clips; ResNet-18 for images.

Every backbone maps its input through a stem and a list of stages and exposes
``forward_stages(x) -> [map per stage]``, ``forward_features(x) -> last map`` (B, D, T', H', W') or
(B, D, H', W'), and ``forward(x) -> (B, D)`` (global average pool); ``out_dim`` is D and ``stage_dims``
the width of each stage. Widths and depths are parameters; ``build(name, in_channels=..., **kwargs)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Backbone(nn.Module):
    stem: nn.Module
    stages: nn.ModuleList
    stage_dims: list[int]

    @property
    def out_dim(self) -> int:
        return self.stage_dims[-1]

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool(self.forward_features(x))


def scaled(widths: Sequence[int], factor: float) -> list[int]:
    """Channel widths times ``factor`` (at least 4 each): a thinner network of the same shape."""
    return [max(4, round(w * factor)) for w in widths] if factor != 1.0 else list(widths)


def pool(feature_map: torch.Tensor) -> torch.Tensor:
    """Global average over every axis after (B, D)."""
    return feature_map.flatten(2).mean(-1)


def _bn_relu(dims: int, channels: int) -> list[nn.Module]:
    return [(nn.BatchNorm3d if dims == 3 else nn.BatchNorm2d)(channels), nn.ReLU(inplace=True)]


def mid_width(cin: int, cout: int, k: int = 3) -> int:
    """The (2+1)D mid width that matches a full k^3 conv's parameters: floor(k^3 N_in N_out / (k^2 N_in + k N_out))
    (Tran et al., 2018; one value per block, from the block's input and output widths)."""
    return max(1, (k * k * k * cin * cout) // (k * k * cin + k * cout))


class Conv2Plus1d(nn.Sequential):
    """A (2+1)D convolution: 1 x k x k spatial to ``mid`` channels, BN, ReLU, then k x 1 x 1 temporal."""

    def __init__(self, cin: int, cout: int, stride: tuple[int, int, int] = (1, 1, 1), mid: int | None = None,
                 k: int = 3):
        mid = mid or mid_width(cin, cout, k)
        super().__init__(
            nn.Conv3d(cin, mid, (1, k, k), (1, stride[1], stride[2]), (0, k // 2, k // 2), bias=False),
            *_bn_relu(3, mid),
            nn.Conv3d(mid, cout, (k, 1, 1), (stride[0], 1, 1), (k // 2, 0, 0), bias=False),
        )


def _conv3d(cin: int, cout: int, stride=(1, 1, 1), mid: int | None = None) -> nn.Module:
    return nn.Conv3d(cin, cout, 3, stride, 1, bias=False)


def _conv2d(cin: int, cout: int, stride=(1, 1), mid: int | None = None) -> nn.Module:
    return nn.Conv2d(cin, cout, 3, stride[-2:], 1, bias=False)


class BasicBlock(nn.Module):
    """y = relu(x' + bn(conv(relu(bn(conv(x)))))), x' = x or a strided 1x1 projection."""

    def __init__(self, cin: int, cout: int, stride: tuple[int, ...], conv: Callable, dims: int):
        super().__init__()
        bn = nn.BatchNorm3d if dims == 3 else nn.BatchNorm2d
        mid = mid_width(cin, cout)
        self.body = nn.Sequential(conv(cin, cout, stride, mid=mid), *_bn_relu(dims, cout),
                                  conv(cout, cout, (1,) * len(stride), mid=mid), bn(cout))
        self.skip = nn.Identity()
        if cin != cout or any(s != 1 for s in stride):
            proj = nn.Conv3d(cin, cout, 1, stride, bias=False) if dims == 3 else nn.Conv2d(cin, cout, 1, stride,
                                                                                            bias=False)
            self.skip = nn.Sequential(proj, bn(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.body(x) + self.skip(x))


class ResNet(Backbone):
    """ResNet with basic blocks: 3D (R3D), (2+1)D (R(2+1)D) or 2D; stage i has ``blocks[i]`` blocks of width
    ``widths[i]``; every stage after the first halves each axis (time included, for clips)."""

    def __init__(self, kind: str = "r3d", in_channels: int = 3, widths: Sequence[int] = (64, 128, 256, 512),
                 blocks: Sequence[int] = (2, 2, 2, 2), stem_width: int | None = None, width: float = 1.0):
        super().__init__()
        dims = 2 if kind == "2d" else 3
        widths = scaled(widths, width)
        stem_width = scaled([stem_width], width)[0] if stem_width else widths[0]
        if kind == "2d":
            self.stem = nn.Sequential(nn.Conv2d(in_channels, stem_width, 7, 2, 3, bias=False),
                                      *_bn_relu(2, stem_width), nn.MaxPool2d(3, 2, 1))
            conv = _conv2d
        elif kind == "r2plus1d":
            mid = 45 * stem_width // 64 or 1
            self.stem = nn.Sequential(nn.Conv3d(in_channels, mid, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False),
                                      *_bn_relu(3, mid), nn.Conv3d(mid, stem_width, (3, 1, 1), 1, (1, 0, 0),
                                                                   bias=False), *_bn_relu(3, stem_width))
            conv = Conv2Plus1d
        else:
            self.stem = nn.Sequential(nn.Conv3d(in_channels, stem_width, (3, 7, 7), (1, 2, 2), (1, 3, 3),
                                                bias=False), *_bn_relu(3, stem_width))
            conv = _conv3d
        stages, cin = [], stem_width
        for i, (width, n) in enumerate(zip(widths, blocks)):
            s = 1 if i == 0 else 2
            stride = (s,) * dims
            layers = [BasicBlock(cin, width, stride, conv, dims)]
            layers += [BasicBlock(width, width, (1,) * len(stride), conv, dims) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            cin = width
        self.stages = nn.ModuleList(stages)
        self.stage_dims = list(widths)


class Tiny3d(Backbone):
    """A small 3D CNN for CPU tests and the demo: stem 3x3x3 conv, then one strided conv block per width."""

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = (16, 32, 64), width: float = 1.0):
        super().__init__()
        widths = scaled(widths, width)
        self.stem = nn.Sequential(nn.Conv3d(in_channels, widths[0], 3, (1, 2, 2), 1, bias=False),
                                  *_bn_relu(3, widths[0]))
        stages, cin = [], widths[0]
        for i, w in enumerate(widths):
            stride = (2 if i else 1, 2, 2)
            stages.append(nn.Sequential(nn.Conv3d(cin, w, 3, stride, 1, bias=False), *_bn_relu(3, w)))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.stage_dims = list(widths)


class SepConv3d(nn.Sequential):
    """S3D's separable conv: 1 x k x k spatial, then k x 1 x 1 temporal, each with BN and ReLU."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1):
        super().__init__(nn.Conv3d(cin, cout, (1, k, k), (1, stride, stride), (0, k // 2, k // 2), bias=False),
                         *_bn_relu(3, cout),
                         nn.Conv3d(cout, cout, (k, 1, 1), (stride, 1, 1), (k // 2, 0, 0), bias=False),
                         *_bn_relu(3, cout))


def _unit(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 1, bias=False), *_bn_relu(3, cout))


class Gating(nn.Module):
    """S3D-G feature gating: y = sigmoid(W mean_{t,h,w}(x) + b) * x, per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Linear(channels, channels)

    def forward(self, x):
        return x * torch.sigmoid(self.fc(pool(x)))[:, :, None, None, None]


class Inception(nn.Module):
    """An S3D-G mixed block: 1x1 | 1x1 -> sep 3x3x3 | 1x1 -> sep 3x3x3 | maxpool -> 1x1, each gated."""

    def __init__(self, cin: int, b0: int, b1: tuple[int, int], b2: tuple[int, int], b3: int):
        super().__init__()
        self.branches = nn.ModuleList([
            _unit(cin, b0),
            nn.Sequential(_unit(cin, b1[0]), SepConv3d(b1[0], b1[1])),
            nn.Sequential(_unit(cin, b2[0]), SepConv3d(b2[0], b2[1])),
            nn.Sequential(nn.MaxPool3d(3, 1, 1), _unit(cin, b3)),
        ])
        self.gates = nn.ModuleList(Gating(c) for c in (b0, b1[1], b2[1], b3))
        self.out_channels = b0 + b1[1] + b2[1] + b3

    def forward(self, x):
        return torch.cat([g(b(x)) for b, g in zip(self.branches, self.gates)], 1)


# (b0, (b1 reduce, b1), (b2 reduce, b2), b3) of S3D-G's mixed blocks 3b .. 5c, at width 1.
_S3D_BLOCKS = [
    [(64, (96, 128), (16, 32), 32), (128, (128, 192), (32, 96), 64)],
    [(192, (96, 208), (16, 48), 64), (160, (112, 224), (24, 64), 64), (128, (128, 256), (24, 64), 64),
     (112, (144, 288), (32, 64), 64), (256, (160, 320), (32, 128), 128)],
    [(256, (160, 320), (32, 128), 128), (384, (192, 384), (48, 128), 128)],
]


class S3DG(Backbone):
    """S3D-G (Xie et al., 2018): separable 3D inception with feature gating; ``width`` scales every layer."""

    def __init__(self, in_channels: int = 3, width: float = 1.0):
        super().__init__()

        def c(n: int) -> int:
            return max(1, round(n * width))

        self.stem = nn.Sequential(SepConv3d(in_channels, c(64), k=7, stride=2), nn.MaxPool3d((1, 3, 3), (1, 2, 2),
                                                                                          (0, 1, 1)),
                                  _unit(c(64), c(64)), SepConv3d(c(64), c(192)),
                                  nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)))
        stages, cin, dims = [], c(192), []
        for i, blocks in enumerate(_S3D_BLOCKS):
            layers = [nn.MaxPool3d(3, 2, 1)] if i else []
            for b0, b1, b2, b3 in blocks:
                block = Inception(cin, c(b0), (c(b1[0]), c(b1[1])), (c(b2[0]), c(b2[1])), c(b3))
                layers.append(block)
                cin = block.out_channels
            stages.append(nn.Sequential(*layers))
            dims.append(cin)
        self.stages = nn.ModuleList(stages)
        self.stage_dims = dims


BACKBONES: dict[str, Callable[..., Backbone]] = {
    "tiny": lambda in_channels=3, **kw: Tiny3d(in_channels, **kw),
    "r3d_18": lambda in_channels=3, **kw: ResNet("r3d", in_channels, **kw),
    "r2plus1d_18": lambda in_channels=3, **kw: ResNet("r2plus1d", in_channels, **kw),
    "s3d": lambda in_channels=3, **kw: S3DG(in_channels, **kw),
    "resnet18_2d": lambda in_channels=3, **kw: ResNet("2d", in_channels, **kw),
}
CLIP_BACKBONES = ("tiny", "r2plus1d_18", "r3d_18", "s3d")


def build(name: str, in_channels: int = 3, **kwargs) -> Backbone:
    """A backbone by name (``BACKBONES``); kwargs set widths / blocks (ResNets, tiny) and ``width``, a factor on
    every channel width (all backbones)."""
    try:
        factory = BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}") from None
    return factory(in_channels=in_channels, **kwargs)


def mlp(dims: Sequence[int], bn: bool = False) -> nn.Sequential:
    """Linear -> (BN) -> ReLU ... -> Linear: a projection head."""
    layers: list[nn.Module] = []
    for i in range(len(dims) - 2):
        layers += [nn.Linear(dims[i], dims[i + 1])]
        if bn:
            layers += [nn.BatchNorm1d(dims[i + 1])]
        layers += [nn.ReLU(inplace=True)]
    layers.append(nn.Linear(dims[-2], dims[-1]))
    return nn.Sequential(*layers)


def sincos_positions(shape: Sequence[int], dim: int, normalised: bool = False, scale: float = 16.0) -> torch.Tensor:
    """Fixed sine-cosine position codes for a grid of ``shape`` (e.g. (T, H, W)): (prod(shape), dim).

    ``dim`` is split evenly across the axes (the remainder padded with zeros); coordinate p on an axis gets
    sin(p w_k), cos(p w_k), w_k = 10000^(-k/n), n = half the axis's share (Vaswani et al., 2017). Coordinates
    are cell indices, or with ``normalised`` cell centres (i + 1/2) / n * ``scale``, so that grids of different
    resolutions over the same extent get matching codes at matching places.
    """
    per_axis = (dim // len(shape)) // 2 * 2
    axes = [torch.arange(n, dtype=torch.float32) for n in shape]
    if normalised:
        axes = [(a + 0.5) / len(a) * scale for a in axes]
    grids = torch.meshgrid(*axes, indexing="ij")
    n = per_axis // 2
    freq = 10000.0 ** (-torch.arange(n, dtype=torch.float32) / max(n, 1))
    parts = []
    for coord in grids:
        angle = coord.reshape(-1, 1) * freq
        parts += [angle.sin(), angle.cos()]
    codes = torch.cat(parts, 1)
    return F.pad(codes, (0, dim - codes.shape[1]))

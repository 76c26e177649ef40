"""Masks for the masked-modelling methods, drawn where the clips are read: the sampler of ``videomae`` and ``mgm``.

``MaskedClips`` reads one clip of a video, makes ``repeats`` augmented views of it (VideoMAE's and ST-MAE's
repeated sampling: the frames are read and decoded once, each view has its own crop, flip and colour) and draws a
mask per view on its token grid with ``mvtools.masking`` (tube, mgm or warped), from the view's own motion field
(``mv`` or ``flow``, cropped and flipped with it, in output pixels). Every random choice comes from the sample's
``rng``, so masks are reproducible and a resumed run draws the same ones. A sample is

    {"views": [view, ...] (repeats of them, each {"rgb": (3, T, S, S)}), "mask": (repeats, N) bool, True = hidden}

with N = T / tubelet x (S / patch)^2 tokens in (t, y, x) order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mvtools.masking import KINDS, make_mask, token_displacement, token_energy

from .data import ReadOnce, random_view, read_view

#: elements per output pixel of each motion source: ``mv`` holds 4 x 4-pixel cells, ``flow`` one per pixel
CELL = {"mv": 4, "flow": 1}


def clip_mask(kind: str, grid: tuple[int, int, int], ratio: float, rng: np.random.Generator,
              motion: torch.Tensor | None = None, source: str = "mv", patch: int = 16, tubelet: int = 2,
              stride: int = 1) -> np.ndarray:
    """The (T', H', W') mask of one view; ``motion`` is its field (C, T, h, w) as ``ClipDataset`` gives it (``mv``:
    past dx, dy first, per frame with ``mv_per_frame``; ``flow``: t -> t+1)."""
    if kind == "tube":
        return make_mask(kind, grid, ratio, rng)
    field = motion[:2].permute(1, 2, 3, 0).numpy()  # (T, h, w, 2)
    if kind == "mgm":
        return make_mask(kind, grid, ratio, rng, energy=token_energy(field, tubelet, patch, CELL[source]))
    displacement = token_displacement(field, tubelet, patch, CELL[source], frames_per_step=tubelet * stride,
                                      backward=source == "mv")
    return make_mask(kind, grid, ratio, rng, displacement=displacement)


@dataclass(frozen=True)
class MaskedClips:
    """The masked methods' sampler (see the module docstring). ``source``: ``mv``, ``flow`` or ``auto`` (``flow``
    when the store has it); only ``mgm`` and ``warped`` masks read it."""

    kind: str = "tube"
    ratio: float = 0.9
    patch: int = 16
    tubelet: int = 2
    repeats: int = 1
    source: str = "mv"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"mask must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.repeats < 1:
            raise ValueError(f"repeated_sampling must be at least 1, got {self.repeats}")
        if self.kind != "tube" and self.patch % CELL["mv"]:
            raise ValueError(f"a {self.patch} px patch does not cover whole 4 px motion-vector cells")

    def resolve(self, dataset) -> str | None:
        if self.kind == "tube":
            return None
        if self.source != "auto":
            return self.source
        return "flow" if "flow" in dataset.group(0) else "mv"

    def __call__(self, dataset, video: int, rng: np.random.Generator) -> dict:
        v, spec = dataset.videos[video], dataset.spec
        source = self.resolve(dataset)
        first = random_view(rng, v, spec)
        views = [first] + [random_view(rng, v, spec, first.start) for _ in range(self.repeats - 1)]
        group = ReadOnce(dataset.group(video))
        grid = (spec.clip_len // self.tubelet, spec.size // self.patch, spec.size // self.patch)
        out, masks = [], []
        for view in views:
            x = read_view(group, v, view, ("rgb",) if source is None else ("rgb", source), spec, augment=dataset.train)
            motion = x.pop(source) if source else None
            masks.append(clip_mask(self.kind, grid, self.ratio, rng, motion, source or "mv", self.patch,
                                   self.tubelet, spec.stride).reshape(-1))
            out.append(x)
        return {"views": out, "mask": torch.from_numpy(np.stack(masks))}

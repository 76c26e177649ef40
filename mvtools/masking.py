"""Token masks for masked video modelling, and the motion they are guided by: pure NumPy on token grids.

A clip of T frames x H x W px seen by a ViT with a tubelet of ``tubelet`` frames and ``patch`` x ``patch`` px is a
grid of T' x H' x W' tokens (T' = T / tubelet steps of H' x W'); a mask is a bool array of that shape, True where a
token is hidden from the encoder. Every mask hides k = round(ratio H' W') tokens at every step (at least 1, at most
H' W' - 1), so the hidden fraction is exactly ``ratio`` wherever ratio H' W' is a whole number:

    tube     VideoMAE (Tong et al. 2022): k random positions, the same at every step (a tube through time)
    mgm      MGM (Fan et al. 2023): at each step the k tokens nearest a centre placed where they cover the most
             motion energy (``token_energy`` of the clip's vectors), so the hidden volume follows the moving region
    warped   MGMAE (Huang et al. 2023): random scores on the first step, carried to each next step along the motion
             (backward warping with the vectors, bilinear); each step hides all but its H' W' - k lowest scores, so
             the visible tokens are the same content from step to step

Choices the papers leave open (what is ours): MGM's hidden region is the set of the k tokens nearest a centre on the
half-token lattice (a discrete disc; at a border it grows inwards), the centre maximising the energy inside it, ties
going to the centre nearest the energy's centroid; a step without motion (an I-frame's tubelet) keeps the nearest
step's centre, a clip without any a random one. MGMAE estimates flow online and warps from a base frame; here the
base is the first step (FFmpeg's past vectors point back in time, which is what backward warping needs; with
``flow``, t -> t+1, its negation is used), and tokens whose source lies outside the frame score 1 (hidden first).

Why this module lives in ``mvtools``: ``mvtools show --mask`` draws these masks and ``mvtools`` never imports
``trainer`` (extraction and inspection start without torch); the functions are NumPy on the store's own motion
layout, like ``mvtools.motion``. ``trainer.masking`` applies them to training clips.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

KINDS = ("tube", "mgm", "warped")
#: each paper's masking ratio: VideoMAE's 90% tube masking; MGM's 75% (as we read the paper's ablation, not in
#: ../shared/papers); MGMAE keeps VideoMAE's 90%
RATIOS = {"tube": 0.9, "mgm": 0.75, "warped": 0.9}
OUTSIDE = 1.0  # the score of a token whose source lies outside the frame: hidden before any visible one


def hidden_count(tokens: int, ratio: float) -> int:
    """k = round(ratio tokens), at least 1 and at most tokens - 1; ``ValueError`` for a ratio outside (0, 1)."""
    if not 0 < ratio < 1:
        raise ValueError(f"a masking ratio must lie in (0, 1), got {ratio}")
    return min(max(round(ratio * tokens), 1), tokens - 1)


def _pool(values: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Mean of (T, h, w, C) over blocks of ``factors`` (t, y, x); partial blocks at the end average what they hold."""
    shape = values.shape[:3]
    blocks = [math.ceil(n / f) for n, f in zip(shape, factors)]
    padded = np.zeros((*[b * f for b, f in zip(blocks, factors)], values.shape[-1]), np.float64)
    counts = np.zeros(padded.shape[:3], np.float64)
    padded[: shape[0], : shape[1], : shape[2]] = values
    counts[: shape[0], : shape[1], : shape[2]] = 1
    split = (blocks[0], factors[0], blocks[1], factors[1], blocks[2], factors[2])
    sums = padded.reshape(*split, -1).sum((1, 3, 5))
    return sums / counts.reshape(split).sum((1, 3, 5))[..., None]


def _cells(patch: int, cell: int) -> int:
    if patch % cell:
        raise ValueError(f"a {patch} px patch does not cover whole {cell} px motion cells")
    return patch // cell


def token_energy(field: np.ndarray, tubelet: int, patch: int, cell: int = 4) -> np.ndarray:
    """(T', H', W') mean motion magnitude |v| per token of a field (T, h, w, 2) whose elements cover ``cell`` x
    ``cell`` px (4 for ``mv``, 1 for ``flow``): the motion energy a token holds, per cell."""
    magnitude = np.hypot(field[..., 0], field[..., 1])[..., None].astype(np.float64)
    n = _cells(patch, cell)
    return _pool(magnitude, (tubelet, n, n))[..., 0]


def token_displacement(field: np.ndarray, tubelet: int, patch: int, cell: int = 4, frames_per_step: float = 1.0,
                       backward: bool = True) -> np.ndarray:
    """(T', H', W', 2) where each token's content was one step earlier, relative to it, in tokens (dx, dy): the mean
    vector of its cells over the step's frames (frames whose field is all zero, I-frames, left out) times
    ``frames_per_step`` (source frames between steps: tubelet x stride) / ``patch``. ``backward``: the field points
    back in time (``mv``'s past vectors, reference - current, per frame); otherwise forward (``flow``), negated."""
    field = np.asarray(field, np.float64)
    moving = np.abs(field).reshape(len(field), -1).max(1) > 0
    n = _cells(patch, cell)
    sums = _pool(field * moving[:, None, None, None], (tubelet, n, n))
    frames = _pool(np.broadcast_to(moving[:, None, None, None], (*field.shape[:3], 1)).astype(np.float64),
                   (tubelet, n, n))
    mean = np.divide(sums, frames, out=np.zeros_like(sums), where=frames > 0)
    return mean * (frames_per_step / patch) * (1.0 if backward else -1.0)


def tube_mask(grid: Sequence[int], ratio: float, rng: np.random.Generator) -> np.ndarray:
    """VideoMAE's tube mask on a (T', H', W') grid: the same k random positions hidden at every step."""
    t, h, w = grid
    k = hidden_count(h * w, ratio)
    step = np.zeros(h * w, bool)
    step[rng.permutation(h * w)[:k]] = True
    return np.broadcast_to(step.reshape(h, w), (t, h, w)).copy()


@functools.lru_cache(maxsize=64)
def disc_regions(h: int, w: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(centres (C, 2) as (y, x) on the half-token lattice, regions (C, k): the flat indices of the k tokens nearest
    each centre, nearest first; equal distances in row-major order)."""
    ys, xs = np.mgrid[0 : 2 * h - 1, 0 : 2 * w - 1] / 2.0
    centres = np.stack([ys.ravel(), xs.ravel()], 1)
    ty, tx = np.divmod(np.arange(h * w), w)
    distance = (centres[:, :1] - ty) ** 2 + (centres[:, 1:] - tx) ** 2
    return centres, np.argsort(distance, axis=1, kind="stable")[:, :k]


def mgm_mask(energy: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """MGM's mask of (T', H', W') token energies: at each step the k tokens nearest the centre whose disc of k tokens
    holds the most energy (ties: the centre nearest the step's energy centroid, then the previous step's centre, then
    a random one); steps without motion
    keep the nearest moving step's centre; a clip without motion gets one random centre."""
    t, h, w = energy.shape
    k = hidden_count(h * w, ratio)
    centres, regions = disc_regions(h, w, k)
    scores = energy.reshape(t, -1)[:, regions].sum(-1)  # (T', C)
    moving = scores.max(1) > 0
    chosen = np.full(t, -1)
    previous = None
    ty, tx = np.divmod(np.arange(h * w), w)
    for s in np.flatnonzero(moving):
        best = np.flatnonzero(scores[s] >= scores[s].max() * (1 - 1e-9))
        weights = energy[s].ravel()
        centroid = np.array([ty @ weights, tx @ weights]) / weights.sum()
        for target in (centroid, None if previous is None else centres[previous]):
            if target is not None and len(best) > 1:
                gap = ((centres[best] - target) ** 2).sum(1)
                best = best[gap <= gap.min() + 1e-9]
        chosen[s] = previous = int(best[rng.integers(len(best))])
    if not moving.any():
        chosen[:] = rng.integers(len(centres))
    else:
        known = np.flatnonzero(moving)
        for s in np.flatnonzero(~moving):
            chosen[s] = chosen[known[np.argmin(np.abs(known - s))]]
    mask = np.zeros((t, h * w), bool)
    mask[np.arange(t)[:, None], regions[chosen]] = True
    return mask.reshape(t, h, w)


def warp_scores(scores: np.ndarray, displacement: np.ndarray) -> np.ndarray:
    """s'(p) = s(p + d(p)) on an (H', W') grid, bilinear; samples outside the grid score ``OUTSIDE``. ``d`` (H', W',
    2) is (dx, dy) in tokens: where p's content was on the grid of ``scores``."""
    h, w = scores.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    sx, sy = x + displacement[..., 0], y + displacement[..., 1]
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    fx, fy = sx - x0, sy - y0
    out = np.zeros((h, w))
    for dy, dx, weight in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy, xx = y0 + dy, x0 + dx
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        value = np.where(inside, scores[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)], OUTSIDE)
        out += np.where(weight > 0, weight * value, 0.0)
    return out


def warped_mask(displacement: np.ndarray, ratio: float, rng: np.random.Generator,
                scores: np.ndarray | None = None) -> np.ndarray:
    """MGMAE's mask: ``scores`` (H', W'; default uniform random) on the first step, warped to step t along
    ``displacement[t]`` (T', H', W', 2: ``token_displacement``); each step shows its H' W' - k lowest scores."""
    t, h, w, _ = displacement.shape
    k = hidden_count(h * w, ratio)
    s = rng.random((h, w)) if scores is None else np.asarray(scores, np.float64)
    mask = np.ones((t, h * w), bool)
    for step in range(t):
        if step:
            s = warp_scores(s, displacement[step])
        mask[step, np.argsort(s.ravel(), kind="stable")[: h * w - k]] = False
    return mask.reshape(t, h, w)


def make_mask(kind: str, grid: Sequence[int], ratio: float, rng: np.random.Generator,
              energy: np.ndarray | None = None, displacement: np.ndarray | None = None) -> np.ndarray:
    """The ``kind`` mask (``KINDS``) of a (T', H', W') grid; ``mgm`` needs ``energy``, ``warped`` ``displacement``."""
    if kind == "tube":
        return tube_mask(grid, ratio, rng)
    if kind == "mgm":
        return mgm_mask(energy, ratio, rng)
    if kind == "warped":
        return warped_mask(displacement, ratio, rng)
    raise ValueError(f"unknown mask {kind!r}; choose from {', '.join(KINDS)}")


def motion_share(mask: np.ndarray, energy: np.ndarray) -> float:
    """The share of a clip's motion energy (sum over tokens of ``token_energy``) that lies in hidden tokens; nan
    for a clip without motion."""
    total = float(energy.sum())
    return float(energy[mask].sum()) / total if total > 0 else float("nan")


def visible_persistence(mask: np.ndarray, displacement: np.ndarray, moving_only: bool = False) -> float:
    """The fraction of visible tokens at steps t >= 1 whose content one step earlier (p + d rounded, inside the
    grid) was visible too: 1 when what the encoder sees moves with the content (warped masks), lower when visible
    places stay put while the content moves under them (tube masks). ``moving_only``: over the tokens whose content
    moved by at least half a token (where the two differ)."""
    t, h, w = mask.shape
    y, x = np.mgrid[0:h, 0:w]
    kept = total = 0
    for step in range(1, t):
        sy = np.rint(y + displacement[step, ..., 1]).astype(int)
        sx = np.rint(x + displacement[step, ..., 0]).astype(int)
        inside = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w) & ~mask[step]
        if moving_only:
            inside &= (sy != y) | (sx != x)
        kept += int((~mask[step - 1][sy[inside], sx[inside]]).sum())
        total += int(inside.sum())
    return kept / total if total else float("nan")

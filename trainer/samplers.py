"""Samplers for methods whose sample is more than independent views of a video (``Method.sampler()``).

A sampler is a picklable callable ``(dataset, video, rng) -> sample``; ``ClipDataset`` adds ``label``, ``key``
and ``video``. Each reads through ``dataset.read`` (same crop code, same alignment guarantees) and draws every
random choice from ``rng``, so samples stay reproducible and resumable.

- ``FutureMotion`` (``mcd``): an RGB clip with an I-frame from within 5 frames of it (its own colour jitter),
  the motion-vector clip that follows it and negative motion-vector clips from other times of the same video,
  all under one crop and flip.
- ``MotionFocused`` (``mcl``): MCL's motion-focused tubelets. Temporally, with probability ``p`` the clip
  starts among the ``top`` fraction of starts ranked by motion; spatially, random-resized crops are retried
  until one covers enough of the box of the strongest motion. Adds the clip's motion-boundary map.
- ``ClipsApart`` (``maclr``): two clips of a video whose starts lie ``min_s`` to ``max_s`` seconds apart.
- ``ClipPair`` (``fima``): two clips of ``clip_len + 1`` frames (frame differences are taken after cropping)
  with their crop boxes and flips, to match cells across views in image coordinates.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from .data import ClipSpec, View, clip_indices, random_colour, random_view

# --- MCD: the future motion-vector clip and negatives --------------------------------------------------------

def other_starts(num_frames: int, span: int, avoid: int, count: int, rng: np.random.Generator) -> list[int]:
    """``count`` clip starts whose ``span`` frames do not overlap the clip at ``avoid`` (any other start when the
    video is too short for that; ``avoid`` itself for a video with one possible start)."""
    last = max(num_frames - span, 0)
    starts = np.arange(last + 1)
    free = starts[np.abs(starts - avoid) >= span]
    if not len(free):
        free = starts[starts != avoid] if last > 0 else starts
    return [int(s) for s in rng.choice(free, size=count, replace=len(free) < count)]


def starts_near_iframes(keyframes: np.ndarray, span: int, last: int, window: int) -> np.ndarray:
    """The clip starts s in [0, last] with an I-frame in [s - window, s + span - 1 + window] (``keyframes``: the
    sorted frame indices of the I-frames)."""
    starts = np.arange(last + 1)
    k = np.asarray(keyframes)
    if not len(k):
        return starts[:0]
    first = np.searchsorted(k, starts - window)  # the first I-frame not before the window
    return starts[(first < len(k)) & (k[np.minimum(first, len(k) - 1)] <= starts + span - 1 + window)]


def iframe_near(keyframes: np.ndarray, start: int, span: int, window: int, rng: np.random.Generator) -> int:
    """Position (in ``keyframes``) of an I-frame drawn uniformly from those within ``window`` frames of the clip
    ``start .. start + span - 1``; the nearest one when none is."""
    k = np.asarray(keyframes)
    distance = np.maximum(np.maximum(start - k, k - (start + span - 1)), 0)
    near = np.flatnonzero(distance <= window)
    return int(rng.choice(near)) if len(near) else int(distance.argmin())


@dataclass(frozen=True)
class FutureMotion:
    """{"views": [{rgb, keyframe}], "future": mv (2, F, S/4, S/4), "negatives": (K, 2, F, S/4, S/4)}.

    The clip starts where an I-frame lies within ``iframe_window`` frames of it (MCD: +-5), and the I-frame is
    drawn among those; a video without such a start (a GOP longer than the clip plus twice the window: re-encode
    with a short GOP at extraction) gets a uniform start and its nearest I-frame. The I-frame shares the clip's
    crop and flip but has its own colour jitter (a shared one is a low-level shortcut for the context match).
    The future clip has ``future_len`` frames at ``stride`` and starts ``gap`` frames after the RGB clip's last
    frame; negatives are ``negatives`` clips of the same length that overlap neither. One crop and flip for all.
    """

    future_len: int = 8
    gap: int = 2
    stride: int = 1
    negatives: int = 3
    iframe_window: int = 5

    def __call__(self, dataset, video: int, rng: np.random.Generator) -> dict:
        v, spec = dataset.videos[video], dataset.spec
        motion_spec = replace(spec, clip_len=self.future_len, stride=self.stride, mv_channels=2)
        need = spec.span - 1 + self.gap + motion_spec.span
        last = max(0, v.num_frames - need)
        keyframes = dataset.group(video)["keyframe_index"][:]
        near = starts_near_iframes(keyframes, spec.span, last, self.iframe_window)
        start = int(rng.choice(near)) if len(near) else int(rng.integers(0, last + 1))
        view = random_view(rng, v, spec, start)
        colour, gray = random_colour(rng, spec)
        keyframe = dataset.read_keyframe(video, iframe_near(keyframes, start, spec.span, self.iframe_window, rng),
                                         replace(view, colour=colour, gray=gray))
        future_start = min(start + spec.span - 1 + self.gap, max(v.num_frames - motion_spec.span, 0))

        def motion(s: int) -> torch.Tensor:
            return dataset.read(video, replace(view, start=s), ("mv",), motion_spec)["mv"]

        negatives = other_starts(v.num_frames, motion_spec.span, future_start, self.negatives, rng)
        return {"views": [{**dataset.read(video, view, ("rgb",)), "keyframe": keyframe}],
                "future": motion(future_start), "negatives": torch.stack([motion(s) for s in negatives])}


# --- MaCLR: two clips some seconds apart ---------------------------------------------------------------------

def partner_starts(num_frames: int, span: int, first: int, lo: float, hi: float) -> np.ndarray:
    """The clip starts s (clips of ``span`` frames inside the video) with lo <= |s - first| <= hi, in frames."""
    starts = np.arange(max(num_frames - span, 0) + 1)
    gap = np.abs(starts - first)
    return starts[(gap >= lo) & (gap <= hi)]


@dataclass(frozen=True)
class ClipsApart:
    """{"views": [a, b]}: two clips of one video whose starts are ``min_s`` to ``max_s`` seconds apart (MaCLR:
    0.5-10 s), each with its own crop, flip and colour. The first start is drawn among those that have a partner,
    the second among its partners; a video too short for ``min_s`` gives the two starts farthest apart.
    Seconds are frames / the video's ``fps`` (25 when the store does not say)."""

    min_s: float = 0.5
    max_s: float = 10.0

    def __call__(self, dataset, video: int, rng: np.random.Generator) -> dict:
        v, spec = dataset.videos[video], dataset.spec
        fps = v.fps or 25.0
        lo, hi = self.min_s * fps, self.max_s * fps
        last = max(v.num_frames - spec.span, 0)
        if last < lo:  # no two starts are min_s apart: the farthest pair
            a, b = (0, last) if rng.random() < 0.5 else (last, 0)
        else:
            # a start has a partner unless it sits within lo of both ends
            firsts = np.flatnonzero((np.arange(last + 1) >= lo) | (np.arange(last + 1) <= last - lo))
            a = int(rng.choice(firsts))
            b = int(rng.choice(partner_starts(v.num_frames, spec.span, a, lo, hi)))
        return {"views": [dataset.read(video, random_view(rng, v, spec, s)) for s in (a, b)]}


# --- MCL: motion-focused tubelets ---------------------------------------------------------------------------

def motion_boundaries(field: np.ndarray) -> np.ndarray:
    """Motion-boundary magnitude of a vector field (..., h, w, 2): |grad u| + |grad v| per cell (central
    differences), the edges of motion rather than motion itself, so a uniform camera pan scores ~0."""
    mags = []
    for c in range(2):
        gy, gx = np.gradient(field[..., c].astype(np.float32), axis=(-2, -1))
        mags.append(np.hypot(gx, gy))
    return mags[0] + mags[1]


def window_sum(maps: np.ndarray, window: int) -> np.ndarray:
    """maps (T, ...) -> sum of maps t .. t+window-1 at each t (fewer at the end)."""
    c = np.cumsum(np.concatenate([np.zeros_like(maps[:1]), maps]), axis=0)
    t = np.arange(len(maps))
    return c[np.minimum(t + window, len(maps))] - c[t]


def pool_grid(maps: np.ndarray, grid: int) -> np.ndarray:
    """(..., h, w) -> (..., grid, grid) area means (cells split as evenly as the size allows)."""
    t = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))
    flat = t.reshape(-1, 1, *t.shape[-2:])
    return F.adaptive_avg_pool2d(flat, grid).reshape(*t.shape[:-2], grid, grid).numpy()


def clip_scores(frame_energy: np.ndarray, spec: ClipSpec) -> np.ndarray:
    """The motion score of every possible clip start: the mean energy of the clip's frames."""
    n = len(frame_energy)
    starts = np.arange(max(n - spec.span, 0) + 1)
    return np.array([frame_energy[clip_indices(s, spec, n)].mean() for s in starts])


def choose_start(scores: np.ndarray, rng: np.random.Generator, p: float = 0.7, top: float = 0.5) -> int:
    """With probability ``p`` a start among the ``top`` fraction by score, else any start (uniformly)."""
    if rng.random() < p:
        k = max(1, math.ceil(len(scores) * top))
        return int(rng.choice(np.argsort(-scores, kind="stable")[:k]))
    return int(rng.integers(0, len(scores)))


def motion_box(energy: np.ndarray, top: float = 0.1) -> tuple[tuple[int, int, int, int], int]:
    """The bounding box (x0, y0, x1, y1 in grid cells, x1/y1 exclusive) of the ``top`` fraction of cells with the
    most energy in a (g, g) map, and its area in cells."""
    k = max(1, math.ceil(energy.size * top))
    ys, xs = np.unravel_index(np.argsort(-energy, axis=None, kind="stable")[:k], energy.shape)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return box, (box[2] - box[0]) * (box[3] - box[1])


def required_coverage(cells: int) -> float:
    """How much of the motion box a crop must cover: 0.9 / 0.8 / 0.7 for boxes of <= 4 / 8 / 12 cells; larger
    boxes (diffuse motion) impose nothing."""
    for most, need in ((4, 0.9), (8, 0.8), (12, 0.7)):
        if cells <= most:
            return need
    return 0.0


def coverage(crop: tuple[float, ...], box: tuple[float, ...]) -> float:
    """Fraction of ``box`` inside ``crop`` (both x0, y0, x1, y1): overlap of the x ranges times the y ranges."""
    ox = max(0.0, min(crop[2], box[2]) - max(crop[0], box[0])) / max(box[2] - box[0], 1e-9)
    oy = max(0.0, min(crop[3], box[3]) - max(crop[1], box[1])) / max(box[3] - box[1], 1e-9)
    return ox * oy


def motion_focused_view(rng: np.random.Generator, video, spec: ClipSpec, start: int, box: tuple[float, ...],
                        need: float, tries: int = 40) -> View:
    """The first of up to ``tries`` random views (start fixed) covering ``need`` of ``box``, else the best."""
    best, best_cover = None, -1.0
    for _ in range(tries):
        view = random_view(rng, video, spec, start)
        cover = coverage(view.box, box)
        if cover >= need:
            return view
        if cover > best_cover:
            best, best_cover = view, cover
    return best


def half_starts(num_frames: int, span: int, second: bool) -> tuple[int, int]:
    """(first, last) start of clips inside the first or second half of a video (clamped for short videos)."""
    last = max(num_frames - span, 0)
    if second:
        return min(math.ceil(num_frames / 2), last), last
    return 0, min(max(num_frames // 2 - span, 0), last)


class _LRU(OrderedDict):
    def __init__(self, size: int = 1024):  # a default: copies and pickles rebuild it without arguments
        super().__init__()
        self.size = size

    def put(self, key, value):
        self[key] = value
        if len(self) > self.size:
            self.popitem(last=False)
        return value


@dataclass
class MotionFocused:
    """{"views": [query, its other view, clip 1, clip 2 of the other half], "motion_map": (T, h, w),
    "order": 0 if the query is from the first half of the video else 1}.

    Motion comes from ``source``: ``flow`` or ``mv``; ``auto`` uses ``flow`` when the store has it. The sampling
    statistics (per-frame energy and the 7x7 map for the box) come from the same source as the map, computed
    once per video and cached per process. ``motion_map`` is the query clip's motion-boundary map under the
    query's crop and flip, summed over a ``window`` of source frames.
    """

    p: float = 0.7
    top: float = 0.5
    window: int = 8
    grid: int = 7
    box_top: float = 0.1
    tries: int = 40
    source: str = "auto"
    cache_videos: int = 1024
    _cache: _LRU = field(default=None, init=False, repr=False, compare=False)

    def resolve(self, dataset) -> str:
        if self.source != "auto":
            return self.source
        return "flow" if "flow" in dataset.group(0) else "mv"

    def statistics(self, dataset, video: int) -> tuple[np.ndarray, np.ndarray]:
        """(per-frame mean motion-boundary energy (T,), per-frame pooled maps (T, grid, grid)) of a video."""
        if self._cache is None:
            self._cache = _LRU(self.cache_videos)
        if video not in self._cache:
            boundaries = motion_boundaries(dataset.group(video)[self.resolve(dataset)][:][..., :2])
            self._cache.put(video, (boundaries.mean(axis=(1, 2)), pool_grid(boundaries, self.grid)))
        return self._cache[video]

    def __call__(self, dataset, video: int, rng: np.random.Generator) -> dict:
        v, spec = dataset.videos[video], dataset.spec
        source = self.resolve(dataset)
        energy, maps = self.statistics(dataset, video)
        start = choose_start(clip_scores(energy, spec), rng, self.p, self.top)
        idx = clip_indices(start, spec, v.num_frames)
        (gx0, gy0, gx1, gy1), cells = motion_box(maps[idx].sum(0), self.box_top)
        sx, sy = v.width / self.grid, v.height / self.grid
        box = (gx0 * sx, gy0 * sy, gx1 * sx, gy1 * sy)
        need = required_coverage(cells) if energy[idx].sum() > 0 else 0.0
        views = [motion_focused_view(rng, v, spec, start, box, need, self.tries) for _ in range(2)]
        first_half = start + spec.span / 2 <= v.num_frames / 2
        lo, hi = half_starts(v.num_frames, spec.span, second=first_half)
        others = [random_view(rng, v, spec, int(rng.integers(lo, hi + 1))) for _ in range(2)]
        query = dataset.read(video, views[0], ("rgb", source))
        field = query.pop(source)[:2].permute(1, 2, 3, 0).numpy()  # (T, h, w, 2), output pixels
        stride_window = max(1, math.ceil(self.window / spec.stride))
        motion_map = window_sum(motion_boundaries(field), stride_window)
        return {"views": [query] + [dataset.read(video, w, ("rgb",)) for w in views[1:] + others],
                "motion_map": torch.from_numpy(np.ascontiguousarray(motion_map, dtype=np.float32)),
                "order": 0 if first_half else 1}


# --- FIMA: two clips with T + 1 frames and their boxes ------------------------------------------------------

@dataclass(frozen=True)
class ClipPair:
    """{"views": [a, b]}, each {"rgb": (3, T + 1, S, S), "box": (4,) crop box in stored pixels, "flip": ()}.

    The two clips have their own start, crop, flip and colour; the extra frame lets the method take T frame
    differences after cropping without wrapping around at t = 0.
    """

    def __call__(self, dataset, video: int, rng: np.random.Generator) -> dict:
        v = dataset.videos[video]
        spec = replace(dataset.spec, clip_len=dataset.spec.clip_len + 1)
        views = []
        for _ in range(2):
            view = random_view(rng, v, spec)
            views.append({**dataset.read(video, view, ("rgb",), spec),
                          "box": torch.tensor(view.box, dtype=torch.float32), "flip": torch.tensor(view.flip)})
        return {"views": views}

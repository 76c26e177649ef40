"""Clips from a store into PyTorch: pick the frames, read only the chunks they span, crop every modality alike.

A sample is ``{"views": [view, ...], "label": int (-1 if none), "key": str, "video": int}``; a view maps
each requested modality to a float tensor:

    rgb        (3, T, S, S)     normalised, (x/255 - 0.45) / 0.225
    mv         (C, T, S/4, S/4) C = 4 (past dx, dy, future dx, dy) or 2 (past), in output pixels; with
                                ``mv_per_frame``, per frame of displacement (``anchor_distances``)
    residual   (3, T, S, S)     r / 255
    framediff  (3, T, S, S)     (x_t - x_{t-1}) / 255 of consecutive source frames; 0 at frame 0
    flow       (2, T, S, S)     in output pixels, frame t -> t+1
    keyframe   (3, S, S)        the last I-frame at or before the clip's first frame, normalised like rgb

Within a view one crop box, one flip and one colour jitter apply to every modality: the box is resampled
at each array's own resolution, vectors are rescaled to output pixels, and a horizontal flip negates their
x components. Each view draws its own box, start and jitter. Randomness comes from
``(seed, epoch, index)`` only, so a run reproduces whatever the worker count and wherever it resumes.
The store is read through its documented zarr layout; handles open lazily in each process (fork-safe).
"""

from __future__ import annotations

import concurrent.futures
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import zarr

from mvtools.errors import DamagedData, MvtoolsError, StoreError
from mvtools.reader import ArrayReader, VideoReader
from mvtools.storage import is_remote, open_root
from mvtools.store import open_store

MODALITIES = ("rgb", "mv", "residual", "framediff", "flow", "keyframe")
ARRAYS = {"rgb": ("frames",), "mv": ("mv",), "residual": ("residual",), "framediff": ("frames",),
          "flow": ("flow",), "keyframe": ("keyframes", "keyframe_index")}
#: the ``mvtools extract`` flag that stores each array (named when a store lacks one)
EXTRACT_FLAGS = {"frames": "--modalities frames,...", "mv": "--modalities ...,mv (the default stores it)",
                 "residual": "--modalities ...,residual", "flow": "--flow dis (or farneback, raft)",
                 "keyframes": "--modalities ...,keyframes", "keyframe_index": "--modalities ...,keyframes"}
MEAN, STD = 0.45, 0.225
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
OPEN_VIDEOS = 256  # array handles kept open per process (each holds its metadata)
BAD_CLIP_POLICIES = ("fail", "skip")
REPLACEMENTS = 16  # draws a skipped sample may take before the store is taken for mostly damaged


class DataError(MvtoolsError):
    """The store cannot give what was asked (missing modality, empty split, ...); the message says which."""


@dataclass(frozen=True)
class ClipSpec:
    """Which frames and how they are augmented."""

    clip_len: int = 16
    stride: int = 2
    size: int = 112
    scale: tuple[float, float] = (0.3, 1.0)  # random-resized-crop area, fraction of the frame
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    jitter: float = 0.4  # brightness, contrast, saturation factors drawn from [1 - j, 1 + j]
    grayscale: float = 0.2  # probability
    flip: bool = True
    mv_channels: int = 4
    mv_per_frame: bool = False  # divide vectors by the frames to their reference (``anchor_distances``)

    @property
    def span(self) -> int:
        return (self.clip_len - 1) * self.stride + 1


@dataclass(frozen=True)
class View:
    """The random choices of one view: first frame, crop box (x0, y0, x1, y1 in stored pixels), flip, colour."""

    start: int
    box: tuple[float, float, float, float]
    flip: bool = False
    colour: tuple[float, float, float] = (1.0, 1.0, 1.0)  # brightness, contrast, saturation
    gray: bool = False


@dataclass(frozen=True)
class Video:
    key: str
    num_frames: int
    height: int
    width: int
    label: str | None
    split: str | None
    fps: float | None = None


def worker_context(store_path: str) -> str | None:
    """The DataLoader's start method for this store: None (the platform's default, ``fork`` on Linux) for folders
    and URLs alike. Readers open their handles in each worker, and a worker forked after obstore's runtime ran
    reads an object store through a helper process of its own (``mvtools.fetch``); measured against
    ``forkserver`` workers (``benchmarks/loader.py --remote``), it reads as fast and starts without re-importing
    torch."""
    return None


def list_videos(store_path: str, storage_options: Mapping[str, str] | None = None) -> list[Video]:
    """The complete videos of a store (a folder or a URL), from its index (one read per column; a stale
    index, left by an interrupted extraction, is rebuilt in memory from the video groups)."""
    try:
        c = open_store(os.fspath(store_path), storage_options=storage_options).video_index().columns
    except StoreError as e:
        raise DataError(str(e)) from None
    return [Video(key, int(n), int(h), int(w), label or None, split or None, float(fps) or None)
            for key, n, h, w, label, split, fps in zip(c["key"], c["num_frames"], c["stored_height"],
                                                        c["stored_width"], c["label"], c["split"], c["fps"]) if n > 0]


def anchor_distances(frame_type: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(past, future): frames from each frame to the reference its past / future vectors point to, in display
    order. References are the anchors, every frame but B-frames (``frame_type`` 2): a frame's past reference is the
    previous anchor, a B-frame's future one the next anchor, as the store's residual assumes (FFmpeg exports
    only past/future, not which reference; with B-frames as references or several reference frames this is the
    usual case, not every block's). 1 where a frame has no such vectors (I-frames; the future of I/P-frames)
    or no such anchor (a leading B-frame's past).
    """
    types = np.asarray(frame_type)
    t = np.arange(len(types))
    anchors = np.where(types != 2, t, -1)
    previous = np.concatenate([[-1], np.maximum.accumulate(anchors)[:-1]])  # the last anchor before t
    later = np.where(anchors >= 0, t, len(t))
    following = np.concatenate([np.minimum.accumulate(later[::-1])[::-1][1:], [len(t)]])  # the first after t
    past = np.where((previous >= 0) & (types != 0), t - previous, 1)
    future = np.where((following < len(t)) & (types == 2), following - t, 1)
    return past, future


def clip_indices(start: int, spec: ClipSpec, num_frames: int) -> np.ndarray:
    """start, start + stride, ... (clip_len of them), clamped to the last frame for short videos."""
    return np.minimum(start + np.arange(spec.clip_len) * spec.stride, num_frames - 1)


def random_view(rng: np.random.Generator, video: Video, spec: ClipSpec, start: int | None = None) -> View:
    """A random-resized crop (area in ``spec.scale``, aspect in ``spec.ratio``), flip, jitter and start."""
    h, w = video.height, video.width
    if start is None:
        start = int(rng.integers(0, max(1, video.num_frames - spec.span + 1)))
    for _ in range(10):
        area = h * w * rng.uniform(*spec.scale)
        aspect = math.exp(rng.uniform(math.log(spec.ratio[0]), math.log(spec.ratio[1])))
        bw, bh = math.sqrt(area * aspect), math.sqrt(area / aspect)
        if bw <= w and bh <= h:
            break
    else:
        bw = bh = min(h, w)
    x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
    j = spec.jitter
    colour = tuple(float(v) for v in rng.uniform(1 - j, 1 + j, 3))
    return View(start, (x0, y0, x0 + bw, y0 + bh), spec.flip and bool(rng.random() < 0.5), colour,
                bool(rng.random() < spec.grayscale))


def random_colour(rng: np.random.Generator, spec: ClipSpec) -> tuple[tuple[float, float, float], bool]:
    """A colour jitter of its own (brightness, contrast, saturation factors; grayscale or not), as ``random_view``'s."""
    j = spec.jitter
    return tuple(float(v) for v in rng.uniform(1 - j, 1 + j, 3)), bool(rng.random() < spec.grayscale)


def centre_view(video: Video, spec: ClipSpec, start: int) -> View:
    """The evaluation view: the centred square of the short side, no flip, no jitter."""
    return crop_view(video, start, 0, 1)


def crop_view(video: Video, start: int, crop: int, crops: int) -> View:
    """Spatial test view ``crop`` of ``crops``: squares of the short side spaced evenly along the long side, at
    offsets (L - S) * i / (crops - 1) (3 crops: start, centre, end, as the papers' 3-crop testing); one crop is
    the centre square. No flip, no jitter."""
    s = min(video.height, video.width)
    f = 0.5 if crops == 1 else crop / (crops - 1)
    x0, y0 = (video.width - s) * f, (video.height - s) * f
    return View(start, (x0, y0, x0 + s, y0 + s))


def split_keys(videos: Sequence[Video], test_fraction: float = 0.25) -> tuple[list[str], list[str], str]:
    """(train keys, test keys, where the split came from).

    The store's ``split`` attrs when it has them (test = "test", else "val"); otherwise, per class in key
    order, the last ceil(n * test_fraction) videos of every class with at least two.
    """
    for missing in (v for v in videos if v.label is None):
        raise DataError(f"video {missing.key!r} has no label; this needs labels "
                        f"(extract with --labels folder or a --recipe)")
    splits = {v.split for v in videos}
    if "train" in splits and splits & {"test", "val"}:
        test = "test" if "test" in splits else "val"
        return ([v.key for v in videos if v.split == "train"], [v.key for v in videos if v.split == test],
                f"store split train/{test}")
    by_class: dict[str, list[str]] = {}
    for v in sorted(videos, key=lambda v: v.key):
        by_class.setdefault(v.label, []).append(v.key)
    train, test = [], []
    for keys in by_class.values():
        n_test = math.ceil(len(keys) * test_fraction) if len(keys) > 1 else 0
        train += keys[: len(keys) - n_test]
        test += keys[len(keys) - n_test:]
    return train, test, f"per-class last {test_fraction:.0%} of keys (the store has no splits)"


def split_videos(videos: Sequence[Video], split: str | None) -> list[Video]:
    """The videos of ``split``: every video for None; the store's own split when it has one by that name;
    otherwise "train" / "test" are the two sides of ``split_keys`` (labels needed), anything else is empty."""
    if split is None:
        return list(videos)
    if any(v.split == split for v in videos):
        return [v for v in videos if v.split == split]
    if split not in ("train", "test"):
        return []
    train, test, _ = split_keys(videos)
    keys = set(train if split == "train" else test)
    return [v for v in videos if v.key in keys]


def crop_resize(arrays: np.ndarray, box: Sequence[float], size: int, cell: int = 1) -> np.ndarray:
    """Resample (..., h, w, C) arrays inside ``box`` (stored pixels) to (..., size, size, C), bilinear.

    ``cell`` is how many stored pixels one array element covers (4 for motion-vector cells); output
    element u samples stored pixel x0 + (u + 1/2) * bw / size, so every resolution sees the same box.
    """
    x0, y0, x1, y1 = box
    sx, sy = (x1 - x0) / (size * cell), (y1 - y0) / (size * cell)
    m = np.array([[sx, 0, (x0 + 0.5 * (x1 - x0) / size) / cell - 0.5],
                  [0, sy, (y0 + 0.5 * (y1 - y0) / size) / cell - 0.5]], np.float64)
    flat = arrays.reshape(-1, *arrays.shape[-3:])
    out = np.empty((len(flat), size, size, arrays.shape[-1]), arrays.dtype)
    for a, o in zip(flat, out):
        o.reshape(size, size, -1)[:] = cv2.warpAffine(a, m, (size, size), dst=None,
                                                      flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                                      borderMode=cv2.BORDER_REPLICATE).reshape(size, size, -1)
    return out.reshape(*arrays.shape[:-3], size, size, arrays.shape[-1])


def scale_vectors(field: np.ndarray, box: Sequence[float], size: int, flip: bool) -> np.ndarray:
    """Vectors (..., 2k) in stored pixels -> output pixels of a ``size`` crop of ``box``; flip negates x."""
    x0, y0, x1, y1 = box
    out = field.copy()
    out[..., 0::2] *= size / (x1 - x0) * (-1 if flip else 1)
    out[..., 1::2] *= size / (y1 - y0)
    return out


def colour_jitter(rgb: np.ndarray, view: View) -> np.ndarray:
    """Brightness b, contrast c, saturation s (s = 0: grayscale) on float RGB in [0, 1], then clipped.

    In sequence: x <- b x;  x <- c x + (1 - c) mean(Y);  x <- s x + (1 - s) Y, with Y = luma . x and the
    mean per frame. All three are linear, so they are applied as one: x <- c b S x + (1 - c) b mean(luma . x),
    S = s I + (1 - s) 1 luma^T (S 1 = 1 because the luma weights sum to 1).
    """
    b, c, s = view.colour
    s = 0.0 if view.gray else s
    sat = s * np.eye(3) + (1 - s) * np.outer(np.ones(3), LUMA)
    offset = (1 - c) * b * (rgb @ LUMA).mean(axis=(-1, -2))
    x = rgb @ (c * b * sat).T.astype(np.float32)
    x += offset.astype(np.float32)[..., None, None, None]
    return np.clip(x, 0.0, 1.0, out=x)


def _channels_first(x: np.ndarray) -> torch.Tensor:
    """(T, H, W, C) -> (C, T, H, W); (H, W, C) -> (C, H, W)."""
    axes = (3, 0, 1, 2) if x.ndim == 4 else (2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(axes), dtype=np.float32))


def _flip(x: np.ndarray, flip: bool) -> np.ndarray:
    return x[..., ::-1, :] if flip else x


def _rgb(frames: np.ndarray, view: View, spec: ClipSpec, augment: bool) -> torch.Tensor:
    # Cropping the uint8 frames first converts fewer pixels to float; bilinear rounding costs < 0.5/255.
    x = crop_resize(frames, view.box, spec.size).astype(np.float32) * np.float32(1 / 255)
    if augment:
        x = colour_jitter(x, view)
    x -= MEAN
    x *= 1 / STD
    return _channels_first(_flip(x, view.flip))


class VideoArrays:
    """A video's arrays for clip reads, opened in this process: each array's metadata read once, reads of several
    arrays fetched together (``mvtools.reader``: shard indexes cached, one ranged request per shard and array)."""

    def __init__(self, reader: VideoReader):
        self.reader = reader
        self._arrays: dict[str, ArrayReader] = {}
        self._anchors: tuple[np.ndarray, np.ndarray] | None = None
        self._keyframe_index: np.ndarray | None = None

    def __getitem__(self, name: str) -> ArrayReader:
        """The array ``name``, indexed like NumPy along time (``a[:]``, ``a[3:9:2]``, ``a[[1, 4]]``)."""
        if name not in self._arrays:
            self._arrays[name] = self.reader.array(name)
        return self._arrays[name]

    def __contains__(self, name: str) -> bool:
        return name in self.reader

    def read(self, wanted: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{array: array[idx]} for every (array, idx) of ``wanted``, their requests concurrent."""
        return self.reader.read(wanted)

    def anchor_distances(self) -> tuple[np.ndarray, np.ndarray]:
        """``anchor_distances`` of the video's ``frame_type``, read once."""
        if self._anchors is None:
            self._anchors = anchor_distances(self["frame_type"][:])
        return self._anchors

    def keyframe_index(self) -> np.ndarray:
        """The frame index of every stored I-frame, read once."""
        if self._keyframe_index is None:
            self._keyframe_index = self["keyframe_index"][:]
        return self._keyframe_index


class ReadOnce:
    """One sample's view of a video's arrays whose reads are kept: views of the same frames (repeated sampling)
    fetch and decode them once; a read of several arrays still goes out together (``VideoArrays.read``)."""

    def __init__(self, arrays: VideoArrays):
        self.arrays = arrays
        self._kept: dict[tuple[str, bytes], np.ndarray] = {}

    def __getitem__(self, name: str) -> ArrayReader:
        return self.arrays[name]

    def __contains__(self, name: str) -> bool:
        return name in self.arrays

    def read(self, wanted: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        keys = {name: (name, np.asarray(idx, dtype=np.int64).tobytes()) for name, idx in wanted.items()}
        missing = {name: idx for name, idx in wanted.items() if keys[name] not in self._kept}
        if missing:
            for name, values in self.arrays.read(missing).items():
                self._kept[keys[name]] = values
        return {name: self._kept[keys[name]] for name in wanted}

    def anchor_distances(self) -> tuple[np.ndarray, np.ndarray]:
        return self.arrays.anchor_distances()

    def keyframe_index(self) -> np.ndarray:
        return self.arrays.keyframe_index()


def read_frames(array: zarr.Array | ArrayReader, idx: np.ndarray) -> np.ndarray:
    """``array[idx]`` for frame indices ``idx``, reading only those frames. An ``ArrayReader`` fetches their chunks
    as one range per shard; a zarr array is read as one strided slice over the distinct indices when they are
    evenly spaced (a clip: start + k * stride, repeats where it is clamped at the last frame), else one
    contiguous read."""
    if isinstance(array, ArrayReader):
        return array.read(idx)
    distinct = np.unique(idx)
    step = int(distinct[1] - distinct[0]) if len(distinct) > 1 else 1
    lo, hi = int(distinct[0]), int(distinct[-1]) + 1
    even = len(distinct) > 1 and (np.diff(distinct) == step).all()
    data = array[lo:hi:step] if even else array[lo:hi][distinct - lo]
    return data[np.searchsorted(distinct, idx)]


def _read_arrays(group: zarr.Group | VideoArrays | ReadOnce, wanted: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if isinstance(group, (VideoArrays, ReadOnce)):
        return group.read(wanted)
    return {name: read_frames(group[name], idx) for name, idx in wanted.items()}


def read_view(group: zarr.Group | VideoArrays | ReadOnce, video: Video, view: View, modalities: Sequence[str],
              spec: ClipSpec, augment: bool = True) -> dict[str, torch.Tensor]:
    """One view of one video: the requested modalities of frames ``clip_indices(view.start)``, every array's
    frames fetched together."""
    idx = clip_indices(view.start, spec, video.num_frames)
    lo = int(idx.min())
    wanted: dict[str, np.ndarray] = {}
    before = np.maximum(idx - 1, 0)
    frames_idx = np.union1d(idx, before) if "framediff" in modalities else idx
    if "rgb" in modalities or "framediff" in modalities:
        wanted["frames"] = frames_idx
    for m, name in (("residual", "residual"), ("mv", "mv"), ("flow", "flow")):
        if m in modalities:
            wanted[name] = idx
    keyframe = None
    if "keyframe" in modalities:
        kidx = group.keyframe_index() if isinstance(group, (VideoArrays, ReadOnce)) else group["keyframe_index"][:]
        keyframe = max(int(np.searchsorted(kidx, lo, side="right")) - 1, 0)
        wanted["keyframes"] = np.array([keyframe])
    arrays = _read_arrays(group, wanted)
    out: dict[str, torch.Tensor] = {}
    if "frames" in arrays:
        frames = arrays["frames"]
        cur = frames[np.searchsorted(frames_idx, idx)]
        if "rgb" in modalities:
            out["rgb"] = _rgb(cur, view, spec, augment)
        if "framediff" in modalities:
            prev = frames[np.searchsorted(frames_idx, before)].astype(np.float32)
            prev[idx == 0] = cur[idx == 0]
            diff = crop_resize((cur.astype(np.float32) - prev) / 255.0, view.box, spec.size)
            out["framediff"] = _channels_first(_flip(diff, view.flip))
    if "residual" in modalities:
        res = arrays["residual"].astype(np.float32) / 255.0
        out["residual"] = _channels_first(_flip(crop_resize(res, view.box, spec.size), view.flip))
    if "mv" in modalities:
        mv = arrays["mv"][..., : spec.mv_channels].astype(np.float32)
        if spec.mv_per_frame:
            past, future = (group.anchor_distances() if isinstance(group, (VideoArrays, ReadOnce)) else
                            anchor_distances(group["frame_type"][:]))
            mv /= np.stack([past[idx], past[idx], future[idx], future[idx]], -1)[:, None, None, : spec.mv_channels]
        mv = scale_vectors(crop_resize(mv, view.box, spec.size // 4, cell=4), view.box, spec.size, view.flip)
        out["mv"] = _channels_first(_flip(mv, view.flip))
    if "flow" in modalities:
        flow = arrays["flow"].astype(np.float32)
        flow = scale_vectors(crop_resize(flow, view.box, spec.size), view.box, spec.size, view.flip)
        out["flow"] = _channels_first(_flip(flow, view.flip))
    if keyframe is not None:
        out["keyframe"] = _rgb(arrays["keyframes"], view, spec, augment)[:, 0]
    return out


def read_keyframe(group: zarr.Group | VideoArrays, k: int, view: View, spec: ClipSpec, augment: bool = True
                  ) -> torch.Tensor:
    """The video's ``k``-th stored I-frame (3, S, S) under ``view``'s crop, flip and colour, normalised like rgb."""
    return _rgb(_read_arrays(group, {"keyframes": np.array([k])})["keyframes"], view, spec, augment)[:, 0]


Sampler = Callable[["ClipDataset", int, np.random.Generator], dict]


class ClipDataset(torch.utils.data.Dataset):
    """Clips of a store's videos as dicts of tensors (see the module docstring).

    ``views``: views per sample (2 for contrastive methods; each its own start, crop, flip, jitter).
    ``train=False``: ``clips_per_video`` evenly spaced clips x ``crops`` spatial crops per video (``crop_view``;
    1 = the centre square), one view each, no augmentation (for evaluation); item i is video
    i // (clips x crops), clip (i // crops) % clips, crop i % crops. ``split``: ``split_videos``.
    ``sampler``: a method's own ``(dataset, video, rng) -> sample``.
    Items are indexed by ``i`` or ``(i, epoch)``.
    ``concurrent_clips``: clips a process reads at once when the DataLoader asks for a batch (``__getitems__``,
    threads), so that the round trips of an object store overlap; default 1 for a folder, 8 for a URL.

    Handles (array metadata, the store's client) open lazily in each process that reads, so any DataLoader start
    method works, ``fork`` included (``mvtools.fetch``).

    ``on_bad_clip``: what a sample whose stored bytes are damaged (``DamagedData``) does: "fail" raises it;
    "skip" replaces the sample by another item drawn from (seed, epoch, index, attempt), so a resumed run
    replaces it the same way, and adds ``bad_clips`` (how many were replaced) and ``bad_clip_errors`` (one
    "key<TAB>message" line each) to every sample, for the loop to count and report.
    """

    def __init__(self, store_path, modalities: Sequence[str] = ("rgb",), clip_len: int = 16, stride: int = 2,
                 size: int = 112, split: str | None = None, *, views: int = 2, train: bool = True,
                 clips_per_video: int = 1, crops: int = 1, keys: Sequence[str] | None = None, seed: int = 0,
                 spec: ClipSpec | None = None, sampler: Sampler | None = None,
                 storage_options: Mapping[str, str] | None = None, concurrent_clips: int | None = None,
                 on_bad_clip: str = "fail"):
        if on_bad_clip not in BAD_CLIP_POLICIES:
            raise DataError(f"on_bad_clip must be one of {', '.join(BAD_CLIP_POLICIES)}, got {on_bad_clip!r}")
        self.on_bad_clip = on_bad_clip
        self.store_path = os.fspath(store_path)  # a folder or an object-store URL
        self.storage_options = dict(storage_options or {})
        self.modalities = tuple(modalities)
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown:
            raise DataError(f"unknown modalities {sorted(unknown)}; choose from {', '.join(MODALITIES)}")
        self.spec = spec or ClipSpec(clip_len=clip_len, stride=stride, size=size)
        self.views, self.train, self.seed, self.sampler = views, train, seed, sampler
        self.clips_per_video = 1 if train else clips_per_video
        self.crops = 1 if train else crops
        everything = list_videos(self.store_path, self.storage_options)
        self.classes = sorted({v.label for v in everything if v.label is not None})
        wanted = set(keys) if keys is not None else None
        self.videos = [v for v in split_videos(everything, split) if wanted is None or v.key in wanted]
        if not self.videos:
            what = f"split {split!r}" if split else "the requested keys" if keys is not None else "the store"
            raise DataError(f"{self.store_path}: no complete videos in {what}")
        self.concurrent_clips = concurrent_clips or (8 if is_remote(self.store_path) else 1)
        self._check_arrays()
        self._open: OrderedDict[int, VideoArrays] = OrderedDict()  # the last OPEN_VIDEOS videos read
        self._pid, self._lock, self._pool = -1, None, None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_open": OrderedDict(), "_pid": -1, "_lock": None, "_pool": None}

    def _check_arrays(self) -> None:
        reader = VideoReader(self.store_path, self.videos[0].key, self.storage_options)
        reader.open([a for m in self.modalities for a in ARRAYS[m]])
        for m in self.modalities:
            missing = [a for a in ARRAYS[m] if a not in reader]
            if missing:
                group = open_root(self.store_path, self.storage_options)["videos"][self.videos[0].key]
                have = sorted(name for name, _ in group.arrays())
                raise DataError(f"{self.store_path}: modality {m!r} needs array {missing[0]!r}, which the store "
                                f"does not hold (it has {', '.join(have)}); extract with "
                                f"{EXTRACT_FLAGS.get(missing[0], 'it')}")

    def _process(self) -> None:
        """Per-process state, made anew in each process that reads (a forked worker inherits none of it)."""
        if self._pid != os.getpid():
            self._open, self._lock, self._pool = OrderedDict(), threading.Lock(), None
            self._pid = os.getpid()

    def group(self, video: int) -> VideoArrays:
        """The video's arrays, opened in this process (handles are not shared across a fork)."""
        self._process()
        with self._lock:
            if video in self._open:
                self._open.move_to_end(video)
                return self._open[video]
        arrays = VideoArrays(VideoReader(self.store_path, self.videos[video].key, self.storage_options))
        with self._lock:
            self._open[video] = arrays
            if len(self._open) > OPEN_VIDEOS:
                self._open.popitem(last=False)
        return arrays

    def label(self, video: int) -> int:
        lab = self.videos[video].label
        return self.classes.index(lab) if lab is not None else -1

    def __len__(self) -> int:
        return len(self.videos) * self.clips_per_video * self.crops

    def read(self, video: int, view: View, modalities: Sequence[str] | None = None,
             spec: ClipSpec | None = None) -> dict[str, torch.Tensor]:
        return read_view(self.group(video), self.videos[video], view, modalities or self.modalities,
                         spec or self.spec, augment=self.train)

    def read_keyframe(self, video: int, k: int, view: View) -> torch.Tensor:
        return read_keyframe(self.group(video), k, view, self.spec, augment=self.train)

    def sample_views(self, video: int, rng: np.random.Generator) -> dict:
        """The default sampler: ``self.views`` independent random views of one video."""
        v = self.videos[video]
        return {"views": [self.read(video, random_view(rng, v, self.spec)) for _ in range(self.views)]}

    def __getitem__(self, item) -> dict:
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        if self.on_bad_clip == "fail":
            return self.sample(int(index), epoch)
        damaged: list[DamagedData] = []
        candidate = int(index)
        for attempt in range(1, REPLACEMENTS + 1):
            try:
                sample = self.sample(candidate, epoch)
            except DamagedData as e:
                damaged.append(e)
                candidate = int(np.random.default_rng([self.seed, epoch, int(index), attempt]).integers(len(self)))
                continue
            return {**sample, "bad_clips": len(damaged),
                    "bad_clip_errors": "\n".join(f"{e.video}\t{e}" for e in damaged)}
        raise damaged[-1]

    def sample(self, index: int, epoch: int = 0) -> dict:
        """Item ``index`` of ``epoch``, whatever ``on_bad_clip`` says."""
        video, view = divmod(int(index), self.clips_per_video * self.crops)
        clip, crop = divmod(view, self.crops)
        if self.train:
            rng = np.random.default_rng([self.seed, epoch, index])
            sample = (self.sampler or ClipDataset.sample_views)(self, video, rng)
        else:
            v = self.videos[video]
            room = max(v.num_frames - self.spec.span, 0)
            start = round(room * (clip + 0.5) / self.clips_per_video)
            sample = {"views": [self.read(video, crop_view(v, start, crop, self.crops))]}
        return {**sample, "label": self.label(video), "key": self.videos[video].key, "video": video}

    def __getitems__(self, items: Sequence) -> list[dict]:
        """The samples of a batch (what a DataLoader asks a worker for), ``concurrent_clips`` read at once."""
        self._process()
        if self.concurrent_clips <= 1 or len(items) <= 1:
            return [self[i] for i in items]
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self.concurrent_clips, "mvtools-clip")
        return list(self._pool.map(self.__getitem__, items))


class StepBatches(torch.utils.data.Sampler):
    """Batches of ``(index, epoch)`` for steps ``start, start+1, ...``: epoch e visits a permutation drawn
    from ``(seed, e)``; with ``world`` ranks each step's global batch is split and rank ``rank`` takes its part.

    The batch of a given step depends only on (seed, step), which is what makes resuming exact.
    """

    def __init__(self, size: int, batch_size: int, *, seed: int = 0, start: int = 0, steps: int | None = None,
                 rank: int = 0, world: int = 1):
        if size < batch_size * world:
            raise DataError(f"{size} clips cannot fill a global batch of {batch_size * world}; "
                            f"lower --batch-size")
        self.size, self.batch, self.seed, self.start, self.steps = size, batch_size, seed, start, steps
        self.rank, self.world = rank, world
        self.per_epoch = size // (batch_size * world)

    def __len__(self) -> int:
        return self.steps - self.start if self.steps is not None else 2**62

    def batch_of(self, step: int) -> list[tuple[int, int]]:
        epoch, b = divmod(step, self.per_epoch)
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.size)
        glob = perm[b * self.batch * self.world:(b + 1) * self.batch * self.world]
        return [(int(i), epoch) for i in glob[self.rank * self.batch:(self.rank + 1) * self.batch]]

    def __iter__(self):
        step = self.start
        while self.steps is None or step < self.steps:
            yield self.batch_of(step)
            step += 1

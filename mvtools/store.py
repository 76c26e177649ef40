"""The store: one zarr v3 group per dataset, one subgroup per video; the layout is data, not code.

    <store>/                      attrs: mvtools_schema, mvtools_version, settings, frame_type_codes
      videos/<key>/               attrs: source, label, fps, num_frames, width, height, codec, sha256,
                                         stored_width, stored_height, complete
        frames          (T, h, w, 3)      uint8    RGB, short side = settings.size     [mvtools.jpeg]
        frame_type      (T,)              uint8    0 I, 1 P, 2 B, 3 other
        pts             (T,)              float64  seconds
        mv              (T, h/4, w/4, 4)  float16  past dx, dy, future dx, dy (px, 1/8 px steps)
        mv_mask         (T, h/4, w/4, 2)  bool     cell carries a past / future vector
        residual        (T, h, w, 3)      int8     frame - motion-compensated prediction (clipped)
        mv_acc          (T, h/4, w/4, 2)  float16  motion accumulated back to the GOP's I-frame
        residual_acc    (T, h, w, 3)      int8     residual accumulated back to the GOP's I-frame
        keyframes       (K, h, w, 3)      uint8    the I-frames
        keyframe_index  (K,)              int32    their frame indices
        flow            (T, h, w, 2)      float16  optical flow t -> t+1 (dx, dy px); zeros at T-1 (opt-in)

``settings.flow`` names the flow method (absent: "none", no ``flow`` array); ``flow_preset`` (DIS) or
``raft_model`` / ``raft_weights`` (RAFT) say how it was computed.

Arrays are chunked along time (``settings.chunk_frames``) and sharded (``settings.shard_frames`` frames
per file). A writer owns one video group; ``complete`` is set last, so a reader never sees half a video.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from .codecs import JpegCodec
from .errors import StoreError
from .features import FRAME_TYPE_CODES
from .motion import frame_difference

SCHEMA = 1
MV_STEP = 8  # vectors are stored rounded to 1/MV_STEP px: exact in float16 up to 256 px


@dataclass(frozen=True)
class ArraySpec:
    """How one per-video array is laid out: trailing shape as a multiple of (h, w), dtype, codecs."""

    dtype: str
    cell: int  # 1: (h, w) pixels; 4: (h/4, w/4) cells; 0: no spatial axes
    channels: int | None
    jpeg_quality: int | None = None  # None: lossless zstd
    step: int = 0  # float16 values rounded to 1/step px (compresses the mantissa); 0: kept as computed


def array_specs(settings: Mapping) -> dict[str, ArraySpec]:
    """The per-video arrays a store with these settings holds (only the modalities it extracts)."""
    lossless = settings.get("lossless", False)
    fq = None if lossless else settings.get("frame_quality", 90)
    rq = None if lossless else settings.get("residual_quality", 95)
    res_dtype = "int16" if lossless else "int8"
    mods = set(settings["modalities"])
    specs = {"frame_type": ArraySpec("uint8", 0, None), "pts": ArraySpec("float64", 0, None)}
    if "frames" in mods:
        specs["frames"] = ArraySpec("uint8", 1, 3, fq)
    if "mv" in mods:
        specs["mv"] = ArraySpec("float16", 4, 4, step=MV_STEP)
        specs["mv_mask"] = ArraySpec("bool", 4, 2)
    if "residual" in mods:
        specs["residual"] = ArraySpec(res_dtype, 1, 3, rq)
    if "accumulated" in mods:
        specs["mv_acc"] = ArraySpec("float16", 4, 2, step=MV_STEP)
        specs["residual_acc"] = ArraySpec(res_dtype, 1, 3, rq)
    if "keyframes" in mods:
        specs["keyframes"] = ArraySpec("uint8", 1, 3, fq)
        specs["keyframe_index"] = ArraySpec("int32", 0, None)
    if flow_method(settings) != "none":
        specs["flow"] = ArraySpec("float16", 1, 2)
    return specs


def flow_method(settings: Mapping) -> str:
    """The store's optical-flow method; stores written before flow existed have none."""
    return settings.get("flow", "none")


def _tail(spec: ArraySpec, h: int, w: int) -> tuple[int, ...]:
    if spec.cell == 0:
        return ()
    return (-(-h // spec.cell), -(-w // spec.cell), spec.channels)


def to_stored(name: str, values: np.ndarray, spec: ArraySpec) -> np.ndarray:
    """Cast computed values to the stored dtype (rounding vectors, clipping residuals)."""
    if spec.step:
        return (np.rint(values * spec.step) / spec.step).astype(np.float16)
    if spec.dtype == "int8":
        return np.clip(values, -128, 127).astype(np.int8)
    return np.asarray(values).astype(spec.dtype)


class VideoWriter:
    """Streams one video's arrays into its group, a whole shard of frames at a time; ``commit`` marks it
    complete. Memory holds one shard of frames per array (plus the video's per-frame scalars)."""

    SCALARS = ("frame_type", "pts", "keyframe_index")  # tiny: kept whole and written once, at commit
    KEYFRAMES = ("keyframes", "keyframe_index")  # indexed by keyframe, not by frame

    def __init__(self, group: zarr.Group, settings: Mapping, height: int, width: int, expected_frames: int = 0):
        self.group = group
        self.specs = array_specs(settings)
        self.block = int(settings["shard_frames"])
        chunk = int(settings["chunk_frames"])
        self.arrays: dict[str, zarr.Array] = {}
        self.buffers: dict[str, np.ndarray] = {}  # one shard of frames per per-frame array
        for name, spec in self.specs.items():
            tail = _tail(spec, height, width)
            per_frame = name not in self.KEYFRAMES
            if spec.jpeg_quality:
                kw = {"serializer": JpegCodec(quality=spec.jpeg_quality), "compressors": None}
            else:
                kw = {"compressors": ZstdCodec(level=3)}
            # Sized up front from the container's frame count, so blocks are written without resizing.
            length = expected_frames if per_frame and name not in self.SCALARS else 0
            self.arrays[name] = group.create_array(
                name, shape=(length, *tail), dtype=spec.dtype, fill_value=0,
                chunks=(chunk if per_frame else 1, *tail), shards=(self.block if per_frame else 64, *tail), **kw,
            )
            if per_frame and name not in self.SCALARS:
                self.buffers[name] = np.zeros((self.block, *tail), spec.dtype)
        self.scalars: dict[str, list] = {name: [] for name in self.SCALARS if name in self.specs}
        self.keyframes: list[np.ndarray] = []
        self.num_frames = 0  # frames appended so far
        self.written = 0  # frames flushed to the per-frame arrays

    def append(self, values: Mapping[str, np.ndarray]) -> None:
        """Add one frame's arrays (per-frame shape, no time axis). Flushes each full shard."""
        row = self.num_frames - self.written
        for name, value in values.items():
            if name in self.buffers:
                self.buffers[name][row] = to_stored(name, value, self.specs[name])
            elif name in self.scalars:
                self.scalars[name].append(value)
        self.num_frames += 1
        if self.num_frames - self.written == self.block:
            self.flush()

    def append_keyframe(self, index: int, frame: np.ndarray) -> None:
        self.scalars["keyframe_index"].append(index)
        self.keyframes.append(frame)

    def flush(self) -> None:
        """Write the buffered frames of every per-frame array as one block (one shard when full)."""
        stop, rows = self.num_frames, self.num_frames - self.written
        if rows:
            for name, buffer in self.buffers.items():
                array = self.arrays[name]
                if array.shape[0] < stop:
                    array.resize((stop, *array.shape[1:]))
                array[self.written:stop] = buffer[:rows]
        if len(self.keyframes) >= 64:  # keyframes are few: written a shard at a time, the rest at commit
            self.arrays["keyframes"].append(np.stack(self.keyframes))
            self.keyframes.clear()
        self.written = stop

    def commit(self, attrs: Mapping) -> None:
        """Write what is left and the scalars, trim to the true length, then set ``complete = True`` last."""
        self.flush()
        if self.keyframes:
            self.arrays["keyframes"].append(np.stack(self.keyframes))
            self.keyframes.clear()
        for name, values in self.scalars.items():
            if values:
                self.arrays[name].append(to_stored(name, np.asarray(values), self.specs[name]))
        for name, array in self.arrays.items():
            if name not in self.KEYFRAMES and array.shape[0] != self.num_frames:
                array.resize((self.num_frames, *array.shape[1:]))
        self.group.attrs.update({**attrs, "num_frames": self.num_frames})
        self.group.attrs["complete"] = True


class Store:
    """A store opened for reading (and, with ``create``/``write``, for adding videos)."""

    def __init__(self, root: zarr.Group, path: str):
        self.root = root
        self.path = path
        schema = root.attrs.get("mvtools_schema")
        if schema is None:
            raise StoreError(path, "not an mvtools store (no mvtools_schema attribute)")
        if schema != SCHEMA:
            raise StoreError(path, f"store schema {schema}, this mvtools reads schema {SCHEMA}: re-extract")

    @property
    def attrs(self) -> Mapping:
        return self.root.attrs.asdict()

    @property
    def settings(self) -> dict:
        return dict(self.root.attrs["settings"])

    def _videos(self) -> zarr.Group:
        return self.root["videos"]

    def all_keys(self) -> list[str]:
        """Every video group, complete or not."""
        return sorted(name for name, _ in self._videos().groups())

    def keys(self) -> list[str]:
        """Keys of the complete videos, sorted."""
        return [k for k, g in sorted(self._videos().groups()) if g.attrs.get("complete")]

    def incomplete(self) -> list[str]:
        return [k for k, g in sorted(self._videos().groups()) if not g.attrs.get("complete")]

    def __contains__(self, key: str) -> bool:
        videos = self._videos()
        return key in videos and bool(videos[key].attrs.get("complete"))

    def __len__(self) -> int:
        return len(self.keys())

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __getitem__(self, key: str) -> VideoView:
        try:
            group = self._videos()[key]
        except KeyError:
            raise StoreError(self.path, f"no video {key!r} in the store") from None
        if not group.attrs.get("complete"):
            raise StoreError(self.path, f"video {key!r} is incomplete (an interrupted extraction): rerun it")
        return VideoView(key, group, self.path)

    # Writing ---------------------------------------------------------------------------------------
    def begin_video(self, key: str, height: int, width: int, attrs: Mapping, expected_frames: int = 0) -> VideoWriter:
        """Start (or restart) video ``key``; any earlier, incomplete copy is removed.

        expected_frames: the container's frame count, if it gives one (arrays are trimmed at commit)."""
        videos = self._videos()
        if key in videos:
            del videos[key]
        group = videos.create_group(key, attributes={**attrs, "complete": False})
        return VideoWriter(group, self.settings, height, width, expected_frames)

    def remove_video(self, key: str) -> None:
        videos = self._videos()
        if key in videos:
            del videos[key]


class VideoView:
    """One video of a store: its arrays as zarr arrays (``view.mv``, ``view["mv"]``) and its attrs."""

    def __init__(self, key: str, group: zarr.Group, store_path: str = ""):
        self.key = key
        self.group = group
        self.store_path = store_path
        self.attrs = group.attrs.asdict()

    def arrays(self) -> list[str]:
        return sorted(name for name, _ in self.group.arrays())

    def __getitem__(self, name: str) -> zarr.Array:
        try:
            return self.group[name]
        except KeyError:
            raise StoreError(self.store_path, f"video {self.key!r} has no array {name!r} "
                             f"(it has {', '.join(self.arrays())})") from None

    def __getattr__(self, name: str) -> zarr.Array:
        if name.startswith("_") or name in ("key", "group", "attrs", "store_path"):
            raise AttributeError(name)
        return self[name]

    def __len__(self) -> int:
        return int(self.attrs["num_frames"])

    def framediff(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """d_t = x_t - x_{t-1} (int16) for t in [start, stop), derived from ``frames``; d_0 = 0."""
        stop = len(self) if stop is None else stop
        if start == 0:
            return frame_difference(self["frames"][:stop])
        frames = self["frames"][start - 1:stop]
        return frame_difference(frames[1:], previous=frames[0])


def create_store(path: str | os.PathLike, settings: Mapping) -> Store:
    """Create a store, or open an existing one whose settings match (else ``StoreError``)."""
    path = os.fspath(path)
    if os.path.exists(os.path.join(path, "zarr.json")):
        store = open_store(path, mode="r+")
        if store.settings != dict(settings):
            raise StoreError(path, f"exists with other settings {store.settings}; use another -o path")
        return store
    if os.path.exists(path) and any(os.scandir(path)):
        raise StoreError(path, "exists and is not an mvtools store; refusing to write into it")
    from . import __version__

    root = zarr.open_group(path, mode="w", attributes={
        "mvtools_schema": SCHEMA, "mvtools_version": __version__, "settings": dict(settings),
        "frame_type_codes": FRAME_TYPE_CODES,
    })
    root.create_group("videos")
    return Store(root, path)


def open_store(path: str | os.PathLike, mode: str = "r") -> Store:
    """Open an existing store. ``mode`` "r" (default) or "r+"."""
    path = os.fspath(path)
    if not os.path.exists(os.path.join(path, "zarr.json")):
        raise StoreError(path, "no store here (missing zarr.json)")
    try:
        root = zarr.open_group(path, mode="r+" if mode != "r" else "r")
    except Exception as e:  # zarr raises several types for unreadable metadata
        raise StoreError(path, f"cannot open as zarr ({e})") from None
    return Store(root, path)


def disk_bytes(path: str | os.PathLike) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def info(path: str | os.PathLike) -> dict:
    """Summary of a store: videos (complete / incomplete), frames, bytes per array, settings."""
    store = open_store(path)
    per_array: dict[str, int] = {}
    frames = 0
    labels: dict[str, int] = {}
    base = Path(store.path) / "videos"
    keys = store.keys()
    source_bytes = 0
    for key in keys:
        view = store[key]
        source_bytes += view.attrs.get("source_bytes", 0)
        frames += len(view)
        label = view.attrs.get("label")
        if label is not None:
            labels[label] = labels.get(label, 0) + 1
        for name in view.arrays():
            per_array[name] = per_array.get(name, 0) + disk_bytes(base / key / name)
    return {
        "path": store.path,
        "schema": store.attrs["mvtools_schema"],
        "videos": len(keys),
        "incomplete": store.incomplete(),
        "failed": dict(store.attrs.get("failures", {})),
        "frames": frames,
        "bytes": disk_bytes(store.path),
        "bytes_per_array": dict(sorted(per_array.items())),
        "source_bytes": source_bytes,
        "labels": dict(sorted(labels.items())),
        "settings": store.settings,
    }

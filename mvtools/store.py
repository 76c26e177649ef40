"""The store: one zarr v3 group per dataset, one subgroup per video; the layout is data, not code.

    <store>/                      attrs: mvtools_schema, mvtools_version, settings, frame_type_codes, labels,
                                         failures, index_token
      index/<column>   (N,)       one row per complete video (``mvtools.index``): listing without a read per video
      videos/<key>/               attrs: source, label, fps, num_frames, width, height, codec, sha256,
                                         source_bytes, source_mtime_ns, stored_width, stored_height,
                                         bytes {array: bytes}, files, complete
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
per file). A writer owns one video group; ``complete`` is set last (with the sizes, in the group's one
final metadata write), so a reader never sees half a video. Writers mark the index stale first
(``invalidate_index``); the driver rewrites it when a run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import json
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from obstore.exceptions import BaseError as ObstoreError
from zarr.core.buffer import default_buffer_prototype
from zarr.core.group import GroupMetadata
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.core.sync import sync
from zarr.errors import ZarrUserWarning
from zarr.storage import ObjectStore

from . import index as index_mod
from .codecs import IMAGE_JPEG
from .errors import StoreError
from .features import FRAME_TYPE_CODES
from .index import BYTES_PREFIX, VideoIndex, row_from_attrs
from .motion import frame_difference
from .storage import SizeRecordingStore, describe, is_remote, local_path, zarr_store

SCHEMA = 2
# Residuals pass through zarr's own numcodecs.fixedscaleoffset (int8 -> uint8 for JPEG); zarr notes on every
# array it opens that numcodecs codecs are outside the v3 core spec. mvtools chose it knowingly.
warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3 specification",
                        category=ZarrUserWarning)
MV_STEP = 8  # vectors are stored rounded to 1/MV_STEP px: exact in float16 up to 256 px


@dataclass(frozen=True)
class ArraySpec:
    """How one per-video array is laid out: trailing shape as a multiple of (h, w), dtype, codecs, and the
    names of its dimensions (what xarray and other readers label the axes with)."""

    dtype: str
    cell: int  # 1: (h, w) pixels; 4: (h/4, w/4) cells; 0: no spatial axes
    channels: int | None
    jpeg_quality: int | None = None  # None: lossless zstd
    step: int = 0  # float16 values rounded to 1/step px (compresses the mantissa); 0: kept as computed
    channel_dim: str = ""  # name of the last axis (spatial arrays)
    time_dim: str = "time"

    @property
    def dims(self) -> tuple[str, ...]:
        if self.cell == 0:
            return (self.time_dim,)
        y, x = ("y", "x") if self.cell == 1 else ("cell_y", "cell_x")
        return (self.time_dim, y, x, self.channel_dim)


def array_specs(settings: Mapping) -> dict[str, ArraySpec]:
    """The per-video arrays a store with these settings holds (only the modalities it extracts)."""
    lossless = settings.get("lossless", False)
    fq = None if lossless else settings.get("frame_quality", 90)
    rq = None if lossless else settings.get("residual_quality", 95)
    res_dtype = "int16" if lossless else "int8"
    mods = set(settings["modalities"])
    specs = {"frame_type": ArraySpec("uint8", 0, None), "pts": ArraySpec("float64", 0, None)}
    if "frames" in mods:
        specs["frames"] = ArraySpec("uint8", 1, 3, fq, channel_dim="rgb")
    if "mv" in mods:
        specs["mv"] = ArraySpec("float16", 4, 4, step=MV_STEP, channel_dim="mv_channel")
        specs["mv_mask"] = ArraySpec("bool", 4, 2, channel_dim="mv_direction")
    if "residual" in mods:
        specs["residual"] = ArraySpec(res_dtype, 1, 3, rq, channel_dim="rgb")
    if "accumulated" in mods:
        specs["mv_acc"] = ArraySpec("float16", 4, 2, step=MV_STEP, channel_dim="xy")
        specs["residual_acc"] = ArraySpec(res_dtype, 1, 3, rq, channel_dim="rgb")
    if "keyframes" in mods:
        specs["keyframes"] = ArraySpec("uint8", 1, 3, fq, channel_dim="rgb", time_dim="keyframe")
        specs["keyframe_index"] = ArraySpec("int32", 0, None, time_dim="keyframe")
    if flow_method(settings) != "none":
        specs["flow"] = ArraySpec("float16", 1, 2, channel_dim="xy")
    return specs


def flow_method(settings: Mapping) -> str:
    """The store's optical-flow method; stores written before flow existed have none."""
    return settings.get("flow", "none")


def _tail(spec: ArraySpec, h: int, w: int) -> tuple[int, ...]:
    if spec.cell == 0:
        return ()
    return (-(-h // spec.cell), -(-w // spec.cell), spec.channels)


KEYFRAMES_PER_SHARD = 64


def array_metadata(name: str, spec: ArraySpec, length: int, tail: tuple[int, ...], chunk: int,
                   shard: int) -> tuple[ArrayV3Metadata, bytes]:
    """The zarr v3 metadata of one per-video array, and its zarr.json (as ``zarr.create_array`` would write
    them, tested). ``length`` frames (keyframes for keyframe arrays), ``tail`` the other axes.

    JPEG arrays (frames, residuals, keyframes): one frame per chunk (a clip decodes exactly its frames), in
    shards of ``shard`` frames, or of the whole array when it is shorter (a short video is written as whole
    shards, with nothing read first). Other arrays: ``chunk`` frames per chunk, zstd, shards of ``shard``.

    zarr validates a metadata document in ~0.5 ms; a store of one frame size needs that once per array
    shape, so the validated template is reused and only its length changes (a plain tuple, not validated)."""
    per_frame = name not in VideoWriter.KEYFRAMES
    if spec.jpeg_quality:
        inner, shard = 1, max(1, min(shard if per_frame else KEYFRAMES_PER_SHARD, length))
    else:
        inner, shard = (chunk, shard) if per_frame else (1, KEYFRAMES_PER_SHARD)
    template, document = _array_template(spec, tail, inner, shard)
    meta = copy.copy(template)
    object.__setattr__(meta, "shape", (length, *tail))
    # zarr spells a NaN fill value "NaN" (a string): a bare NaN here would be a bug, and is refused
    return meta, json.dumps({**document, "shape": [length, *tail]}, allow_nan=False).encode()


@functools.lru_cache(maxsize=1024)
def _array_template(spec: ArraySpec, tail: tuple[int, ...], chunk: int, shard: int) -> tuple[ArrayV3Metadata, dict]:
    if spec.jpeg_quality and spec.dtype == "int8":  # standard codecs only: int8 -> uint8 + 128, then JPEG
        inner = [{"name": "numcodecs.fixedscaleoffset",
                  "configuration": {"offset": -128, "scale": 1, "dtype": "|i1", "astype": "|u1"}},
                 {"name": IMAGE_JPEG, "configuration": {"level": spec.jpeg_quality}}]
    elif spec.jpeg_quality:
        inner = [{"name": IMAGE_JPEG, "configuration": {"level": spec.jpeg_quality}}]
    else:
        inner = [{"name": "bytes", "configuration": {"endian": "little"}},
                 {"name": "zstd", "configuration": {"level": 3, "checksum": False}}]
    # Every chunk ends with its CRC-32C (zarr's core codec; any v3 reader checks it): a damaged chunk fails to read
    # instead of decoding to wrong pixels, which a partly overwritten JPEG otherwise does with only a warning.
    inner.append({"name": "crc32c"})
    with warnings.catch_warnings():  # zarr notes that numcodecs codecs are outside the v3 core spec
        warnings.simplefilter("ignore", ZarrUserWarning)
        meta = ArrayV3Metadata.from_dict({
            "zarr_format": 3, "node_type": "array", "shape": [0, *tail], "data_type": spec.dtype,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [shard, *tail]}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": False if spec.dtype == "bool" else 0,
            "codecs": [{"name": "sharding_indexed", "configuration": {
                "chunk_shape": [chunk, *tail], "codecs": inner,
                "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}],
                "index_location": "end"}}],
            "attributes": {}, "storage_transformers": [], "dimension_names": list(spec.dims),
        })
    return meta, json.loads(json.dumps(meta.to_dict(), allow_nan=False))


def to_stored(name: str, values: np.ndarray, spec: ArraySpec) -> np.ndarray:
    """Cast computed values to the stored dtype (rounding vectors, clipping residuals)."""
    if spec.step:
        return (np.rint(values * spec.step) / spec.step).astype(np.float16)
    if spec.dtype == "int8":
        return np.clip(values, -128, 127).astype(np.int8)
    return np.asarray(values).astype(spec.dtype)


#: zarr settings for everything mvtools writes: metadata as compact JSON, which Python's C encoder writes
#: (zarr's default indent takes the pure-Python one: several ms per small video).
WRITE_CONFIG = {"json_indent": None}
#: Per-array runtime setting: no "is this chunk all fill value?" scan (a full read of every chunk) before
#: each write; a stored video's chunks almost never are, and skipping empty ones would save little.
ARRAY_CONFIG = {"write_empty_chunks": True}


async def _put_metadata(path, metadata) -> None:
    """Write a node's zarr.json (what zarr's create functions do after their existence checks)."""
    await asyncio.gather(*((path / key).set(buffer)
                           for key, buffer in metadata.to_buffer_dict(default_buffer_prototype()).items()))


def writing():
    """Context for zarr writes (``WRITE_CONFIG``)."""
    return zarr.config.set(WRITE_CONFIG)


async def _gather(*aws):
    return await asyncio.gather(*aws)


def run_concurrently(*aws):
    """Run zarr coroutines together on zarr's IO loop: one round trip instead of one per call."""
    with writing():
        return sync(_gather(*aws))


def sizes_by_array(prefix: str, sizes: Mapping[str, int]) -> dict[str, int]:
    """{object key: bytes} under a video group's ``prefix`` -> bytes per first path component (array name or
    ``zarr.json``), plus ``files``, the number of objects."""
    prefix = prefix.rstrip("/") + "/"
    out: dict[str, int] = {}
    for key, size in sizes.items():
        name = key[len(prefix):].split("/", 1)[0]
        out[name] = out.get(name, 0) + size
    out["files"] = len(sizes)
    return out


async def object_sizes(store, prefix: str) -> dict[str, int]:
    """{object key: bytes} of everything stored under ``prefix`` (a folder): one listing (obstore's carries the
    sizes; other stores add one size query per object)."""
    prefix = prefix.rstrip("/") + "/"
    if isinstance(store, SizeRecordingStore):
        store = store._store
    if isinstance(store, ObjectStore):
        import obstore

        metas = await obstore.list(store.store, prefix).collect_async()
        keys, sizes = [m["path"] for m in metas], [m["size"] for m in metas]
    else:
        keys = [k async for k in store.list_prefix(prefix)]
        sizes = await asyncio.gather(*(store.getsize(k) for k in keys))
    return dict(zip(keys, sizes))


async def stored_sizes(store, prefix: str) -> dict[str, int]:
    """``sizes_by_array`` of what is stored under ``prefix`` (``object_sizes``)."""
    return sizes_by_array(prefix, await object_sizes(store, prefix))


class VideoWriter:
    """Streams one video's arrays into its group, a whole shard of frames at a time; ``commit`` marks it
    complete. Memory holds one shard of frames per array (plus the video's per-frame scalars).

    Metadata dominates small videos, so each document is written once, with nothing read first: the
    group's at ``begin_video`` (after removing any earlier copy) and at commit (sizes and ``complete``, in
    one write); each array's together with its first block of data, at its length known then (exact at
    commit; for long videos, the container's frame count at the first full shard, corrected at commit
    only if it was wrong). The writes of a block go out concurrently.
    """

    SCALARS = ("frame_type", "pts", "keyframe_index")  # tiny: kept whole and written once, at commit
    KEYFRAMES = ("keyframes", "keyframe_index")  # indexed by keyframe, not by frame

    def __init__(self, videos: zarr.Group, key: str, settings: Mapping, height: int, width: int, attrs: Mapping,
                 expected_frames: int = 0, fresh: bool = False):
        self.key = key
        self.specs = array_specs(settings)
        self.block = int(settings["shard_frames"])
        self.chunk = int(settings["chunk_frames"])
        self.expected = expected_frames
        self.tails = {name: _tail(spec, height, width) for name, spec in self.specs.items()}
        path = videos._async_group.store_path / key
        metadata = GroupMetadata(attributes={**attrs, "complete": False})

        async def create() -> None:  # the store and ``videos`` exist: no parent to check or create
            if not fresh:
                await path.delete_dir()
            await _put_metadata(path, metadata)

        with writing():
            sync(create())
        self.group = zarr.Group(zarr.AsyncGroup(metadata, path))
        self.arrays: dict[str, zarr.AsyncArray] = {}  # created with their first write
        rows = min(self.block, expected_frames) or self.block  # a short video does not need a whole shard
        self.buffers: dict[str, np.ndarray] = {  # up to one shard of frames per per-frame array
            name: np.zeros((rows, *self.tails[name]), spec.dtype) for name, spec in self.specs.items()
            if name not in self.KEYFRAMES and name not in self.SCALARS}
        self.scalars: dict[str, list] = {name: [] for name in self.SCALARS if name in self.specs}
        self.keyframes: list[np.ndarray] = []
        self.keyframes_written = 0
        self.num_frames = 0  # frames appended so far
        self.written = 0  # frames flushed to the per-frame arrays

    def append(self, values: Mapping[str, np.ndarray]) -> None:
        """Add one frame's arrays (per-frame shape, no time axis). Flushes each full shard."""
        row = self.num_frames - self.written
        if self.buffers and row == len(next(iter(self.buffers.values()))):  # more frames than the container said
            self.buffers = {name: np.concatenate([b, np.zeros((self.block - len(b), *b.shape[1:]), b.dtype)])
                            for name, b in self.buffers.items()}
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

    async def _write(self, name: str, data: np.ndarray, start: int, length: int) -> None:
        """Write data at [start, start + len(data)) of array ``name``, creating it ``length`` long, or
        resizing it to that, first if needed."""
        array = self.arrays.get(name)
        writes = []
        if array is None:
            meta, document = array_metadata(name, self.specs[name], length, self.tails[name], self.chunk, self.block)
            array = zarr.AsyncArray(meta, self.group._async_group.store_path / name, config=ARRAY_CONFIG)
            writes.append((array.store_path / "zarr.json").set(default_buffer_prototype().buffer.from_bytes(document)))
            self.arrays[name] = array
        elif array.shape[0] != length:
            await array.resize((length, *array.shape[1:]))
        if len(data):  # the chunks do not need the metadata document: both go out together
            writes.append(array.setitem(slice(start, start + len(data)), data))
        await asyncio.gather(*writes)

    def _block_writes(self, length: int) -> list:
        rows = self.num_frames - self.written
        return [self._write(name, buffer[:rows], self.written, length) for name, buffer in self.buffers.items()]

    def _keyframe_write(self) -> list:
        if "keyframes" not in self.specs:
            return []
        frames = np.stack(self.keyframes) if self.keyframes else np.zeros((0, *self.tails["keyframes"]), np.uint8)
        start = self.keyframes_written
        self.keyframes_written += len(frames)
        self.keyframes.clear()
        return [self._write("keyframes", frames, start, self.keyframes_written)]

    def flush(self) -> None:
        """Write the buffered frames of every per-frame array as one block (one shard when full)."""
        if self.num_frames == self.written:
            return
        writes = self._block_writes(max(self.expected, self.num_frames))
        if len(self.keyframes) >= KEYFRAMES_PER_SHARD:  # keyframes are few: a shard at a time, the rest at commit
            writes += self._keyframe_write()
        run_concurrently(*writes)
        self.written = self.num_frames

    def commit(self, attrs: Mapping) -> dict:
        """Write what is left and the scalars at the true length, record the bytes each array takes, then
        write the attributes with ``complete = True`` (last, in one write). Returns the video's index row."""
        writes = self._block_writes(self.num_frames) + self._keyframe_write()
        for name, values in self.scalars.items():
            data = to_stored(name, np.asarray(values, dtype=self.specs[name].dtype), self.specs[name])
            writes.append(self._write(name, data, 0, len(data)))
        run_concurrently(*writes)
        self.written = self.num_frames
        store, prefix = self.group.store, self.group.path
        if isinstance(store, SizeRecordingStore):  # what this process wrote: no listing needed
            sizes = sizes_by_array(prefix, store.recorded(prefix))
            store.forget(prefix)
        else:
            sizes = sync(stored_sizes(store, prefix))
        final = {**attrs, "num_frames": self.num_frames, "files": sizes.pop("files"),
                 "bytes": {name: sizes.get(name, 0) for name in sorted(self.specs)}, "complete": True}
        with writing():
            self.group.update_attributes(final)  # one write: attrs.update would write once per key
        return row_from_attrs(self.key, self.group.attrs.asdict())


class Store:
    """A store opened for reading (and, with ``create``/``write``, for adding videos).

    Listing (``keys``, ``incomplete``, ``video_index``) reads the index (``mvtools.index``) when it is
    fresh, and otherwise scans every video group (one read each).
    """

    def __init__(self, root: zarr.Group, path: str, storage_options: Mapping[str, str] | None = None):
        self.root = root
        self.path = path  # the location: a folder or a URL
        self.storage_options = dict(storage_options or {})
        schema = root.attrs.get("mvtools_schema")
        if schema is None:
            raise StoreError(path, "not an mvtools store (no mvtools_schema attribute)")
        if schema == 1:
            raise StoreError(path, "a schema-1 store (mvtools 0.1): re-extract it, or run `mvtools migrate "
                                   f"{path} NEW_STORE` to convert it to schema {SCHEMA}")
        if schema != SCHEMA:
            raise StoreError(path, f"store schema {schema}, this mvtools reads schema {SCHEMA}: re-extract")
        self._videos_group: zarr.Group | None = None
        self._index: VideoIndex | None = None
        self.touched: set[str] = set()  # video groups this handle changed or removed

    @property
    def attrs(self) -> Mapping:
        return self.root.attrs.asdict()

    @property
    def settings(self) -> dict:
        return dict(self.root.attrs["settings"])

    def _videos(self) -> zarr.Group:
        if self._videos_group is None:
            if self.root.read_only:
                self._videos_group = self.root["videos"]
            else:  # a writer knows ``videos`` is a group (create_store made it): no read to find out
                self._videos_group = zarr.Group(zarr.AsyncGroup(GroupMetadata(), self.root.store_path / "videos"))
        return self._videos_group

    # Listing -----------------------------------------------------------------------------------------
    def index(self) -> VideoIndex | None:
        """The index, if fresh (else None: an interrupted run, or a store written before it existed)."""
        if self._index is None:
            self._index = index_mod.read(self.root)
        return self._index

    def scan(self) -> tuple[VideoIndex, list[str]]:
        """Read every video group: (the index rebuilt from their attributes, the incomplete keys).
        Groups written before sizes were recorded are measured by listing their files."""
        rows, incomplete, unsized = [], [], []
        for key, group in sorted(self._videos().groups()):
            attrs = group.attrs.asdict()
            if not attrs.get("complete"):
                incomplete.append(key)
                continue
            rows.append(row_from_attrs(key, attrs))
            if "bytes" not in attrs:
                unsized.append((len(rows) - 1, group.path))
        if unsized:
            sizes = run_concurrently(*(stored_sizes(self.root.store, path) for _, path in unsized))
            for (i, _), measured in zip(unsized, sizes):
                rows[i]["files"] = measured.pop("files")
                rows[i].update({BYTES_PREFIX + k: v for k, v in measured.items() if k != "zarr.json"})
        return VideoIndex.from_rows(rows), incomplete

    def video_index(self) -> VideoIndex:
        """The complete videos as an index: the stored one if fresh, else rebuilt by a scan."""
        return self.index() or self.scan()[0]

    def all_keys(self) -> list[str]:
        """Every video group, complete or not (always a scan)."""
        return sorted(name for name, _ in self._videos().groups())

    def keys(self) -> list[str]:
        """Keys of the complete videos, sorted."""
        return self.video_index().keys()

    def incomplete(self) -> list[str]:
        """Keys of incomplete video groups (a fresh index means there are none)."""
        return [] if self.index() is not None else self.scan()[1]

    def __contains__(self, key: str) -> bool:
        videos = self._videos()
        return key in videos and bool(videos[key].attrs.get("complete"))

    def __len__(self) -> int:
        return len(self.keys())

    def __bool__(self) -> bool:
        """Always true: truthiness must not fall back to ``__len__``, which scans every group while the index is
        stale (mid-run), an O(N) read per video once a task holds the store."""
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __getitem__(self, key: str) -> VideoView:
        try:
            group = self._videos()[key]
        except KeyError:
            raise StoreError(self.path, f"no video {key!r} in the store") from None
        if not group.attrs.get("complete"):
            raise StoreError(self.path, f"video {key!r} is incomplete (an interrupted extraction): rerun it")
        return VideoView(key, group, self.path, self.storage_options)

    # Writing ---------------------------------------------------------------------------------------
    def invalidate_index(self) -> None:
        """Mark the index stale before any video changes (a no-op when it already is)."""
        if self.root.attrs.get("index_token") is not None:
            with writing():
                self.root.update_attributes({"index_token": None})
        self._index = None

    def write_index(self, index: VideoIndex, **root_attrs) -> None:
        """Write the index, then the root attributes with its token (one write): the index is fresh."""
        with writing():
            token = index_mod.write(self.root, index)
            self.root.update_attributes({**root_attrs, "index_token": token})
        self._index = index

    def begin_video(self, key: str, height: int, width: int, attrs: Mapping, expected_frames: int = 0,
                    fresh: bool = False) -> VideoWriter:
        """Start (or restart) video ``key``; any earlier copy is removed.

        expected_frames: the container's frame count, if it gives one (arrays are trimmed at commit).
        fresh: the caller knows no group ``key`` exists, or only the partial one of an earlier attempt at the
            same video, which writes the same objects: nothing is listed or deleted first (one round trip,
            a LIST on object stores, less per video)."""
        self.invalidate_index()
        self.touched.add(key)
        return VideoWriter(self._videos(), key, self.settings, height, width, attrs, expected_frames, fresh)

    def update_video(self, key: str, attrs: Mapping) -> dict:
        """Change attributes of a complete video (one write); returns its index row."""
        self.invalidate_index()
        self.touched.add(key)
        group = self._videos()[key]
        with writing():
            group.update_attributes(dict(attrs))
        return row_from_attrs(key, group.attrs.asdict())

    def remove_video(self, key: str) -> None:
        self.invalidate_index()
        self.touched.add(key)
        videos = self._videos()
        if key in videos:
            del videos[key]


class VideoView:
    """One video of a store: its arrays as zarr arrays (``view.mv``, ``view["mv"]``) and its attrs; ``read``
    fetches chosen frames of several arrays with few requests (``mvtools.reader``), in whatever process it runs."""

    def __init__(self, key: str, group: zarr.Group, store_path: str = "",
                 storage_options: Mapping[str, str] | None = None):
        self.key = key
        self.group = group
        self.store_path = store_path
        self.storage_options = dict(storage_options or {})
        self.attrs = group.attrs.asdict()
        self._reader = None

    def arrays(self) -> list[str]:
        return sorted(name for name, _ in self.group.arrays())

    def __getitem__(self, name: str) -> zarr.Array:
        try:
            return self.group[name]
        except KeyError:
            raise StoreError(self.store_path, f"video {self.key!r} has no array {name!r} "
                             f"(it has {', '.join(self.arrays())})") from None

    def __getattr__(self, name: str) -> zarr.Array:
        if name.startswith("_") or name in ("key", "group", "attrs", "store_path", "storage_options"):
            raise AttributeError(name)
        return self[name]

    def __len__(self) -> int:
        return int(self.attrs["num_frames"])

    def read(self, name: str, frames) -> np.ndarray:
        """``self[name][frames]`` for frame indices ``frames`` (any order, repeats allowed), fetching only their
        chunks: one ranged request per shard, shard indexes cached; ``DamagedData`` for bytes that cannot be
        what was written."""
        return self.read_many({name: frames})[name]

    def read_many(self, wanted: Mapping[str, object]) -> dict[str, np.ndarray]:
        """``read`` of several arrays at once, their requests concurrent."""
        from .reader import VideoReader

        if self._reader is None:
            self._reader = VideoReader(self.store_path, self.key, self.storage_options)
        missing = [name for name in wanted if name not in self._reader]
        if missing:
            self[missing[0]]  # the error naming the arrays the video has
        return self._reader.read(wanted)

    def framediff(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """d_t = x_t - x_{t-1} (int16) for t in [start, stop), derived from ``frames``; d_0 = 0."""
        stop = len(self) if stop is None else stop
        if start == 0:
            return frame_difference(self.read("frames", np.arange(stop)))
        frames = self.read("frames", np.arange(start - 1, stop))
        return frame_difference(frames[1:], previous=frames[0])


def create_store(location: str | os.PathLike, settings: Mapping,
                 storage_options: Mapping[str, str] | None = None) -> Store:
    """Create a store (a local folder or an object-store URL, see ``mvtools.storage``), or open an existing
    one whose settings match (else ``StoreError``). An unreachable or forbidden location is a
    ``StoreError`` with the reason, before anything is written."""
    location = _location(location)
    with storage_errors(location):
        probe = zarr_store(location, storage_options=storage_options, first_contact=True)
        exists = sync(probe.exists("zarr.json"))
        store = zarr_store(location, read_only=False, storage_options=storage_options)
        if exists:
            opened = open_store(location, mode="r+", storage_options=storage_options)
            if opened.settings != dict(settings):
                raise StoreError(location, f"exists with other settings {opened.settings}; use another -o path")
            return opened
        if not sync(probe.is_empty("")):
            raise StoreError(location, "exists and is not an mvtools store; refusing to write into it")
        from . import __version__

        with writing():
            root = zarr.open_group(store, mode="w", zarr_format=3, attributes={
                "mvtools_schema": SCHEMA, "mvtools_version": __version__, "settings": dict(settings),
                "frame_type_codes": FRAME_TYPE_CODES,
            })
            root.create_group("videos")
    return Store(root, location, storage_options)


def open_store(location: str | os.PathLike, mode: str = "r", storage_options: Mapping[str, str] | None = None) -> Store:
    """Open an existing store (a local folder or an object-store URL). ``mode`` "r" (default) or "r+"."""
    location = _location(location)
    with storage_errors(location):
        if not sync(zarr_store(location, storage_options=storage_options, first_contact=True).exists("zarr.json")):
            raise StoreError(location, "no store here (missing zarr.json)")
        store = zarr_store(location, read_only=mode == "r", storage_options=storage_options)
        try:
            root = zarr.open_group(store, mode="r" if mode == "r" else "r+", zarr_format=3)
        except (ValueError, KeyError, TypeError) as e:  # zarr's errors for unreadable metadata
            raise StoreError(location, f"cannot open as zarr ({e})") from None
    return Store(root, location, storage_options)


def _location(location: str | os.PathLike) -> str:
    location = os.fspath(location)
    return location if is_remote(location) else os.path.abspath(local_path(location))


@contextlib.contextmanager
def storage_errors(location: str):
    """Turn an object store's errors (unreachable endpoint, missing bucket, refused credentials) into a
    ``StoreError`` naming the location and the cause in one line."""
    try:
        yield
    except StoreError:
        raise
    except (OSError, ObstoreError) as e:
        raise StoreError(location, describe(e)) from None


def disk_bytes(path: str | os.PathLike) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def video_rows(index: VideoIndex) -> list[dict]:
    """One {key, label, split, frames} per video of ``index`` (None for no label or split), in key order."""
    columns = [index.columns[name].tolist() for name in ("key", "label", "split", "num_frames")]
    return [{"key": str(k), "label": label or None, "split": split or None, "frames": int(frames)}
            for k, label, split, frames in zip(*columns)]


def info(path: str | os.PathLike, rebuild_index: bool = False,
         storage_options: Mapping[str, str] | None = None, videos: bool = False) -> dict:
    """Summary of a store from its index (no array or video group is read when the index is fresh):
    videos, frames, bytes per array (as recorded at commit), files, labels, settings, failures by source; with
    ``videos``, also ``video_list``: every complete video's key, label, split and frames (``video_rows``).

    A stale index is rebuilt in memory by scanning the video groups (``index: "scanned"``); with
    ``rebuild_index`` it is also written back (``index: "rebuilt"``)."""
    store = open_store(path, mode="r+" if rebuild_index else "r", storage_options=storage_options)
    index = None if rebuild_index else store.index()
    state, incomplete = "fresh", []
    if index is None:
        index, incomplete = store.scan()
        state = "scanned"
        if rebuild_index:
            if incomplete:
                raise StoreError(store.path, f"{len(incomplete)} incomplete videos (an interrupted run): rerun "
                                             "the extraction, which completes them and writes the index")
            store.write_index(index)
            state = "rebuilt"
    per_array = index.bytes_per_array()
    videos = len(index)
    files = index.total("files")
    return {
        "path": store.path,
        "schema": store.attrs["mvtools_schema"],
        "index": state,
        "videos": videos,
        "incomplete": incomplete,
        "failed": dict(store.attrs.get("failures", {})),
        "frames": index.total("num_frames"),
        "bytes": sum(per_array.values()),
        "bytes_per_array": per_array,
        "files": files,
        "files_per_video": files / videos if videos else 0.0,
        "source_bytes": index.total("source_bytes"),
        "labels": index.labels(),
        "settings": store.settings,
        **({"video_list": video_rows(index)} if videos else {}),
    }

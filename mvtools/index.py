"""The store's video index: one row per complete video, as plain columns under ``index/``.

Listing a store by opening every ``videos/<key>/zarr.json`` costs one read per video (minutes for
Kinetics on object storage); the index answers ``keys``, ``plan``, ``info`` and the trainer's listing in
one read per column. It is derived data, rebuilt from the videos' own attributes (``row_from_attrs``):

    index/<column>   (N,)   one 1-D array per column, rows sorted by ``key``, dimension ``video``
    index attrs:     token = digest of the columns
    root attrs:      index_token = the same digest, or null while a writer may be changing videos

Fresh iff the two tokens are equal. A writer sets the root token to null before it touches any video
group, and the driver writes the columns, then the group's token, then the root token (``finish``); a crash
anywhere in between leaves them unequal, so a stale index is detected, never trusted (readers fall back
to scanning the groups, and the next run or ``mvtools info --rebuild-index`` rewrites it).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
import zarr
from zarr.codecs import ZstdCodec
from zarr.core.sync import sync

INDEX_GROUP = "index"
ROWS_PER_CHUNK = 1 << 20

#: column -> dtype; strings use "" for "none" (labels, splits). ``bytes_<array>`` columns are added per array.
COLUMNS: dict[str, str] = {
    "key": "str", "source": "str", "label": "str", "split": "str", "sha256": "str",
    "source_bytes": "int64", "source_mtime_ns": "int64", "num_frames": "int64",
    "stored_height": "int32", "stored_width": "int32", "fps": "float64", "codec": "str", "transcoded": "bool",
    "files": "int32",
}
BYTES_PREFIX = "bytes_"


def _numpy_dtype(dtype: str) -> np.dtype:
    # Strings as Python objects: numpy 2.4's StringDType fails to compare long strings in searchsorted.
    return np.dtype(object) if dtype == "str" else np.dtype(dtype)


def row_from_attrs(key: str, attrs: Mapping) -> dict:
    """The index row of a complete video, from its group attributes (missing values: "", 0 or -1)."""
    row = {
        "key": key, "source": attrs.get("source") or "", "label": attrs.get("label") or "",
        "split": attrs.get("split") or "", "sha256": attrs.get("sha256") or "",
        "source_bytes": int(attrs.get("source_bytes") or 0),
        "source_mtime_ns": int(attrs.get("source_mtime_ns", -1)),
        "num_frames": int(attrs.get("num_frames") or 0),
        "stored_height": int(attrs.get("stored_height") or 0), "stored_width": int(attrs.get("stored_width") or 0),
        "fps": float(attrs.get("fps") or 0.0), "codec": attrs.get("codec") or "",
        "transcoded": bool(attrs.get("transcoded")), "files": int(attrs.get("files") or 0),
    }
    for name, size in (attrs.get("bytes") or {}).items():
        row[BYTES_PREFIX + name] = int(size)
    return row


class VideoIndex:
    """The index as numpy columns, sorted by key. Immutable: ``merged`` returns a new one."""

    def __init__(self, columns: Mapping[str, np.ndarray]):
        self.columns = dict(columns)
        self.keys_array = self.columns["key"]

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping]) -> VideoIndex:
        rows = sorted(rows, key=lambda r: r["key"])
        names = dict(COLUMNS)
        names.update({k: "int64" for k in sorted({k for r in rows for k in r if k.startswith(BYTES_PREFIX)})})
        columns = {}
        for name, dtype in names.items():
            default = "" if dtype == "str" else (-1 if name == "source_mtime_ns" else 0)
            columns[name] = np.array([r.get(name, default) for r in rows], dtype=_numpy_dtype(dtype))
        return cls(columns)

    def __len__(self) -> int:
        return len(self.keys_array)

    def keys(self) -> list[str]:
        return [str(k) for k in self.keys_array]

    def find(self, key: str) -> int | None:
        """Row number of ``key`` (binary search), or None."""
        i = int(np.searchsorted(self.keys_array, key))
        return i if i < len(self) and self.keys_array[i] == key else None

    def row(self, i: int) -> dict:
        return {name: column[i] if column.dtype.kind == "O" else column[i].item()
                for name, column in self.columns.items()}

    def rows(self) -> Iterator[dict]:
        return (self.row(i) for i in range(len(self)))

    @classmethod
    def concat(cls, parts: Iterable[VideoIndex]) -> VideoIndex:
        """The rows of several indexes with distinct keys, as one (columns a part lacks get defaults)."""
        parts = [p for p in parts if len(p)] or list(parts)[:1] or [cls.from_rows([])]
        names = [*COLUMNS, *sorted({n for p in parts for n in p.columns if n.startswith(BYTES_PREFIX)})]
        columns = {}
        for name in names:
            dtype = next((p.columns[name].dtype for p in parts if name in p.columns), np.dtype("int64"))
            columns[name] = np.concatenate([
                p.columns[name].astype(dtype) if name in p.columns else np.zeros(len(p), dtype) for p in parts])
        order = np.argsort(columns["key"], kind="stable")
        return cls({name: column[order] for name, column in columns.items()})

    def without(self, keys: Iterable[str]) -> VideoIndex:
        found = [i for i in (self.find(k) for k in set(keys)) if i is not None]
        if not found:
            return self
        mask = np.ones(len(self), bool)
        mask[found] = False
        return VideoIndex({name: column[mask] for name, column in self.columns.items()})

    def merged(self, new: VideoIndex, removed: Iterable[str] = ()) -> VideoIndex:
        """This index with the rows of ``new`` (replacing rows of the same key) and without ``removed``."""
        return VideoIndex.concat([self.without([*removed, *new.keys()]), new])

    def labels(self) -> dict[str, int]:
        """Videos per label (unlabelled videos are not counted)."""
        names, counts = np.unique(self.columns["label"], return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts) if n != ""}

    def bytes_per_array(self) -> dict[str, int]:
        return {name[len(BYTES_PREFIX):]: int(column.sum()) for name, column in sorted(self.columns.items())
                if name.startswith(BYTES_PREFIX)}

    def total(self, column: str) -> int:
        return int(self.columns[column].sum())

    def token(self) -> str:
        """A digest of every column (names, dtypes and values): equal tables, equal tokens."""
        h = hashlib.sha256()
        for name in sorted(self.columns):
            column = self.columns[name]
            h.update(name.encode() + b"\0")
            if column.dtype.kind == "O":
                h.update("\0".join(column.tolist()).encode())
            else:
                h.update(np.ascontiguousarray(column).tobytes())
        return h.hexdigest()[:32]


class RowBuffer:
    """Index rows arriving one at a time (a driver collecting its tasks' outcomes), kept as numpy columns
    every ``chunk`` rows so that memory stays near the columns' size, not Python dicts'."""

    def __init__(self, chunk: int = 4096):
        self.chunk = chunk
        self.pending: list[Mapping] = []
        self.parts: list[VideoIndex] = []

    def append(self, row: Mapping) -> None:
        self.pending.append(row)
        if len(self.pending) >= self.chunk:
            self.parts.append(VideoIndex.from_rows(self.pending))
            self.pending = []

    def __len__(self) -> int:
        return sum(map(len, self.parts)) + len(self.pending)

    def index(self) -> VideoIndex:
        return VideoIndex.concat([*self.parts, VideoIndex.from_rows(self.pending)])


def read(root: zarr.Group) -> VideoIndex | None:
    """The store's index if it is fresh (its token equals the root's ``index_token``), else None."""
    token = root.attrs.get("index_token")
    if not token:
        return None
    try:
        group = root[INDEX_GROUP]
    except KeyError:
        return None
    if not isinstance(group, zarr.Group) or group.attrs.get("token") != token:
        return None
    arrays = dict(group.arrays())

    async def load():
        return await asyncio.gather(*(a._async_array.getitem(slice(None)) for a in arrays.values()))

    columns = {name: c.astype(object) if c.dtype.kind in "TUO" else c for name, c in zip(arrays, sync(load()))}
    index = VideoIndex(columns)
    return index if "key" in index.columns else None


def write(root: zarr.Group, index: VideoIndex) -> str:
    """Replace the columns under ``index/`` and set the group's token last; returns the token (the caller
    then sets the root's ``index_token`` to it, which makes the index fresh)."""
    token = index.token()
    group = root.create_group(INDEX_GROUP, overwrite=True, attributes={"token": None})
    rows = max(1, min(len(index), ROWS_PER_CHUNK))

    async def column(name: str, values: np.ndarray) -> None:
        array = await group._async_group.create_array(  # zarr's async API: all columns in one round trip
            name, shape=values.shape, dtype=str if values.dtype.kind == "O" else values.dtype, chunks=(rows,),
            compressors=ZstdCodec(level=3), dimension_names=("video",))
        if len(values):
            await array.setitem(slice(None), values)

    async def columns():
        await asyncio.gather(*(column(name, values) for name, values in index.columns.items()))

    sync(columns())
    group.update_attributes({"token": token})  # one write (attrs.update writes once per key)
    return token

"""A video's arrays read a few frames at a time with few requests: what the trainer, ``mvtools show`` and
``VideoView.read`` use.

One ``read`` of several arrays costs at most three concurrent rounds of requests: the arrays' ``zarr.json``
(once per video and process), the shard indexes (once per shard and process, kept in a bounded LRU), then one
ranged GET per shard and array (chunks merged, ``mvtools.shards``), all arrays at once. Chunks decode through
the array's own inner codec chain as its metadata describes. Arrays that are not sharded along time (stores
written by plain zarr) are read by zarr itself.

Bytes that cannot be what mvtools wrote raise ``DamagedData`` naming the video, array and frames: a shard
object missing from a complete video, an index that is short, fails its checksum or points past the shard, a
chunk that does not decode, and a chunk marked never-written in arrays mvtools always writes whole
(``NEVER_EMPTY``). zarr itself would return the fill value (zeros) for the first and the last.

Handles open lazily in each process; nothing here holds a connection across a ``fork`` (``mvtools.fetch``).
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import DamagedData, StoreError
from .fetch import Get, Source, source_for
from .shards import (
    EMPTY,
    ShardIndexError,
    ShardLayout,
    check_entries,
    chunks_for,
    layout_of,
    parse_index,
    plan_ranges,
    split_ranges,
)

#: Arrays whose every chunk mvtools writes and whose chunks are never all zeros in practice: a chunk marked
#: never-written is damage. (Residuals are zero on I-frames; writers before 2026-12-02 left such chunks out.)
NEVER_EMPTY = frozenset({"frames", "keyframes", "mv", "mv_acc"})
INDEX_CACHE_BYTES = 32 << 20  # parsed shard indexes kept per process (~2 kB per 128-frame shard)


class IndexCache:
    """Parsed shard indexes by (source, object), least recently used dropped beyond ``max_bytes``."""

    def __init__(self, max_bytes: int = INDEX_CACHE_BYTES):
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._items: OrderedDict[tuple[str, str], tuple[np.ndarray, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: tuple[str, str]) -> tuple[np.ndarray, int] | None:
        """(index, bytes of chunk data in the shard), or None."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple[str, str], entry: tuple[np.ndarray, int]) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = entry
            self.nbytes += entry[0].nbytes
            while self.nbytes > self.max_bytes and self._items:
                self.nbytes -= self._items.popitem(last=False)[1][0].nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.nbytes = 0


SHARD_INDEXES = IndexCache()
# A reading thread may hold the lock when the process forks; the child has no such thread.
os.register_at_fork(after_in_child=lambda: setattr(SHARD_INDEXES, "_lock", threading.Lock()))


@dataclass
class ArrayInfo:
    """An array's metadata as this reader uses it."""

    name: str
    metadata: object  # zarr ArrayV3Metadata
    layout: ShardLayout | None  # None: read through zarr

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.metadata.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.metadata.data_type.to_native_dtype()


class VideoReader:
    """The arrays of group ``prefix`` (``videos/<key>``) of the store at ``location``."""

    def __init__(self, location: str, key: str, storage_options: Mapping[str, str] | None = None,
                 source: Source | None = None, indexes: IndexCache | None = None):
        self.location, self.key = location, key
        self.storage_options = dict(storage_options or {})
        self.prefix = f"videos/{key}"
        self.source = source or source_for(location, self.storage_options)
        self.indexes = SHARD_INDEXES if indexes is None else indexes
        self._arrays: dict[str, ArrayInfo | None] = {}  # None: no such array
        self._zarr: dict[str, object] = {}
        self._lock = threading.Lock()

    # Metadata ----------------------------------------------------------------------------------------------
    def info(self, name: str) -> ArrayInfo:
        self.open([name])
        info = self._arrays[name]
        if info is None:
            raise StoreError(self.location, f"video {self.key!r} has no array {name!r}")
        return info

    def __contains__(self, name: str) -> bool:
        self.open([name])
        return self._arrays[name] is not None

    def open(self, names: Sequence[str]) -> None:
        """Fetch the metadata of arrays ``names`` not yet known (one concurrent round)."""
        missing = [n for n in dict.fromkeys(names) if n not in self._arrays]
        if missing:
            _sync(self._open_async(missing))

    async def _open_async(self, names: Sequence[str]) -> None:
        from zarr.core.metadata.v3 import ArrayV3Metadata

        names = [n for n in dict.fromkeys(names) if n not in self._arrays]
        if not names:
            return
        answers = await self.source.fetch([Get(f"{self.prefix}/{n}/zarr.json") for n in names])
        for name, answer in zip(names, answers):
            if isinstance(answer, FileNotFoundError):
                self._arrays[name] = None
                continue
            try:
                metadata = ArrayV3Metadata.from_dict(json.loads(bytes(answer.data)))
            except (ValueError, TypeError, KeyError) as e:
                raise DamagedData(self.location, self.key, name, None, f"unreadable zarr.json ({e})") from None
            self._arrays[name] = ArrayInfo(name, metadata, layout_of(metadata))

    # Reading ---------------------------------------------------------------------------------------------------
    def read(self, wanted: Mapping[str, Sequence[int] | np.ndarray]) -> dict[str, np.ndarray]:
        """{array: its frames ``idx``} for every (array, idx) of ``wanted``, fetched together. ``idx`` are frame
        (first-axis) indices in any order, repeats allowed; the result is ``array[idx]``."""
        wanted = {name: np.asarray(idx, dtype=np.int64).reshape(-1) for name, idx in wanted.items()}
        self.open(list(wanted))
        for name, idx in wanted.items():
            n = self.info(name).shape[0]
            if idx.size and (idx.min() < -n or idx.max() >= n):
                raise IndexError(f"{self.location}: frames {idx.min()}..{idx.max()} of array {name!r} of video "
                                 f"{self.key!r}, which has {n}")
            wanted[name] = idx % n if n else idx
        sharded = {n: i for n, i in wanted.items() if self._arrays[n].layout is not None}
        out = _sync(self._read_sharded(sharded)) if sharded else {}
        for name in wanted.keys() - sharded.keys():
            out[name] = self._read_zarr(name, wanted[name])
        return {name: out[name] for name in wanted}

    async def _read_sharded(self, wanted: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        plans = {}  # name -> (info, distinct frames, {shard: [local chunks]})
        for name, idx in wanted.items():
            info = self._arrays[name]
            distinct = np.unique(idx)
            by_shard: dict[int, list[int]] = {}
            for c in chunks_for(info.layout, distinct).tolist():
                by_shard.setdefault(c // info.layout.chunks_per_shard, []).append(c % info.layout.chunks_per_shard)
            plans[name] = (info, distinct, by_shard)
        indexes = await self._indexes([(name, s) for name, (_, _, shards) in plans.items() for s in shards])
        gets, where = [], []
        for name, (info, _, shards) in plans.items():
            for s, local in shards.items():
                index, data_nbytes = indexes[name, s]
                problem = check_entries(index, local, data_nbytes)
                if problem is not None and (name in NEVER_EMPTY or "never written" not in problem):
                    raise self._damage(info, s, local, problem)
                present = [c for c in local if index[c, 0] != EMPTY]  # never written: the fill value
                for span in plan_ranges(index, present, self.source.gap):
                    gets.append(Get(self._shard_path(info, s), span.start, span.stop))
                    where.append((name, s, span))
        answers = await self.source.fetch(gets)
        pieces: dict[str, dict[int, memoryview]] = {name: {} for name in plans}
        for (name, s, span), answer in zip(where, answers):
            info = plans[name][0]
            if isinstance(answer, FileNotFoundError):
                raise self._damage(info, s, span.chunks, "the shard object is missing")
            try:
                chunks = split_ranges(indexes[name, s][0], [span], [answer.data])
            except ShardIndexError as e:
                raise self._damage(info, s, span.chunks, str(e)) from None
            per_shard = info.layout.chunks_per_shard
            pieces[name].update({s * per_shard + c: b for c, b in chunks.items()})
        out = {}
        for name, (info, distinct, _) in plans.items():
            values = await self._decode(info, distinct, pieces[name])
            out[name] = values[np.searchsorted(distinct, wanted[name])]
        return out

    async def _indexes(self, shards: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[np.ndarray, int]]:
        """(index, data bytes) of each (array, shard): cached, else its object's last bytes, all at once."""
        found, gets, asked = {}, [], []
        for name, s in shards:
            info = self._arrays[name]
            cached = self.indexes.get((self.source.location, self._shard_path(info, s)))
            if cached is not None:
                found[name, s] = cached
            else:
                gets.append(Get(self._shard_path(info, s), suffix=info.layout.index_nbytes))
                asked.append((name, s))
        for (name, s), answer in zip(asked, await self.source.fetch(gets)):
            info = self._arrays[name]
            if isinstance(answer, FileNotFoundError):
                raise self._damage(info, s, None, "the shard object is missing")
            try:
                entry = (parse_index(answer.data, info.layout), int(answer.size) - info.layout.index_nbytes)
            except ShardIndexError as e:
                raise self._damage(info, s, None, str(e)) from None
            self.indexes.put((self.source.location, self._shard_path(info, s)), entry)
            found[name, s] = entry
        return found

    async def _decode(self, info: ArrayInfo, distinct: np.ndarray, pieces: Mapping[int, memoryview]) -> np.ndarray:
        """The frames ``distinct`` (sorted) of ``info``'s array from its chunks' encoded bytes (a chunk not in
        ``pieces`` is the fill value), through the array's inner codec chain."""
        layout, shape = info.layout, info.shape
        out = np.empty((len(distinct), *shape[1:]), info.dtype)
        chunks = chunks_for(layout, distinct).tolist()
        present = [c for c in chunks if c in pieces]
        decoded = dict(zip(present, await self._decode_chunks(info, present, pieces)))
        for c in chunks:
            a, b = layout.chunk_frames(c)
            rows = np.flatnonzero((distinct >= a) & (distinct < b))
            if c in decoded:
                out[rows] = decoded[c][distinct[rows] - a]
            else:
                out[rows] = info.metadata.fill_value
        return out

    async def _decode_chunks(self, info: ArrayInfo, chunks: list[int], pieces: Mapping[int, memoryview]) -> list:
        from zarr.core.array_spec import ArrayConfig, ArraySpec
        from zarr.core.buffer import default_buffer_prototype
        from zarr.registry import get_pipeline_class

        if not chunks:
            return []
        prototype = default_buffer_prototype()
        sharding = info.metadata.codecs[0]
        pipeline = get_pipeline_class().from_codecs(sharding.codecs)
        spec = ArraySpec(shape=tuple(sharding.chunk_shape), dtype=info.metadata.data_type,
                         fill_value=info.metadata.fill_value, config=ArrayConfig.from_dict({}), prototype=prototype)
        expected = tuple(sharding.chunk_shape)
        try:
            arrays = [None if a is None else a.as_numpy_array() for a in await pipeline.decode(
                [(prototype.buffer.from_bytes(bytes(pieces[c])), spec) for c in chunks])]
            if all(a is not None and a.shape == expected for a in arrays):
                return arrays
        except Exception:  # noqa: BLE001 - a codec's error on bad bytes: find the chunk below
            pass
        for c in chunks:  # one at a time, to name the chunk that does not decode
            try:
                (array,) = await pipeline.decode([(prototype.buffer.from_bytes(bytes(pieces[c])), spec)])
                ok = array is not None and array.as_numpy_array().shape == expected
                reason = f"decodes to shape {None if array is None else array.shape}, not {expected}"
            except Exception as e:  # noqa: BLE001
                ok, reason = False, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            if not ok:
                a, b = info.layout.chunk_frames(c)
                raise DamagedData(self.location, self.key, info.name, (a, b), f"the chunk does not decode ({reason})")
        raise DamagedData(self.location, self.key, info.name, None, "a chunk does not decode")

    def _read_zarr(self, name: str, idx: np.ndarray) -> np.ndarray:
        """``array[idx]`` through zarr, reading the span of ``idx`` (arrays not sharded along time)."""
        if name not in self._zarr:
            import zarr

            from .storage import zarr_store

            store = zarr_store(self.location, storage_options=self.storage_options)
            self._zarr[name] = zarr.open_array(store, path=f"{self.prefix}/{name}", mode="r", zarr_format=3)
        if not idx.size:
            return np.empty((0, *self.info(name).shape[1:]), self.info(name).dtype)
        distinct = np.unique(idx)
        lo, hi = int(distinct[0]), int(distinct[-1]) + 1
        return self._zarr[name][lo:hi][distinct - lo][np.searchsorted(distinct, idx)]

    # Helpers ---------------------------------------------------------------------------------------------------
    def _shard_path(self, info: ArrayInfo, shard: int) -> str:
        return f"{self.prefix}/{info.name}/" + "/".join(["c", str(shard)] + ["0"] * (len(info.shape) - 1))

    def _damage(self, info: ArrayInfo, shard: int, local, reason: str) -> DamagedData:
        layout = info.layout
        if local:
            first, last = min(local), max(local)
            base = shard * layout.chunks_per_shard
            frames = (layout.chunk_frames(base + first)[0], layout.chunk_frames(base + last)[1])
        else:
            frames = layout.shard_frames(shard)
        return DamagedData(self.location, self.key, info.name, frames, reason)

    def array(self, name: str) -> ArrayReader:
        return ArrayReader(self, name)


class ArrayReader:
    """One array of a ``VideoReader`` indexed like a NumPy array along its first axis (``a[3]``, ``a[0:31:2]``,
    ``a[[4, 9]]``, ``a[:][..., :2]``), each index one ``read``."""

    def __init__(self, video: VideoReader, name: str):
        self.video, self.name = video, name
        self.info = video.info(name)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.info.shape

    @property
    def dtype(self) -> np.dtype:
        return self.info.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, idx) -> np.ndarray:
        return self.video.read({self.name: idx})[self.name]

    def __getitem__(self, key):
        rest = ()
        if isinstance(key, tuple):
            key, rest = (key[0], key[1:]) if key else (slice(None), ())
        if key is Ellipsis:
            key, rest = slice(None), (Ellipsis, *rest)
        if isinstance(key, slice):
            values = self.read(np.arange(*key.indices(len(self))))
        elif isinstance(key, (int, np.integer)):
            values = self.read([int(key)])[0]
            return values[rest] if rest else values
        else:
            values = self.read(np.asarray(key))
        return values[(slice(None), *rest)] if rest else values


def _sync(coroutine):
    """Run a coroutine on zarr's IO loop (one per process, reset after fork; works under a running loop too)."""
    from zarr.core.sync import sync

    return sync(coroutine)

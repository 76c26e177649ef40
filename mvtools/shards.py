"""Reading a few chunks of a sharded zarr array with few requests: pure functions on the shard layout.

A zarr v3 shard (``sharding_indexed`` codec) is one object holding its chunks' encoded bytes and an index of
``(offset, nbytes)`` per chunk (little-endian uint64, C order, ``2**64 - 1`` twice for a chunk never written),
followed by its crc32c when the index codecs say so. mvtools arrays are split along time only (a chunk holds
whole frames), so a shard's chunks are a run of frames and its index one row per chunk.

Reading frames ``idx`` of an array is then: which chunks (``chunks_for``), which shards, each shard's index
(the object's last ``index_nbytes`` bytes; ``parse_index``), the byte ranges covering the chunks, adjacent or
near ones merged (``plan_ranges``), and the chunks' bytes cut back out of the fetched ranges (``split_ranges``).
Decoding is the array's own inner codec chain's business, not this module's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

EMPTY = np.uint64(2**64 - 1)  # the index entry of a chunk that was never written (zarr's fill value)
ENTRY_BYTES = 16  # (offset, nbytes), two uint64


class ShardIndexError(ValueError):
    """A shard index that cannot be what zarr wrote (wrong size, checksum mismatch)."""


@dataclass(frozen=True)
class ShardLayout:
    """An array of ``length`` frames stored as shards of ``shard`` frames, chunks of ``chunk`` frames inside."""

    length: int
    shard: int
    chunk: int
    checksum: bool = True  # the index ends with its crc32c

    @property
    def chunks_per_shard(self) -> int:
        return self.shard // self.chunk

    @property
    def index_nbytes(self) -> int:
        return ENTRY_BYTES * self.chunks_per_shard + (4 if self.checksum else 0)

    @property
    def num_shards(self) -> int:
        return -(-self.length // self.shard)

    def chunk_frames(self, chunk: int) -> tuple[int, int]:
        """Frames [a, b) of global chunk ``chunk`` (clipped at the array's end)."""
        return chunk * self.chunk, min((chunk + 1) * self.chunk, self.length)

    def shard_frames(self, shard: int) -> tuple[int, int]:
        return shard * self.shard, min((shard + 1) * self.shard, self.length)


def layout_of(metadata) -> ShardLayout | None:
    """The ``ShardLayout`` of a zarr v3 array's metadata, or None when it is not sharded along its first axis
    alone with a plain index at the end (bytes codec, optionally crc32c): such arrays are read by zarr itself."""
    from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec
    from zarr.codecs.sharding import ShardingCodecIndexLocation

    codecs = getattr(metadata, "codecs", ())
    if len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec) or not metadata.shape:
        return None
    sharding = codecs[0]
    shard, inner, shape = (tuple(getattr(metadata.chunk_grid, "chunk_shape", ())), tuple(sharding.chunk_shape),
                           tuple(metadata.shape))
    if len(shard) != len(shape) or shard[1:] != shape[1:] or inner[1:] != shape[1:] or shard[0] % inner[0]:
        return None
    index = tuple(sharding.index_codecs)
    if sharding.index_location != ShardingCodecIndexLocation.end or not index or not isinstance(index[0], BytesCodec):
        return None
    if index[1:] not in ((), (Crc32cCodec(),)) or (index[0].endian is not None and index[0].endian.value != "little"):
        return None
    return ShardLayout(int(shape[0]), int(shard[0]), int(inner[0]), checksum=len(index) == 2)


def chunks_for(layout: ShardLayout, frames: Sequence[int] | np.ndarray) -> np.ndarray:
    """The distinct global chunk numbers that hold ``frames``, sorted."""
    return np.unique(np.asarray(frames, dtype=np.int64) // layout.chunk)


def parse_index(raw: bytes | memoryview, layout: ShardLayout) -> np.ndarray:
    """A shard's trailing ``layout.index_nbytes`` bytes -> (chunks_per_shard, 2) uint64 ``(offset, nbytes)``.

    ``ShardIndexError`` when the bytes are not an index zarr wrote: too few of them (a truncated shard) or a
    crc32c that does not match (an overwritten or truncated shard)."""
    raw = memoryview(raw).cast("B")
    if len(raw) != layout.index_nbytes:
        raise ShardIndexError(f"the shard is shorter than its index ({len(raw)} of {layout.index_nbytes} bytes)")
    body = raw[: ENTRY_BYTES * layout.chunks_per_shard]
    if layout.checksum:
        import google_crc32c  # what zarr's crc32c codec uses

        stored = int.from_bytes(raw[-4:], "little")
        if google_crc32c.value(bytes(body)) != stored:
            raise ShardIndexError("the shard index's checksum does not match (a truncated or overwritten shard)")
    return np.frombuffer(body, dtype="<u8").reshape(layout.chunks_per_shard, 2).astype(np.uint64)


def check_entries(index: np.ndarray, local: Sequence[int], data_nbytes: int) -> str | None:
    """Why the index entries of chunks ``local`` (positions within the shard) cannot be read, or None: one whose
    bytes lie past the shard's data (``data_nbytes``: the object's size less its index), or else a chunk never
    written (the fill value, if the writer skips empty chunks; mvtools writes every chunk)."""
    entries = index[np.asarray(local, dtype=np.int64)]
    empty = (entries[:, 0] == EMPTY) & (entries[:, 1] == EMPTY)
    written = entries[~empty]
    if (written[:, 0] > np.uint64(data_nbytes)).any() or (written[:, 0] + written[:, 1] > np.uint64(data_nbytes)).any():
        return "the shard index points past the end of the shard"
    if empty.any():
        return f"chunk {int(np.asarray(local)[empty][0])} of the shard was never written"
    return None


@dataclass(frozen=True)
class Span:
    """One byte range to fetch, [start, stop), and the chunks (positions within the shard) it covers."""

    start: int
    stop: int
    chunks: tuple[int, ...]


def plan_ranges(index: np.ndarray, local: Sequence[int], gap: int = 0) -> list[Span]:
    """Byte ranges covering chunks ``local`` of a shard, in offset order, merging neighbours whose gap is at most
    ``gap`` bytes (0: only touching ones). Fewer, larger requests for ``gap`` bytes more each merge."""
    order = sorted(set(int(c) for c in local), key=lambda c: int(index[c, 0]))
    spans: list[Span] = []
    for c in order:
        start, stop = int(index[c, 0]), int(index[c, 0] + index[c, 1])
        if spans and start - spans[-1].stop <= gap:
            last = spans[-1]
            spans[-1] = Span(last.start, max(last.stop, stop), last.chunks + (c,))
        else:
            spans.append(Span(start, stop, (c,)))
    return spans


def split_ranges(index: np.ndarray, spans: Sequence[Span],
                 fetched: Sequence[bytes | memoryview]) -> dict[int, memoryview]:
    """The bytes of every chunk of ``spans`` cut out of what was fetched for them (same order):
    {position within the shard: bytes}. ``ShardIndexError`` when a fetched range is shorter than planned."""
    out: dict[int, memoryview] = {}
    for span, data in zip(spans, fetched):
        data = memoryview(data).cast("B")
        if len(data) != span.stop - span.start:
            raise ShardIndexError(f"the shard ended early ({len(data)} of {span.stop - span.start} bytes fetched)")
        for c in span.chunks:
            a = int(index[c, 0]) - span.start
            out[c] = data[a: a + int(index[c, 1])]
    return out

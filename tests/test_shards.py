"""mvtools.shards: the shard index, the byte ranges a few chunks need, and cutting them back out."""

import numpy as np
import pytest
from stores import shard_index

from mvtools.shards import (
    EMPTY,
    ShardIndexError,
    ShardLayout,
    check_entries,
    chunks_for,
    parse_index,
    plan_ranges,
    split_ranges,
)


def test_layout_counts_chunks_shards_and_the_index_size():
    layout = ShardLayout(length=50, shard=16, chunk=4)
    assert layout.chunks_per_shard == 4 and layout.num_shards == 4
    assert layout.index_nbytes == 4 * 16 + 4
    assert layout.chunk_frames(12) == (48, 50) and layout.shard_frames(3) == (48, 50)  # the last, short shard
    assert list(chunks_for(layout, [49, 3, 2, 17, 17])) == [0, 4, 12]


def test_parse_index_reads_what_zarr_writes_and_refuses_damage():
    layout = ShardLayout(length=8, shard=4, chunk=1)
    entries = np.array([[0, 10], [10, 5], [EMPTY, EMPTY], [15, 7]], np.uint64)
    raw = shard_index(entries)
    np.testing.assert_array_equal(parse_index(raw, layout), entries)
    with pytest.raises(ShardIndexError, match="checksum"):
        parse_index(raw[:5] + bytes([raw[5] ^ 1]) + raw[6:], layout)
    with pytest.raises(ShardIndexError, match="shorter than its index"):
        parse_index(raw[10:], layout)
    unchecked = ShardLayout(length=8, shard=4, chunk=1, checksum=False)
    np.testing.assert_array_equal(parse_index(raw[:-4], unchecked), entries)


def test_ranges_merge_neighbours_within_the_gap_and_split_back():
    # Chunks of 10 bytes at offsets 0, 10, ..., stored in chunk order except 5 and 6, swapped.
    index = np.array([[10 * i, 10] for i in (0, 1, 2, 3, 4, 6, 5, 7)], np.uint64)
    assert [(p.start, p.stop, p.chunks) for p in plan_ranges(index, [0, 1, 2])] == [(0, 30, (0, 1, 2))]
    strided = plan_ranges(index, [0, 2, 4])
    assert [(p.start, p.stop, p.chunks) for p in strided] == [(0, 10, (0,)), (20, 30, (2,)), (40, 50, (4,))]
    merged = plan_ranges(index, [4, 2, 0, 2], gap=10)  # any order, repeats: one range, gaps read in vain
    assert [(p.start, p.stop, p.chunks) for p in merged] == [(0, 50, (0, 2, 4))]
    swapped = plan_ranges(index, [5, 6])  # chunk 6 lies before chunk 5: one range in offset order
    assert [(p.start, p.stop, p.chunks) for p in swapped] == [(50, 70, (6, 5))]
    shard = bytes(range(80))
    spans = plan_ranges(index, [0, 2, 5, 6], gap=10)
    pieces = split_ranges(index, spans, [shard[p.start:p.stop] for p in spans])
    assert {c: bytes(b) for c, b in pieces.items()} == {0: shard[0:10], 2: shard[20:30], 5: shard[60:70],
                                                        6: shard[50:60]}
    with pytest.raises(ShardIndexError, match="ended early"):
        split_ranges(index, spans[:1], [shard[:15]])


def test_entries_past_the_shard_or_never_written_are_named():
    index = np.array([[0, 10], [10, 10], [EMPTY, EMPTY], [20, 30]], np.uint64)
    assert check_entries(index, [0, 1], data_nbytes=50) is None
    assert "past the end" in check_entries(index, [3], data_nbytes=40)
    assert "never written" in check_entries(index, [0, 2], data_nbytes=50)

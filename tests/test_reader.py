"""mvtools.reader: frames of several arrays read through the shard indexes equal plain zarr's reads, cost the
requests the layout implies, and damaged bytes raise DamagedData instead of reading as zeros."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from mvtools.errors import DamagedData
from mvtools.fetch import LocalFiles
from mvtools.reader import IndexCache, VideoReader
from mvtools.shards import layout_of

SHARD = 16  # the small_shards store's frames per shard (conftest)


def reader(store: Path, key: str, gap: int = 0, indexes: IndexCache | None = None) -> VideoReader:
    source = LocalFiles(str(store))
    source.gap = gap
    return VideoReader(str(store), key, source=source, indexes=IndexCache() if indexes is None else indexes)


def keys(store: Path) -> list[str]:
    return sorted(zarr.open_group(store, mode="r")["videos"].group_keys())


def test_every_array_reads_as_plain_zarr_does(small_shards):
    group = zarr.open_group(small_shards, mode="r")["videos"][keys(small_shards)[0]]
    arrays = dict(group.arrays())
    assert {a.dtype.str for a in arrays.values()} >= {"|u1", "|i1", "<f2", "|b1", "<f8", "<i4"}
    assert layout_of(arrays["keyframe_index"].metadata).shard == 64 and layout_of(arrays["mv"].metadata).chunk == 4
    selections = {
        "strided, across a shard boundary": 9 + np.arange(16) * 2,  # 9..39: shards 0, 1, 2
        "clamped at the end (repeats)": np.minimum(40 + np.arange(8) * 2, 49),  # into the 2-frame last shard
        "any order": np.array([49, 0, 17, 16, 3, 3]),
        "every frame": np.arange(50),
        "one": np.array([31]),
    }
    merged, per_chunk = reader(small_shards, group.basename, gap=1 << 20), reader(small_shards, group.basename)
    for name, array in arrays.items():
        plain = array[:]
        for what, idx in selections.items():
            idx = np.minimum(idx, len(plain) - 1)  # keyframes: K of them
            want = plain[idx]
            for r in (merged, per_chunk):
                got = r.read({name: idx})[name]
                assert got.dtype == want.dtype and np.array_equal(got, want), (name, what)
    together = merged.read({"frames": selections["strided, across a shard boundary"], "mv": np.arange(3)})
    np.testing.assert_array_equal(together["mv"], arrays["mv"][0:3])


def test_requests_are_one_range_per_shard_and_indexes_are_read_once(small_shards):
    key = keys(small_shards)[0]
    r = reader(small_shards, key, gap=1 << 20)
    r.open(["frames", "mv"])
    assert r.source.requests == 2  # the two zarr.json, fetched together
    clip = 9 + np.arange(16) * 2  # frames 9..39: frames shards 0, 1, 2; mv chunks of 4 in vector shards 0, 1, 2
    r.source.requests = 0
    r.read({"frames": clip, "mv": clip})
    assert r.source.requests == 3 * 2 + 3 * 2  # per array: 3 shard indexes, then 3 ranges
    r.source.requests = 0
    r.read({"frames": clip + 1, "mv": clip + 1})  # same shards: indexes cached
    assert r.source.requests == 3 + 3
    per_chunk = reader(small_shards, key, gap=0, indexes=r.indexes)
    per_chunk.read({"frames": clip})  # gap 0: one range per chunk (non-adjacent frames)
    assert per_chunk.source.requests == 1 + 16


def test_the_index_cache_is_bounded_and_least_recently_used_goes_first(small_shards):
    cache = IndexCache(max_bytes=3 * 16 * SHARD)  # three 16-chunk shard indexes (16 bytes per entry)
    r = reader(small_shards, keys(small_shards)[0], indexes=cache)
    for shard in range(4):  # frames 0, 16, 32, 48: four shards
        r.read({"frames": [shard * SHARD]})
        assert len(cache) == min(shard + 1, 3) and cache.nbytes <= cache.max_bytes
    r.source.requests = 0
    r.read({"frames": [48]})  # still cached: one request
    assert r.source.requests == 1
    r.read({"frames": [0]})  # dropped first: its index again, then the range
    assert r.source.requests == 1 + 2


def copy_of(store: Path, tmp_path: Path) -> tuple[Path, str, Path]:
    copy = tmp_path / "copy.zarr"
    shutil.copytree(store, copy)
    key = keys(copy)[0]
    return copy, key, copy / "videos" / key


def test_a_deleted_shard_is_damage_not_zeros(small_shards, tmp_path):
    store, key, video = copy_of(small_shards, tmp_path)
    (video / "frames" / "c" / "1" / "0" / "0" / "0").unlink()
    assert not zarr.open_group(store, mode="r")["videos"][key]["frames"][16:32].any()  # plain zarr: silent zeros
    with pytest.raises(DamagedData) as caught:
        reader(store, key).read({"frames": [3, 20]})
    e = caught.value
    assert (e.video, e.array, e.frames) == (key, "frames", (16, 32)) and "missing" in str(e) and str(store) in str(e)


def test_a_truncated_or_overwritten_shard_is_damage(small_shards, tmp_path):
    store, key, video = copy_of(small_shards, tmp_path)
    shard = video / "mv" / "c" / "2" / "0" / "0" / "0"
    shard.write_bytes(shard.read_bytes()[:-100])  # an upload cut short: the index at the end is gone
    with pytest.raises(DamagedData, match="checksum") as caught:
        reader(store, key).read({"mv": [33]})
    assert (caught.value.array, caught.value.frames) == ("mv", (32, 48))
    shard = video / "residual" / "c" / "0" / "0" / "0" / "0"
    shard.write_bytes(np.random.default_rng(0).bytes(shard.stat().st_size))  # overwritten with other bytes
    with pytest.raises(DamagedData, match="residual.*frames 0-15"):
        reader(store, key).read({"residual": [1]})


def set_entries(shard: Path, change) -> None:
    """Rewrite a shard's index (16 chunks) after ``change(entries)``, with a valid checksum."""
    from stores import shard_index

    raw = shard.read_bytes()
    n = 16 * SHARD + 4
    entries = np.frombuffer(raw[-n:-4], "<u8").reshape(SHARD, 2).copy()
    change(entries)
    shard.write_bytes(raw[:-n] + shard_index(entries))


def test_a_chunk_that_does_not_decode_or_lies_outside_its_shard_is_damage(small_shards, tmp_path):
    store, key, video = copy_of(small_shards, tmp_path)
    shard = video / "frames" / "c" / "0" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    start, size = (int(v) for v in np.frombuffer(bytes(data[-(16 * SHARD + 4):-4]), "<u8").reshape(SHARD, 2)[5])
    data[start:start + size] = bytes(size)  # frame 5's JPEG zeroed, the index intact
    shard.write_bytes(bytes(data))
    with pytest.raises(DamagedData, match="frames 5-5: the chunk does not decode"):
        reader(store, key).read({"frames": [4, 5, 6]})
    assert reader(store, key).read({"frames": [4, 6]})["frames"].shape[0] == 2  # the other frames still read

    set_entries(video / "frames" / "c" / "1" / "0" / "0" / "0", lambda e: e.__setitem__((2, 0), 10**9))
    with pytest.raises(DamagedData, match="frames 18-18: the shard index points past the end"):
        reader(store, key).read({"frames": [18]})
    set_entries(video / "frames" / "c" / "2" / "0" / "0" / "0", lambda e: e.__setitem__(3, 2**64 - 1))
    with pytest.raises(DamagedData, match="frames 35-35: chunk 3 of the shard was never written"):
        reader(store, key).read({"frames": [35]})
    # Residuals are zero on I-frames, which writers before 2026-12-02 left out: never written reads as zeros.
    set_entries(video / "residual" / "c" / "1" / "0" / "0" / "0", lambda e: e.__setitem__(3, 2**64 - 1))
    np.testing.assert_array_equal(reader(store, key).read({"residual": [19]})["residual"], 0)


def test_video_view_reads_through_the_same_path(small_shards):
    from mvtools import StoreError, open_store
    from mvtools.motion import frame_difference

    store = open_store(small_shards)
    view = store[store.keys()[1]]
    idx = np.array([47, 12, 30, 30])
    np.testing.assert_array_equal(view.read("residual", idx), view["residual"][:][idx])
    both = view.read_many({"mv": idx, "keyframes": [0]})
    np.testing.assert_array_equal(both["mv"], view["mv"][:][idx])
    np.testing.assert_array_equal(view.framediff(10, 20), frame_difference(view["frames"][10:20],
                                                                           previous=view["frames"][9]))
    with pytest.raises(StoreError, match="no array 'depth' .*it has flow, frame_type, frames"):
        view.read("depth", [0])


def test_the_fetch_helper_pipe_takes_its_messages_and_nothing_that_names_other_code():
    """What crosses the pipe to a forked worker's fetch helper is read by an unpickler that allows only ``Get``
    and ``Got``: a payload naming any other callable (here ``os.getcwd``) is refused, not run."""
    import io
    import os
    import pickle

    from mvtools.fetch import Get, Got, _receive

    message = (7, [Get("videos/a/frames/c/0", 0, 10), Got(b"abc", 3), ("missing", "no such object")])
    assert _receive(io.BytesIO(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))) == message

    class Payload:
        def __reduce__(self):
            return (os.getcwd, ())

    with pytest.raises(pickle.UnpicklingError, match="posix.getcwd is not a fetch message"):
        _receive(io.BytesIO(pickle.dumps(Payload())))

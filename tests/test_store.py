import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from mvtools import StoreError, iter_motion, open_store, probe
from mvtools.extract import ExtractConfig, extract, extract_video
from mvtools.features import iter_features, stored_size
from mvtools.store import FRAME_TYPE_CODES, SCHEMA, create_store, disk_bytes, info


def test_layout_attrs_and_arrays(synth_store):
    store = open_store(synth_store)
    assert len(store.keys()) == 4 and store.attrs["mvtools_schema"] == SCHEMA
    assert store.attrs["labels"] == ["left", "rotate_cw"]
    view = store[store.keys()[0]]
    a = view.attrs
    assert a["complete"] is True and a["codec"] == "h264" and a["fps"] == 25.0 and len(a["sha256"]) == 64
    assert (a["width"], a["height"], a["num_frames"], a["label"]) == (192, 128, 40, "left")
    assert a["source"] == "left/left_0000.mp4"
    T, h, w = 40, 128, 192
    expected = {
        "frames": ((T, h, w, 3), "uint8"), "frame_type": ((T,), "uint8"), "pts": ((T,), "float64"),
        "mv": ((T, h // 4, w // 4, 4), "float16"), "mv_mask": ((T, h // 4, w // 4, 2), "bool"),
        "residual": ((T, h, w, 3), "int8"), "mv_acc": ((T, h // 4, w // 4, 2), "float16"),
        "residual_acc": ((T, h, w, 3), "int8"), "keyframe_index": ((2,), "int32"),
        "keyframes": ((2, h, w, 3), "uint8"),
    }
    assert sorted(view.arrays()) == sorted(expected)
    for name, (shape, dtype) in expected.items():
        assert view[name].shape == shape and view[name].dtype == dtype, name
    assert view.frames.chunks == (1, h, w, 3) and view.frames.shards == (T, h, w, 3)  # one frame a chunk
    assert view.mv.chunks[0] == 16 and view.mv.shards[0] == 128
    assert view.frames.metadata.dimension_names == ("time", "y", "x", "rgb")
    assert view.mv.metadata.dimension_names == ("time", "cell_y", "cell_x", "mv_channel")
    types = view.frame_type[:]
    np.testing.assert_array_equal(view.keyframe_index[:], np.flatnonzero(types == FRAME_TYPE_CODES["I"]))
    assert set(types) == {0, 1, 2}


def test_stored_values_match_the_computed_features(synth_store, synth_dir):
    store = open_store(synth_store)
    key = store.keys()[1]
    view = store[key]
    path = synth_dir / view.attrs["source"]
    info_ = probe(path)
    size = stored_size(info_.width, info_.height, 128)
    feats = list(iter_features(iter_motion(path, frame_size=size), (info_.width, info_.height), size))
    mv = np.stack([f.mv for f in feats])
    assert np.abs(view.mv[:].astype(np.float32) - mv).max() <= 1 / 16
    np.testing.assert_array_equal(view.mv_mask[:], np.stack([f.mv_mask for f in feats]))
    frames = np.stack([f.frame for f in feats])
    assert np.abs(view.frames[:].astype(int) - frames).mean() < 4  # JPEG q90
    res = np.clip(np.stack([f.residual for f in feats]), -128, 127)
    assert np.abs(view.residual[:].astype(int) - res).mean() < 2  # JPEG q95
    np.testing.assert_allclose(view.pts[:], [f.pts for f in feats])
    kf = view.keyframes[:]
    np.testing.assert_array_equal(kf, view.frames[view.keyframe_index[:].tolist()])


def test_framediff_is_derived_from_frames(synth_store):
    view = open_store(synth_store)[open_store(synth_store).keys()[0]]
    frames = view.frames[:].astype(np.int16)
    whole = view.framediff()
    assert whole.dtype == np.int16 and not whole[0].any()
    np.testing.assert_array_equal(whole[1:], np.diff(frames, axis=0))
    np.testing.assert_array_equal(view.framediff(5, 21), whole[5:21])


def test_lossless_store_is_exact(synth_dir, tmp_path):
    rel = "rotate_cw/rotate_cw_0001.mp4"
    config = ExtractConfig(lossless=True)
    store = create_store(tmp_path / "l.zarr", config.settings())
    extract_video(synth_dir / rel, store, "v", config, attrs={"source": rel})
    view = open_store(tmp_path / "l.zarr")["v"]
    feats = list(iter_features(iter_motion(synth_dir / rel, frame_size=(192, 128)), (192, 128), (192, 128)))
    np.testing.assert_array_equal(view.frames[:], np.stack([f.frame for f in feats]))
    assert view.residual.dtype == np.int16
    np.testing.assert_array_equal(view.residual[:], np.stack([f.residual for f in feats]))


def test_plain_zarr_reads_the_layout(synth_store):
    root = zarr.open_group(synth_store, mode="r")
    assert root.attrs["mvtools_schema"] == SCHEMA
    video = root["videos"][sorted(root["videos"].group_keys())[0]]
    assert video.attrs["complete"] and video["mv"][:16].shape[0] == 16
    assert json.loads((synth_store / "zarr.json").read_text())["attributes"]["frame_type_codes"]["B"] == 2


def test_failed_video_leaves_no_group_and_keeps_the_others(synth_dir, tmp_path):
    src = tmp_path / "src"
    good = src / "a" / "good.mp4"
    good.parent.mkdir(parents=True)
    good.write_bytes((synth_dir / "left" / "left_0000.mp4").read_bytes())
    from mvtools.synth import encode_video, render

    whole = encode_video(tmp_path / "w.mp4", render("up", np.random.default_rng(0), num_frames=300), faststart=True)
    data = whole.read_bytes()
    (src / "a" / "cut.mp4").write_bytes(data[: len(data) * 3 // 4])  # fails after a full shard was written
    report = extract(src, tmp_path / "s.zarr", progress=False)
    assert report.extracted == ["a__good"] and list(report.failed) == ["a/cut.mp4"]
    assert "truncated" in report.failed["a/cut.mp4"]
    store = open_store(tmp_path / "s.zarr")
    assert store.all_keys() == ["a__good"]
    assert store.attrs["failures"] == {"a/cut.mp4": report.failed["a/cut.mp4"]}


@pytest.mark.parametrize("expected", [0, 5, 40, 300])
def test_writer_is_exact_whatever_frame_count_the_container_claims(expected, tmp_path):
    settings = {**ExtractConfig(modalities=("mv",), lossless=True).settings(), "chunk_frames": 4, "shard_frames": 8}
    store = create_store(tmp_path / "w.zarr", settings)
    writer = store.begin_video("v", 16, 32, {}, expected_frames=expected)
    rng = np.random.default_rng(0)
    mv = (np.rint(rng.normal(0, 3, (21, 4, 8, 4)) * 8) / 8).astype(np.float32)
    for t in range(21):
        writer.append({"frame_type": 1, "pts": t / 25, "mv": mv[t], "mv_mask": mv[t, ..., ::2] > 0})
    writer.commit({"source": "v.mp4"})
    view = open_store(tmp_path / "w.zarr")["v"]
    assert len(view) == 21 and view.mv.shape == (21, 4, 8, 4) and view.pts.shape == (21,)
    np.testing.assert_array_equal(view.mv[:].astype(np.float32), mv)
    np.testing.assert_array_equal(view.mv_mask[:], mv[..., ::2] > 0)
    np.testing.assert_allclose(view.pts[:], np.arange(21) / 25)


def test_incomplete_video_is_invisible(synth_store, tmp_path):
    config = ExtractConfig()
    store = create_store(tmp_path / "i.zarr", config.settings())
    writer = store.begin_video("half", 128, 192, {"source": "x.mp4"})
    writer.append({"frame_type": 1, "pts": 0.0, "frames": np.zeros((128, 192, 3), np.uint8)})
    writer.flush()
    reopened = open_store(tmp_path / "i.zarr")
    assert reopened.keys() == [] and reopened.incomplete() == ["half"] and "half" not in reopened
    with pytest.raises(StoreError, match="incomplete"):
        reopened["half"]
    with pytest.raises(StoreError, match="no video 'nope'"):
        reopened["nope"]


def test_store_errors(synth_store, tmp_path):
    with pytest.raises(StoreError, match="other settings"):
        create_store(synth_store, ExtractConfig(size=64).settings())
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(StoreError, match="not an mvtools store"):
        create_store(tmp_path / "junk", ExtractConfig().settings())
    with pytest.raises(StoreError, match="no store here"):
        open_store(tmp_path / "missing.zarr")
    zarr.open_group(tmp_path / "old.zarr", mode="w", attributes={"mvtools_schema": 0})
    with pytest.raises(StoreError, match="schema 0"):
        open_store(tmp_path / "old.zarr")
    view = open_store(synth_store)[open_store(synth_store).keys()[0]]
    with pytest.raises(StoreError, match="no array 'flow'"):
        view["flow"]


def test_info_counts_videos_frames_and_bytes(synth_store):
    summary = info(synth_store)
    assert summary["videos"] == 4 and summary["frames"] == 160 and summary["incomplete"] == []
    assert summary["labels"] == {"left": 2, "rotate_cw": 2} and summary["index"] == "fresh"
    assert summary["settings"]["size"] == 128
    videos = Path(synth_store) / "videos"  # the sizes recorded at commit, against a walk of the files
    walked = {name: sum(disk_bytes(g / name) for g in videos.iterdir() if g.is_dir()) for name in
              summary["bytes_per_array"]}
    assert summary["bytes_per_array"] == walked and summary["bytes"] == sum(walked.values())
    files = sum(1 for p in videos.rglob("*") if p.is_file()) - 1  # videos/zarr.json is no video's
    assert summary["files"] == files and summary["files_per_video"] == files / 4


def _without_video_metadata(store, tmp_path) -> Path:
    """A copy of the store whose video groups cannot be read: only the index can answer."""
    copy = tmp_path / "blind.zarr"
    shutil.copytree(store, copy)
    for meta in (copy / "videos").glob("*/zarr.json"):
        meta.unlink()
    return copy


def test_the_index_answers_listing_without_reading_video_groups(synth_store, tmp_path):
    from trainer.data import list_videos

    store = open_store(synth_store)
    index = store.index()
    scanned, incomplete = store.scan()
    assert index is not None and incomplete == [] and list(index.rows()) == list(scanned.rows())
    blind = _without_video_metadata(synth_store, tmp_path)
    assert open_store(blind).keys() == store.keys() and open_store(blind).incomplete() == []
    assert {k: v for k, v in info(blind).items() if k != "path"} == {k: v for k, v in info(synth_store).items()
                                                                      if k != "path"}
    assert list_videos(blind) == list_videos(synth_store) and len(list_videos(blind)) == 4


def test_a_writer_makes_the_index_stale_and_the_next_run_mends_it(synth_dir, tmp_path):
    path = tmp_path / "s.zarr"
    extract(synth_dir, path, progress=False)
    token = open_store(path).attrs["index_token"]
    assert token and open_store(path).index() is not None
    key = open_store(path).keys()[0]
    open_store(path, mode="r+").begin_video(key, 64, 96, {})  # as an interrupted re-extraction leaves it
    store = open_store(path)
    assert store.attrs["index_token"] is None and store.index() is None
    assert key not in store.keys() and store.incomplete() == [key]
    summary = info(path)
    assert summary["index"] == "scanned" and summary["videos"] == 3 and summary["incomplete"] == [key]
    with pytest.raises(StoreError, match="incomplete"):
        info(path, rebuild_index=True)
    extract(synth_dir, path, progress=False)
    assert open_store(path).attrs["index_token"] == token and info(path)["index"] == "fresh"


def test_a_mismatched_token_is_stale_and_info_rebuilds_it(synth_store, tmp_path):
    path = tmp_path / "s.zarr"
    shutil.copytree(synth_store, path)
    token = open_store(path).attrs["index_token"]
    zarr.open_group(path, mode="r+").update_attributes({"index_token": "0" * 32})  # a crash between the writes
    assert open_store(path).index() is None and info(path)["index"] == "scanned"
    assert info(path, rebuild_index=True)["index"] == "rebuilt"
    assert open_store(path).attrs["index_token"] == token and open_store(path).index() is not None


@pytest.mark.parametrize("expected", [0, 3, 10, 40])
def test_writer_handles_a_container_frame_count_that_is_wrong(tmp_path, expected):
    config = ExtractConfig(modalities=("frames", "mv", "keyframes"), shard_frames=16, chunk_frames=4)
    store = create_store(tmp_path / "s.zarr", config.settings())
    writer = store.begin_video("v", 16, 24, {"source": "v.mp4"}, expected_frames=expected)
    ramp = np.add.outer(np.arange(16), np.arange(24))[None, :, :, None] * 4  # smooth: JPEG keeps it closely
    frames = np.broadcast_to(ramp + np.arange(20)[:, None, None, None] * 3, (20, 16, 24, 3)).astype(np.uint8)
    for t, frame in enumerate(frames):
        writer.append({"frames": frame, "mv": np.full((4, 6, 4), t / 8), "mv_mask": np.ones((4, 6, 2), bool),
                       "frame_type": t % 3, "pts": t / 25})
        if t % 7 == 0:
            writer.append_keyframe(t, frame)
    row = writer.commit({"source": "v.mp4"})
    view = open_store(tmp_path / "s.zarr")["v"]
    assert row["num_frames"] == len(view) == 20 and view.frames.shape == (20, 16, 24, 3)
    np.testing.assert_array_equal(view.mv[:, 0, 0, 0], np.arange(20) / 8)
    np.testing.assert_array_equal(view.frame_type[:], np.arange(20) % 3)
    np.testing.assert_array_equal(view.keyframe_index[:], [0, 7, 14])
    assert np.abs(view.frames[:].astype(int) - frames).max() <= 4
    assert np.abs(view.keyframes[:].astype(int) - frames[[0, 7, 14]]).max() <= 4


def test_array_metadata_is_what_zarr_itself_writes():
    """The writer builds each array's zarr.json from the specs; zarr.create_array is the independent check."""
    from zarr.codecs import Crc32cCodec, ZstdCodec
    from zarr.codecs.numcodecs import FixedScaleOffset

    from mvtools.codecs import ImageJpegCodec
    from mvtools.store import _tail, array_metadata, array_specs

    for name, spec in array_specs(ExtractConfig(modalities=("frames", "mv", "residual", "keyframes",
                                                            "accumulated"), flow="dis").settings()).items():
        tail, per_frame = _tail(spec, 48, 64), name not in ("keyframes", "keyframe_index")
        if spec.jpeg_quality:
            kw = {"serializer": ImageJpegCodec(level=spec.jpeg_quality), "compressors": Crc32cCodec(),
                  "filters": [FixedScaleOffset(offset=-128, scale=1, dtype="|i1", astype="|u1")]
                  if spec.dtype == "int8" else None, "chunks": (1, *tail), "shards": (9, *tail)}
        else:
            kw = {"compressors": [ZstdCodec(level=3), Crc32cCodec()], "chunks": (16 if per_frame else 1, *tail),
                  "shards": (128 if per_frame else 64, *tail)}
        reference = zarr.create_array(zarr.storage.MemoryStore(), shape=(9, *tail), dtype=spec.dtype, fill_value=0,
                                      dimension_names=spec.dims, **kw).metadata
        meta, document = array_metadata(name, spec, 9, tail, 16, 128)
        as_json = [json.loads(json.dumps(m.to_dict())) for m in (meta, reference)]
        assert as_json[0] == as_json[1] == json.loads(document), name

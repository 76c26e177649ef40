import numpy as np
import pytest
import torch
import zarr

from mvtools.store import open_store
from trainer.data import (
    ClipDataset,
    ClipSpec,
    DataError,
    StepBatches,
    View,
    clip_indices,
    crop_resize,
    list_videos,
    read_view,
    scale_vectors,
)

ALL = ("rgb", "mv", "residual", "framediff", "keyframe")


def test_sample_has_every_modality_with_documented_shapes(synth_store):
    ds = ClipDataset(synth_store, modalities=ALL, clip_len=8, stride=2, size=64)
    sample = ds[(1, 0)]
    assert len(sample["views"]) == 2 and sample["key"] == ds.videos[1].key
    assert ds.classes == ["left", "rotate_cw"] and sample["label"] == ds.classes.index(ds.videos[1].label)
    shapes = {k: tuple(v.shape) for k, v in sample["views"][0].items()}
    assert shapes == {"rgb": (3, 8, 64, 64), "mv": (4, 8, 16, 16), "residual": (3, 8, 64, 64),
                      "framediff": (3, 8, 64, 64), "keyframe": (3, 64, 64)}
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in sample["views"][0].values())
    # Two views differ (own crop, start, jitter); the same (index, epoch) gives the same sample.
    assert not torch.equal(sample["views"][0]["rgb"], sample["views"][1]["rgb"])
    again = ds[(1, 0)]
    assert all(torch.equal(again["views"][0][k], sample["views"][0][k]) for k in ALL)
    assert not torch.equal(ds[(1, 1)]["views"][0]["rgb"], sample["views"][0]["rgb"])


def test_crop_resize_samples_the_same_box_at_every_resolution():
    h, w = 64, 96
    xs = np.arange(w, dtype=np.float32) + 0.5  # pixel p's centre, in stored pixels
    pixels = np.broadcast_to(xs[None, :, None], (h, w, 1)).copy()
    cells = pixels.reshape(h // 4, 4, w // 4, 4, 1).mean((1, 3))  # a 4x4-cell array of the same ramp
    box = (10.0, 6.0, 74.0, 50.0)
    fine, coarse = crop_resize(pixels[None], box, 32)[0], crop_resize(cells[None], box, 8, cell=4)[0]
    want_fine = box[0] + (np.arange(32) + 0.5) * (box[2] - box[0]) / 32
    want_coarse = box[0] + (np.arange(8) + 0.5) * (box[2] - box[0]) / 8
    np.testing.assert_allclose(fine[5, :, 0], want_fine, atol=1e-3)
    np.testing.assert_allclose(coarse[3, 1:-1, 0], want_coarse[1:-1], atol=1e-3)


def test_scale_vectors_to_output_pixels_and_flip_negates_x():
    field = np.array([[1.0, 2.0, -3.0, 4.0]], np.float32)
    out = scale_vectors(field, (0, 0, 64, 32), 128, flip=False)
    np.testing.assert_allclose(out, [[2.0, 8.0, -6.0, 16.0]])
    np.testing.assert_allclose(scale_vectors(field, (0, 0, 64, 32), 128, flip=True), [[-2.0, 8.0, 6.0, 16.0]])


def test_flip_mirrors_every_modality_alike_and_negates_motion_x(synth_store):
    ds = ClipDataset(synth_store, modalities=ALL, clip_len=4, stride=1, size=64, train=False)
    group, video, spec = ds.group(0), ds.videos[0], ds.spec
    box = (20.0, 10.0, 120.0, 110.0)
    plain = read_view(group, video, View(9, box, flip=False), ALL, spec, augment=False)
    flipped = read_view(group, video, View(9, box, flip=True), ALL, spec, augment=False)
    for name in ("rgb", "residual", "framediff", "keyframe"):
        torch.testing.assert_close(flipped[name], plain[name].flip(-1))
    mirror = plain["mv"].flip(-1)
    torch.testing.assert_close(flipped["mv"][0::2], -mirror[0::2])
    torch.testing.assert_close(flipped["mv"][1::2], mirror[1::2])
    assert plain["mv"][0].abs().mean() > 0.5  # the "left" class moves: the test is not vacuous


def test_motion_is_aligned_to_clip_frames_and_framediff_is_consecutive(synth_store):
    spec = ClipSpec(clip_len=4, stride=3, size=64)
    ds = ClipDataset(synth_store, modalities=("mv", "framediff", "keyframe", "rgb"), spec=spec, train=False)
    group, video = ds.group(0), ds.videos[0]
    box = (0.0, 0.0, 128.0, 128.0)
    view = read_view(group, video, View(0, box), ("mv", "framediff", "keyframe", "rgb"), spec, augment=False)
    idx = clip_indices(0, spec, video.num_frames)
    assert list(idx) == [0, 3, 6, 9]
    mv = group["mv"][:][idx].astype(np.float32)
    want = scale_vectors(crop_resize(mv, box, 16, cell=4), box, 64, False).transpose(3, 0, 1, 2)
    np.testing.assert_allclose(view["mv"].numpy(), want, atol=1e-5)
    frames = group["frames"][:].astype(np.float32)
    assert view["framediff"][:, 0].abs().max() == 0  # frame 0 has no predecessor: no wrap-around
    diff = crop_resize((frames[3] - frames[2])[None] / 255, box, 64)[0].transpose(2, 0, 1)
    np.testing.assert_allclose(view["framediff"][:, 1].numpy(), diff, atol=1e-5)


def test_keyframe_is_the_last_i_frame_at_or_before_the_clip_start(tmp_path):
    from stores import decode_index, index_frames, write_store

    frames, keys = index_frames(40), np.array([0, 10, 20, 30], np.int32)
    store = write_store(tmp_path / "gops.zarr", {"v": {"frames": frames, "keyframes": frames[keys],
                                                       "keyframe_index": keys}})
    ds = ClipDataset(store, modalities=("rgb", "keyframe"), spec=ClipSpec(4, 2, 16), train=False)
    for start, want in [(0, 0), (9, 0), (10, 10), (13, 10), (29, 20), (33, 30)]:
        view = read_view(ds.group(0), ds.videos[0], View(start, (4.0, 2.0, 28.0, 26.0)), ("rgb", "keyframe"),
                         ds.spec, augment=False)
        assert decode_index(view["rgb"])[0] == start and decode_index(view["keyframe"][:, None])[0] == want


def test_eval_mode_gives_evenly_spaced_centre_clips(synth_store):
    ds = ClipDataset(synth_store, modalities=("rgb",), train=False, clips_per_video=3, clip_len=4, stride=2,
                     size=32)
    assert len(ds) == 3 * len(ds.videos)
    a, b = ds[0], ds[1]
    assert a["video"] == b["video"] == 0 and not torch.equal(a["views"][0]["rgb"], b["views"][0]["rgb"])
    assert torch.equal(ds[0]["views"][0]["rgb"], a["views"][0]["rgb"])


def test_dataloader_workers_read_the_same_clips(synth_store):
    ds = ClipDataset(synth_store, modalities=("rgb", "mv"), clip_len=4, size=32)
    batches = StepBatches(len(ds), 2, seed=3, steps=2)
    loaded = list(torch.utils.data.DataLoader(ds, batch_sampler=batches, num_workers=2))
    direct = [torch.utils.data.default_collate([ds[i] for i in batches.batch_of(s)]) for s in range(2)]
    for got, want in zip(loaded, direct):
        assert got["key"] == want["key"]
        assert torch.equal(got["views"][1]["mv"], want["views"][1]["mv"])


def test_step_batches_depend_only_on_seed_and_step_and_split_across_ranks():
    full = list(StepBatches(10, 2, seed=1, steps=7))
    assert list(StepBatches(10, 2, seed=1, start=4, steps=7)) == full[4:]
    epoch0 = sorted(i for b in full[:5] for i, _ in b)
    assert epoch0 == list(range(10)) and full[5][0][1] == 1
    r0 = StepBatches(10, 2, seed=1, rank=0, world=2).batch_of(3)
    r1 = StepBatches(10, 2, seed=1, rank=1, world=2).batch_of(3)
    assert len(set(r0) | set(r1)) == 4
    with pytest.raises(DataError, match="batch"):
        StepBatches(3, 2, world=2)


def test_missing_modality_and_empty_split_are_named(synth_store, mv_only_store):
    with pytest.raises(DataError, match="'rgb' needs array 'frames'"):
        ClipDataset(mv_only_store, modalities=("rgb",))
    with pytest.raises(DataError, match="'flow'"):
        ClipDataset(synth_store, modalities=("flow",))
    with pytest.raises(DataError, match="split 'val'"):
        ClipDataset(synth_store, split="val")  # the store has no splits; only train / test fall back
    with pytest.raises(DataError, match="unknown modalities"):
        ClipDataset(synth_store, modalities=("depth",))


def test_only_complete_videos_are_listed(synth_store, tmp_path):
    import shutil

    copy = tmp_path / "copy.zarr"
    shutil.copytree(synth_store, copy)
    videos = list_videos(copy)
    key = videos[0].key
    open_store(copy, mode="r+").begin_video(key, 8, 8, {})  # an extraction interrupted after it began
    assert [v.key for v in list_videos(copy)] == [v.key for v in videos[1:]]


def test_anchor_distances_follow_the_frame_types():
    from trainer.data import anchor_distances

    #            I  B  B  P  B  P  P  I  B
    types = np.array([0, 2, 2, 1, 2, 1, 1, 0, 2])
    past, future = anchor_distances(types)
    assert list(past) == [1, 1, 2, 3, 1, 2, 1, 1, 1]
    assert list(future) == [1, 2, 1, 1, 1, 1, 1, 1, 1]  # the last B-frame has no later anchor: 1
    assert list(anchor_distances(np.array([2, 0]))[0]) == [1, 1]


def test_vectors_per_frame_of_displacement(tmp_path):
    from stores import write_store

    # An object moving 1.5 px per frame to the right: a P-frame 3 frames after its anchor carries dx = 4.5,
    # a B-frame dx = 1.5 back and -3 forward. Per frame, every vector is +-1.5.
    types = np.array([0, 2, 2, 1, 2, 2, 1, 1], np.uint8)
    past, future = np.array([0, 1, 2, 3, 1, 2, 3, 1]), np.array([0, 2, 1, 0, 2, 1, 0, 0])
    mv = np.zeros((8, 8, 8, 4), np.float16)
    mv[..., 0] = (1.5 * past)[:, None, None]
    mv[..., 2] = (-1.5 * future)[:, None, None]
    store = write_store(tmp_path / "gop.zarr", {"v": {"mv": mv, "frame_type": types}})
    box = (0.0, 0.0, 32.0, 32.0)  # whole frame at output size 32: output pixels are stored pixels
    for per_frame, want_past, want_future in [(False, 1.5 * past, -1.5 * future),
                                              (True, 1.5 * (past > 0), -1.5 * (future > 0))]:
        spec = ClipSpec(clip_len=8, stride=1, size=32, mv_per_frame=per_frame)
        ds = ClipDataset(store, modalities=("mv",), spec=spec, train=False)
        got = read_view(ds.group(0), ds.videos[0], View(0, box), ("mv",), spec, augment=False)["mv"]
        np.testing.assert_allclose(got[0].mean((1, 2)).numpy(), want_past, atol=1e-6)
        np.testing.assert_allclose(got[2].mean((1, 2)).numpy(), want_future, atol=1e-6)


def test_a_clip_reads_exactly_its_frames(synth_store):
    """Once a shard's index is known, a clip reads exactly its chunks (a local folder merges only touching ones:
    object stores merge more, tests/test_remote_reads.py); frames equal plain zarr's."""
    ds = ClipDataset(synth_store, modalities=("rgb", "mv"), train=False)
    key = ds.videos[0].key
    plain = zarr.open_group(synth_store, mode="r")["videos"][key]
    group, idx = ds.group(0), clip_indices(3, ClipSpec(clip_len=8, stride=2), 40)  # frames 3, 5, ..., 17
    source = group.reader.source
    group.read({"frames": [0], "mv": [0]})  # metadata and shard indexes, read once
    before = source.requests
    got = group.read({"frames": idx, "mv": idx})
    np.testing.assert_array_equal(got["frames"], plain["frames"][:][idx])
    np.testing.assert_array_equal(got["mv"], plain["mv"][:][idx])
    assert source.requests - before == 8 + 1  # 8 JPEG chunks; vector chunks 0-15 and 16-31, adjacent: one range
    before = source.requests
    clamped = clip_indices(36, ClipSpec(clip_len=4, stride=2), 40)  # 36, 38, 39, 39: the last frame twice
    np.testing.assert_array_equal(group["frames"].read(clamped), plain["frames"][:][clamped])
    assert source.requests - before == 2  # 36, then 38-39


@pytest.fixture
def damaged_copy(synth_store, tmp_path):
    """A copy of the synthetic store (its 4 videos of 40 frames: one shard per array), to damage."""
    import shutil

    copy = tmp_path / "copy.zarr"
    shutil.copytree(synth_store, copy)
    return copy


@pytest.mark.parametrize("how", ["truncate", "overwrite"])
def test_a_damaged_shard_raises_damaged_data_naming_store_video_array_and_frames(damaged_copy, how):
    from stores import damage

    from mvtools.errors import DamagedData

    ds = ClipDataset(damaged_copy, modalities=("rgb",), clip_len=4, stride=2, size=32)
    key = ds.videos[1].key
    damage(damaged_copy, key, "frames", how)
    with pytest.raises(DamagedData) as caught:
        for index in range(len(ds)):  # a clip of the damaged video that reads the damaged bytes
            for epoch in range(10):
                ds[(index, epoch)]
    e = caught.value
    assert (e.path, e.video, e.array) == (str(damaged_copy), key, "frames") and e.frames[1] - e.frames[0] >= 1
    assert str(e).startswith(f"{damaged_copy}: video {key!r}, array 'frames', frames {e.frames[0]}-")
    assert "mvtools verify STORE --repair" in str(e)
    assert all(ds[(i, 0)]["key"] for i in range(len(ds)) if ds.videos[i].key != key)  # the others read


def test_skip_replaces_a_damaged_sample_the_same_way_every_time(damaged_copy):
    from stores import damage

    ds = ClipDataset(damaged_copy, modalities=("rgb",), clip_len=4, stride=2, size=32, on_bad_clip="skip")
    key = ds.videos[2].key
    damage(damaged_copy, key, "frames", "truncate", shard=0)
    damage(damaged_copy, key, "frames", "overwrite", shard=0)
    sample = ds[(2, 0)]
    assert sample["key"] != key and sample["bad_clips"] >= 1
    assert sample["bad_clip_errors"].startswith(f"{key}\t{damaged_copy}: video {key!r}, array 'frames'")
    again = ds[(2, 0)]
    assert again["key"] == sample["key"] and torch.equal(again["views"][0]["rgb"], sample["views"][0]["rgb"])
    clean = ds[(0, 0)]
    assert clean["bad_clips"] == 0 and clean["bad_clip_errors"] == "" and clean["key"] == ds.videos[0].key
    batch = torch.utils.data.default_collate([sample, clean])  # the loader's batches carry both fields
    assert batch["bad_clips"].tolist() == [sample["bad_clips"], 0]


def test_a_deleted_shard_of_a_complete_video_is_not_read_as_zeros(damaged_copy):
    from stores import damage

    from mvtools.errors import DamagedData

    ds = ClipDataset(damaged_copy, modalities=("rgb",), clip_len=4, stride=2, size=32)
    key = ds.videos[0].key
    damage(damaged_copy, key, "frames", "delete")
    with pytest.raises(DamagedData, match=f"video {key!r}, array 'frames'"):
        ds[(0, 0)]

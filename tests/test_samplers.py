from dataclasses import replace

import numpy as np
import pytest
import torch

from trainer.data import ClipDataset, ClipSpec, clip_indices
from trainer.samplers import (
    ClipPair,
    FutureMotion,
    MotionFocused,
    choose_start,
    clip_scores,
    coverage,
    half_starts,
    iframe_near,
    motion_boundaries,
    motion_box,
    motion_focused_view,
    other_starts,
    required_coverage,
    starts_near_iframes,
    window_sum,
)

SPEC = ClipSpec(clip_len=4, stride=2, size=32)


def test_motion_boundaries_are_zero_for_a_uniform_motion_and_mark_a_motion_edge():
    pan = np.zeros((6, 8, 2), np.float32)
    pan[..., 0] = 3.0
    assert np.abs(motion_boundaries(pan)).max() == 0
    edge = pan.copy()
    edge[:, 4:, 0] = -3.0  # the right half moves the other way
    mb = motion_boundaries(edge)
    assert mb[:, 3:5].min() > 0 and mb[:, :3].max() == 0 and mb[:, 5:].max() == 0


def test_window_sum_adds_the_next_frames():
    maps = np.arange(1.0, 6.0)[:, None]
    np.testing.assert_array_equal(window_sum(maps, 2)[:, 0], [3, 5, 7, 9, 5])


def test_clip_scores_and_focused_start():
    energy = np.array([0, 0, 0, 0, 5, 5, 5, 5, 0, 0], np.float32)
    spec = ClipSpec(clip_len=2, stride=1)
    scores = clip_scores(energy, spec)
    assert len(scores) == 9 and scores.argmax() == 4 and scores[3] == 2.5
    rng = np.random.default_rng(0)
    top = set(np.argsort(-scores, kind="stable")[:5])
    assert all(choose_start(scores, rng, p=1.0) in top for _ in range(50))
    assert len({choose_start(scores, rng, p=0.0) for _ in range(200)}) == 9  # uniform over every start


def test_motion_box_coverage_and_required_fraction():
    energy = np.zeros((7, 7))
    energy[2, 3] = 1.0
    assert motion_box(energy, top=1 / 49) == ((3, 2, 4, 3), 1)
    energy[4, 5] = 0.9
    assert motion_box(energy, top=2 / 49) == ((3, 2, 6, 5), 9)
    assert [required_coverage(c) for c in (1, 4, 5, 8, 12, 13)] == [0.9, 0.9, 0.8, 0.8, 0.7, 0.0]
    assert coverage((0, 0, 10, 10), (5, 5, 15, 15)) == 0.25 and coverage((0, 0, 10, 10), (2, 2, 4, 4)) == 1.0


def test_motion_focused_view_covers_the_box():
    from trainer.data import Video

    video = Video("v", 40, 96, 128, None, None)
    rng = np.random.default_rng(1)
    box = (100.0, 70.0, 120.0, 90.0)  # a corner: most random crops miss it
    views = [motion_focused_view(rng, video, SPEC, 3, box, 0.9) for _ in range(20)]
    assert all(coverage(v.box, box) >= 0.9 for v in views) and all(v.start == 3 for v in views)


def test_other_starts_do_not_overlap_and_half_starts_stay_in_their_half():
    rng = np.random.default_rng(0)
    free = {0, 1, 2, *range(18, 33)}  # 40 frames, 8-frame clips: starts 0-32; those clear of frames 10-17
    seen = set()
    for _ in range(200):
        starts = other_starts(40, 8, avoid=10, count=3, rng=rng)
        assert len(set(starts)) == 3  # distinct while there are enough
        seen.update(starts)
    assert seen == free  # every clear start is drawn, and nothing else
    assert other_starts(8, 8, avoid=0, count=2, rng=rng) == [0, 0]  # one possible start
    assert half_starts(40, 8, second=False) == (0, 12) and half_starts(40, 8, second=True) == (20, 32)


@pytest.fixture(scope="module")
def dataset(synth_store):
    return lambda sampler, modalities: ClipDataset(synth_store, modalities=modalities, spec=SPEC, sampler=sampler)


def test_starts_near_iframes_and_the_iframe_drawn_among_them():
    keys = np.array([0, 30])
    assert list(starts_near_iframes(keys, span=7, last=48, window=5)) == [*range(0, 6), *range(19, 36)]
    assert len(starts_near_iframes(np.array([], int), 7, 10, 5)) == 0
    rng = np.random.default_rng(0)
    assert {iframe_near(np.array([0, 8, 16, 40]), 10, 7, 5, rng) for _ in range(50)} == {1, 2}  # 8 and 16
    assert iframe_near(keys, 14, 7, 5, rng) == 1  # none within 5 frames: the nearest (30, 10 frames after the end)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """60 square frames whose pixels are 4 x their index; vectors dy = index + 1 (dx = 0); I-frames at 0 and 30."""
    from stores import index_frames, write_store

    frames, keys = index_frames(60), np.array([0, 30], np.int32)
    mv = np.zeros((60, 8, 8, 4), np.float16)
    mv[..., 1] = np.arange(1, 61)[:, None, None]
    return write_store(tmp_path_factory.mktemp("indexed") / "s.zarr", {"v": {
        "frames": frames, "mv": mv, "keyframes": frames[keys], "keyframe_index": keys}})


def test_future_motion_clip_iframe_and_negatives_on_a_store_whose_answer_is_known(indexed):
    from stores import decode_index

    # Whole-frame crops without jitter: frame indices can be read back from the pixels and from the vectors.
    spec = ClipSpec(clip_len=4, stride=2, size=32, scale=(1.0, 1.0), ratio=(1.0, 1.0), jitter=0.0, grayscale=0.0)
    sampler = FutureMotion(future_len=4, gap=2, stride=1, negatives=3)
    ds = ClipDataset(indexed, modalities=("rgb", "keyframe", "mv"), spec=spec, sampler=sampler)
    starts = set()
    for epoch in range(40):
        sample = ds[(0, epoch)]
        clip = decode_index(sample["views"][0]["rgb"])
        iframe = decode_index(sample["views"][0]["keyframe"][:, None])[0]
        future = sample["future"][1].mean((1, 2)).round().int().numpy() - 1  # dy = index + 1
        negatives = sample["negatives"][:, 1].mean((2, 3)).round().int().numpy() - 1
        assert list(clip) == list(range(clip[0], clip[0] + 7, 2))
        assert iframe in (0, 30) and clip[0] - 5 <= iframe <= clip[-1] + 5  # MCD: within +-5 frames of the clip
        assert list(future) == list(range(clip[-1] + 2, clip[-1] + 6))  # 2 frames after the clip ends
        assert all(abs(n[0] - future[0]) >= 4 and list(n) == list(range(n[0], n[0] + 4)) for n in negatives)
        assert sample["future"][0].abs().max() == 0  # dx stays 0: one crop, no flip applied to x alone
        starts.add(int(clip[0]))
    assert starts <= {*range(0, 6), *range(19, 36)} and len(starts) > 10


def test_motion_focused_sample(dataset):
    sampler = MotionFocused()
    ds = dataset(sampler, ("rgb", "mv"))
    sample = ds[(0, 0)]
    assert len(sample["views"]) == 4 and all(set(v) == {"rgb"} for v in sample["views"])
    assert sample["motion_map"].shape == (4, 8, 8) and sample["order"] in (0, 1)
    assert torch.isfinite(sample["motion_map"]).all() and (sample["motion_map"] >= 0).all()
    assert sampler.resolve(ds) == "mv"  # the synthetic store has no flow
    energy, maps = sampler.statistics(ds, 0)
    assert energy.shape == (ds.videos[0].num_frames,) and maps.shape == (ds.videos[0].num_frames, 7, 7)


def test_clip_pair_has_one_more_frame_and_its_crop_box(dataset):
    ds = dataset(ClipPair(), ("rgb",))
    sample = ds[(2, 0)]
    a, b = sample["views"]
    assert a["rgb"].shape == (3, 5, 32, 32) and a["box"].shape == (4,) and a["flip"].dtype == torch.bool
    assert not torch.equal(a["box"], b["box"])
    video = ds.videos[2]
    x0, y0, x1, y1 = a["box"].tolist()
    assert 0 <= x0 < x1 <= video.width and 0 <= y0 < y1 <= video.height
    assert list(clip_indices(0, replace(SPEC, clip_len=5), 40)) == [0, 2, 4, 6, 8]


def test_motion_focused_statistics_come_from_the_maps_source(tmp_path):
    from stores import write_store

    t = 24
    mv = np.zeros((t, 8, 8, 4), np.float16)
    mv[16:20, :3, :3, 0] = 4.0  # the vectors see an object top left in frames 16-19
    flow = np.zeros((t, 32, 32, 2), np.float16)
    flow[2:6, 20:, 20:, 1] = 4.0  # the flow sees one bottom right in frames 2-5
    store = write_store(tmp_path / "both.zarr", {"v": {"frames": np.zeros((t, 32, 32, 3), np.uint8), "mv": mv,
                                                       "flow": flow}})
    for source, frames, corner in [("flow", range(1, 7), (4, 7)), ("mv", range(15, 21), (0, 3))]:
        sampler = MotionFocused(source=source)
        ds = ClipDataset(store, modalities=("rgb", source), spec=SPEC, sampler=sampler)
        energy, maps = sampler.statistics(ds, 0)
        assert set(np.flatnonzero(energy)) <= set(frames) and energy.argmax() in frames
        row, col = np.unravel_index(maps.sum(0).argmax(), maps.shape[1:])  # the 7 x 7 map's strongest cell
        assert corner[0] <= row < corner[1] and corner[0] <= col < corner[1]
    auto = MotionFocused()
    assert auto.resolve(ClipDataset(store, modalities=("rgb", "flow"), spec=SPEC, sampler=auto)) == "flow"

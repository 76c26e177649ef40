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
    motion_boundaries,
    motion_box,
    motion_focused_view,
    other_starts,
    required_coverage,
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
    starts = other_starts(40, 8, avoid=10, count=3, rng=rng)
    assert len(starts) == 3 and all(abs(s - 10) >= 8 and 0 <= s <= 32 for s in starts)
    assert other_starts(8, 8, avoid=0, count=2, rng=rng) == [0, 0]  # one possible start
    assert half_starts(40, 8, second=False) == (0, 12) and half_starts(40, 8, second=True) == (20, 32)


@pytest.fixture(scope="module")
def dataset(synth_store):
    return lambda sampler, modalities: ClipDataset(synth_store, modalities=modalities, spec=SPEC, sampler=sampler)


def test_future_motion_is_the_clip_after_under_the_same_crop(dataset):
    sampler = FutureMotion(future_len=4, gap=2, stride=1, negatives=3)
    ds = dataset(sampler, ("rgb", "keyframe", "mv"))
    rng = np.random.default_rng(5)
    sample = sampler(ds, 1, rng)
    assert sample["future"].shape == (2, 4, 8, 8) and sample["negatives"].shape == (3, 2, 4, 8, 8)
    assert set(sample["views"][0]) == {"rgb", "keyframe"}
    # Replay the sampler's draws: the future clip starts 2 frames after the RGB clip's last frame.
    rng = np.random.default_rng(5)
    from trainer.data import random_view

    video = ds.videos[1]
    start = int(rng.integers(0, max(1, video.num_frames - (SPEC.span - 1 + 2 + 4) + 1)))
    view = random_view(rng, video, SPEC, start)
    motion_spec = replace(SPEC, clip_len=4, stride=1, mv_channels=2)
    want = ds.read(1, replace(view, start=start + SPEC.span - 1 + 2), ("mv",), motion_spec)["mv"]
    torch.testing.assert_close(sample["future"], want)
    assert sample["future"].abs().mean() > 0.1


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

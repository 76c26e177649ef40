"""Masks on hand-built motion: the hidden fraction is the ratio, MGM's mask lands on and follows the moving region,
a warped mask follows a known translation exactly; the sampler reads a clip once for all its views."""

import numpy as np
import pytest
import torch

from mvtools.masking import (
    hidden_count,
    make_mask,
    mgm_mask,
    motion_share,
    token_displacement,
    token_energy,
    tube_mask,
    visible_persistence,
    warp_scores,
    warped_mask,
)


def square_energy(steps=4, size=8, side=2, x0=1, y0=2, speed=1) -> np.ndarray:
    """(T', H', W') energy 1 on a side x side square of tokens moving ``speed`` tokens right per step, 0 elsewhere."""
    energy = np.zeros((steps, size, size))
    for t in range(steps):
        energy[t, y0:y0 + side, x0 + speed * t:x0 + speed * t + side] = 1.0
    return energy


def test_hidden_count_is_the_ratio_and_keeps_one_token_each_way():
    assert hidden_count(196, 0.75) == 147 and hidden_count(64, 0.25) == 16
    assert hidden_count(4, 0.9) == 3 and hidden_count(4, 0.1) == 1  # never all hidden, never none
    for bad in (0.0, 1.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="lie in \\(0, 1\\)"):
            hidden_count(16, bad)


@pytest.mark.parametrize("kind", ["tube", "mgm", "warped"])
def test_every_mask_hides_exactly_the_ratio_at_every_step(kind):
    rng = np.random.default_rng(0)
    energy = rng.random((4, 8, 8))
    displacement = rng.normal(0, 0.7, (4, 8, 8, 2))
    mask = make_mask(kind, (4, 8, 8), 0.75, rng, energy=energy, displacement=displacement)
    assert mask.shape == (4, 8, 8) and mask.dtype == bool
    assert mask.reshape(4, -1).sum(1).tolist() == [48] * 4 and mask.mean() == 0.75


def test_tube_hides_the_same_places_at_every_step():
    mask = tube_mask((4, 6, 6), 0.5, np.random.default_rng(1))
    assert all(np.array_equal(mask[0], m) for m in mask) and mask[0].sum() == 18
    assert not np.array_equal(mask[0], tube_mask((4, 6, 6), 0.5, np.random.default_rng(2))[0])


def test_mgm_covers_the_moving_square_and_follows_it_exactly():
    energy = square_energy()
    mask = mgm_mask(energy, 4 / 64, np.random.default_rng(0))  # k = 4: the square itself, step by step
    assert np.array_equal(mask, energy > 0)
    wide = mgm_mask(energy, 16 / 64, np.random.default_rng(0))  # a disc of 16 tokens around the square
    for t in range(1, 4):
        assert np.array_equal(wide[t], np.roll(wide[0], t, axis=1))  # translated with it, one token per step
    assert motion_share(wide, energy) == 1.0 and wide[0, 2:4, 1:3].all()


def test_mgm_keeps_the_nearest_moving_step_s_centre_where_a_step_has_no_motion():
    energy = square_energy()
    energy[2] = 0.0  # an I-frame's tubelet: no vectors
    mask = mgm_mask(energy, 4 / 64, np.random.default_rng(0))
    assert np.array_equal(mask[[0, 1, 3]], energy[[0, 1, 3]] > 0)
    assert np.array_equal(mask[2], mask[1]) or np.array_equal(mask[2], mask[3])
    still = mgm_mask(np.zeros((3, 8, 8)), 0.25, np.random.default_rng(0))
    assert still.sum() == 3 * 16 and all(np.array_equal(still[0], m) for m in still)  # one random place


def moving_field(frames=8, h=32, w=32, vx=2.0, vy=0.0, box=None, iframes=()) -> np.ndarray:
    """A past-vector field (T, h, w, 2) at 4 px cells (``mv``'s layout): content moving (vx, vy) px per frame has
    past vectors (-vx, -vy) (reference - current), on ``box`` cells (y0, y1, x0, x1) or everywhere; zero on I-frames."""
    field = np.zeros((frames, h // 4, w // 4, 2))
    y0, y1, x0, x1 = box or (0, h // 4, 0, w // 4)
    field[:, y0:y1, x0:x1] = (-vx, -vy)
    field[list(iframes)] = 0.0
    return field


def test_token_energy_and_displacement_of_a_hand_built_field():
    field = moving_field(vx=2.0, box=(0, 4, 0, 4), iframes=(0,))  # the top-left 16 x 16 px moves 2 px per frame
    energy = token_energy(field, tubelet=2, patch=16, cell=4)
    assert energy.shape == (4, 2, 2)
    assert energy[1:, 0, 0].tolist() == [2.0] * 3 and energy[0, 0, 0] == 1.0  # step 0 averages in the I-frame
    assert energy[:, 1, :].max() == 0.0 and energy[:, 0, 1].max() == 0.0
    # stride 4, tubelet 2: 8 source frames between steps, 16 px: the content was 1 token to the left a step ago
    shift = token_displacement(field, 2, 16, 4, frames_per_step=8)
    assert shift[:, 0, 0].tolist() == [[-1.0, 0.0]] * 4  # the I-frame left out of step 0's mean
    assert np.abs(shift[:, 1]).max() == 0.0
    flow = np.zeros((8, 32, 32, 2))
    flow[..., 0] = 2.0  # forward flow: the same motion seen from the other side
    assert np.allclose(token_displacement(flow, 2, 16, 1, frames_per_step=8, backward=False), shift[1, 0, 0])


def test_warped_mask_follows_a_known_translation_exactly():
    # everything moves right one token per step: each step's visible tokens are the previous step's, one to the right
    displacement = np.zeros((4, 8, 8, 2))
    displacement[..., 0] = -1.0
    scores = np.full((8, 8), 0.9)
    visible = [(1, 0), (5, 1), (2, 2), (7, 3), (0, 1), (3, 0), (6, 2), (4, 4)]  # (y, x), all within reach of the edge
    for i, (y, x) in enumerate(visible):
        scores[y, x] = 0.01 * i
    mask = warped_mask(displacement, 56 / 64, np.random.default_rng(0), scores=scores)
    for t in range(4):
        assert sorted(zip(*np.nonzero(~mask[t]))) == sorted((y, x + t) for y, x in visible)
    assert visible_persistence(mask, displacement) == 1.0
    tube = tube_mask((4, 8, 8), 56 / 64, np.random.default_rng(0))
    assert visible_persistence(tube, displacement) < 0.5  # still places under moving content


def test_warping_is_bilinear_and_scores_what_enters_from_outside_as_hidden():
    scores = np.arange(16, dtype=float).reshape(4, 4) / 100
    half = np.zeros((4, 4, 2))
    half[..., 0] = 0.5
    warped = warp_scores(scores, half)
    assert warped[0, 0] == pytest.approx((scores[0, 0] + scores[0, 1]) / 2)
    assert warped[0, 3] == pytest.approx((scores[0, 3] + 1.0) / 2)  # half of its source is outside
    back = np.zeros((4, 4, 2))
    back[..., 0] = -1.0
    assert warp_scores(scores, back)[:, 0].tolist() == [1.0] * 4


def test_warped_masks_follow_the_vectors_of_a_moving_object():
    # a 16 x 16 px object moving 2 px per frame right, stride 4 (one token per step) over a still background
    field = np.zeros((8, 24, 24, 2))
    for f in range(8):
        x0 = 4 + f // 2 * 4  # its 4 px cells at this frame's step
        field[f, 4:8, x0:x0 + 4] = (-2.0, 0.0)
    displacement = token_displacement(field, 2, 16, 4, frames_per_step=8)
    assert displacement[1, 1, 2].tolist() == [-1.0, 0.0] and displacement[1, 4, 4].tolist() == [0.0, 0.0]
    scores = np.random.default_rng(3).uniform(0.5, 1.0, (6, 6))
    scores[1, 1], scores[4, 4] = 0.0, 0.1  # the object's token and a background token: both shown first
    mask = warped_mask(displacement, 0.75, np.random.default_rng(3), scores=scores)
    assert mask.reshape(4, -1).sum(1).tolist() == [27] * 4
    assert all(not mask[t, 1, 1 + t] and not mask[t, 4, 4] for t in range(4))  # shown where their content is


# --- the sampler ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def moving(tmp_path_factory):
    from stores import moving_textures, write_store

    return write_store(tmp_path_factory.mktemp("masking") / "s.zarr", moving_textures(videos=4, size=64))


def test_sampler_gives_views_and_their_masks(moving):
    from trainer.data import ClipDataset, ClipSpec
    from trainer.masking import MaskedClips

    spec = ClipSpec(4, 2, 64, scale=(1.0, 1.0), jitter=0.0, grayscale=0.0, flip=False)
    sampler = MaskedClips("mgm", ratio=0.25, patch=16, tubelet=2, repeats=3)
    data = ClipDataset(moving, modalities=("rgb", "mv"), views=1, spec=spec, sampler=sampler)
    sample = data[(1, 0)]
    assert len(sample["views"]) == 3 and sample["mask"].shape == (3, 2 * 4 * 4)
    assert set(sample["views"][0]) == {"rgb"}  # the motion field went into the mask
    assert all(torch.equal(v["rgb"], sample["views"][0]["rgb"]) for v in sample["views"])  # no augmentation here
    assert sample["mask"].sum(1).tolist() == [8, 8, 8] and sample["mask"].dtype == torch.bool
    again = data[(1, 0)]
    assert torch.equal(sample["mask"], again["mask"])  # from (seed, epoch, index) alone
    # the hidden tokens hold the clip's motion: the moving square covers 4 of 16 tokens a step
    field = data.read(1, _view_of(data, 1), ("mv",))["mv"][:2].permute(1, 2, 3, 0).numpy()
    energy = token_energy(field, 2, 16, 4)
    assert motion_share(sample["mask"][0].reshape(2, 4, 4).numpy(), energy) > 0.5


def _view_of(data, video):
    """The first view the sampler drew for item (video, epoch 0) (the same rng sequence)."""
    from trainer.data import random_view

    return random_view(np.random.default_rng([data.seed, 0, video]), data.videos[video], data.spec)


def test_repeated_views_read_the_frames_once(synth_store):
    """Four views of one clip (repeated sampling) make the requests of one view, and each keeps its own crop."""
    from trainer.data import ClipDataset, ReadOnce, random_view, read_view

    ds = ClipDataset(synth_store, modalities=("rgb", "mv"), clip_len=8, stride=2, size=32)
    video, spec, group = ds.videos[0], ds.spec, ds.group(0)
    source = group.reader.source
    rng = np.random.default_rng(0)
    first = random_view(rng, video, spec)
    views = [first] + [random_view(rng, video, spec, first.start) for _ in range(3)]
    for v in views:  # metadata and shard indexes first: they are read once per process, not what is counted
        read_view(group, video, v, ("rgb", "mv"), spec)
    before = source.requests
    read_view(group, video, views[0], ("rgb", "mv"), spec)
    once = source.requests - before
    before = source.requests
    kept = ReadOnce(group)
    out = [read_view(kept, video, v, ("rgb", "mv"), spec) for v in views]
    assert once > 0 and source.requests - before == once  # four views, one clip's requests
    assert not torch.equal(out[0]["rgb"], out[1]["rgb"])  # each its own crop
    plain = read_view(group, video, views[1], ("rgb", "mv"), spec)
    torch.testing.assert_close(plain["mv"], out[1]["mv"], rtol=0, atol=0)


def test_sampler_refuses_bad_settings():
    from trainer.masking import MaskedClips

    with pytest.raises(ValueError, match="mask must be one of tube, mgm, warped"):
        MaskedClips("random")
    with pytest.raises(ValueError, match="whole 4 px motion-vector cells"):
        MaskedClips("mgm", patch=6)
    with pytest.raises(ValueError, match="at least 1"):
        MaskedClips(repeats=0)

import torch
import torch.nn.functional as F

from trainer.data import ClipDataset, ClipSpec
from trainer.methods.fima import FIMA, cell_centres, foreground, near_cells


def test_cell_centres_follow_the_crop_box_and_its_flip():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 60.0]] * 2)
    flips = torch.tensor([False, True])
    centres = cell_centres(boxes, flips, (2, 2))  # cells of 20 x 20 stored pixels
    torch.testing.assert_close(centres[0], torch.tensor([[20.0, 30.0], [40.0, 30.0], [20.0, 50.0], [40.0, 50.0]]))
    torch.testing.assert_close(centres[1], torch.tensor([[40.0, 30.0], [20.0, 30.0], [40.0, 50.0], [20.0, 50.0]]))


def test_near_cells_match_the_same_image_location_across_views():
    a = torch.tensor([[0.0, 0.0, 40.0, 40.0]])
    b = torch.tensor([[20.0, 0.0, 60.0, 40.0]])  # shifted right by one cell of 20 px
    no = torch.tensor([False])
    near = near_cells(cell_centres(a, no, (2, 2)), cell_centres(b, no, (2, 2)), a, b, (2, 2), radius=0.7)[0]
    # a's right column (x = 30) is b's left column (x = 30); a's left column has no partner.
    assert near.tolist() == [[False, False, False, False], [True, False, False, False],
                             [False, False, False, False], [False, False, True, False]]


def test_foreground_is_above_the_median_of_each_step():
    rgb = torch.zeros(1, 2, 1, 2, 2)
    diff = torch.zeros(1, 2, 1, 2, 2)
    rgb[0, :, 0, 0, 0] = 1.0
    diff[0, :, 0, 1, 1] = 3.0
    assert foreground(rgb, diff)[0, 0].tolist() == [True, False, False, True]


def method_and_batch(store, n=4, **kw):
    torch.manual_seed(0)
    method = FIMA(backbone="tiny", dim=16, dense_dim=16, queue=8, motion_queue=8, width=16, layers=1, **kw)
    ds = ClipDataset(store, modalities=method.modalities, views=method.views,
                     spec=ClipSpec(clip_len=4, stride=2, size=32), sampler=method.sampler())
    return method, torch.utils.data.default_collate([ds[i] for i in range(n)])


def test_dense_loss_picks_the_coordinate_matched_cell(synth_store):
    method, _ = method_and_batch(synth_store)
    b, dd, t, h, w = 1, 16, 1, 2, 2
    target = F.normalize(torch.randn(b, dd, t, h, w, generator=torch.Generator().manual_seed(0)), dim=1)
    views = [{"box": torch.tensor([[0.0, 0.0, 40.0, 40.0]]), "flip": torch.tensor([False])},
             {"box": torch.tensor([[0.0, 0.0, 40.0, 40.0]]), "flip": torch.tensor([True])}]  # mirrored columns
    cells = target[:, :, 0].flatten(2).transpose(1, 2)  # (1, 4, dd): b's targets in b's cell order
    everything = torch.ones(b, t, h * w, dtype=torch.bool)
    matched = cells[:, [1, 0, 3, 2]][:, None]  # a's cell u sits where b's mirrored cell does
    loss_matched = method.dense_loss(matched, target, everything, everything, *views)
    loss_unmatched = method.dense_loss(cells[:, None], target, everything, everything, *views)
    assert loss_matched < loss_unmatched
    # Background cells of b are no positives: with none left, there is nothing to match.
    nothing = torch.zeros_like(everything)
    assert method.dense_loss(matched, target, everything, nothing, *views).item() == 0.0


def test_frame_loss_wants_the_sub_clip_that_spans_the_step(synth_store):
    method, _ = method_and_batch(synth_store)
    halves = [F.normalize(torch.randn(2, 16, generator=torch.Generator().manual_seed(i)), dim=1) for i in (1, 2)]
    right = torch.stack(halves, 1)  # step 0 predicts half 0, step 1 half 1
    assert method.frame_loss(right, halves) < method.frame_loss(right.flip(1), halves)


def test_fima_terms_on_real_clips(synth_store):
    method, batch = method_and_batch(synth_store)
    assert batch["views"][0]["rgb"].shape == (4, 3, 5, 32, 32)
    terms = method(batch)
    assert set(terms) == {"inst", "dense", "frame"} and all(torch.isfinite(v) for v in terms.values())
    assert terms["dense"] > 0 and method.encoder is method.backbone

import torch
import torch.nn.functional as F

from trainer.data import ClipDataset, ClipSpec
from trainer.methods.mcd import MCD, FuturePredictor, future_motion_loss, tokens


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_future_motion_loss_prefers_the_cell_at_the_right_position():
    target = unit(2, 4, 16)
    negatives = unit(2, 3, 4, 16, seed=1)
    right = future_motion_loss(target, target, negatives)
    shifted = future_motion_loss(target.roll(1, dims=1), target, negatives)  # each prediction one cell off
    assert right < shifted
    # The negatives count: a prediction that equals a negative clip's cell scores worse than the target.
    assert future_motion_loss(negatives[:, 0], target, negatives) > right


def test_future_motion_loss_is_in_batch_nce_over_cells_plus_negatives():
    from trainer.losses import info_nce

    pred, target, negatives = unit(2, 3, 8), unit(2, 3, 8, seed=1), unit(5, 8, seed=2)
    flat_p, flat_t = pred.reshape(6, 8), target.reshape(6, 8)
    want = sum(info_nce(flat_p[i:i + 1], flat_t[i:i + 1], torch.cat([flat_t[:i], flat_t[i + 1:], negatives]), 0.1)
               for i in range(6)) / 6
    torch.testing.assert_close(future_motion_loss(pred, target, negatives), want)


def test_predictor_outputs_one_feature_per_target_cell_at_any_grid():
    predictor = FuturePredictor(in_dim=32, out_dim=8, width=16, layers=1, heads=2)
    features = torch.randn(3, 32, 2, 4, 4)
    assert predictor(features, (1, 2, 2)).shape == (3, 4, 8)
    assert predictor(features, (2, 3, 5)).shape == (3, 30, 8)
    assert tokens(features).shape == (3, 32, 32)


def test_mcd_reads_rgb_keyframe_and_motion_vectors_and_exports_the_clip_encoder(synth_store):
    torch.manual_seed(0)
    method = MCD(backbone="tiny", dim=16, motion_backbone="tiny", motion_args={"widths": [8, 16]},
                 iframe_args={"blocks": [1, 1, 1, 1], "widths": [8, 8, 16, 16]}, width=16, layers=1, future_len=4)
    ds = ClipDataset(synth_store, modalities=method.modalities, views=method.views,
                     spec=ClipSpec(clip_len=4, stride=2, size=32), sampler=method.sampler())
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    assert batch["future"].shape == (4, 2, 4, 8, 8) and batch["negatives"].shape == (4, 3, 2, 4, 8, 8)
    terms = method(batch)
    assert set(terms) == {"ctx", "mot"} and all(torch.isfinite(v) for v in terms.values())
    assert method.encoder is method.clip
    assert method.embed(batch["views"][0]).shape == (4, method.clip.out_dim)


def test_the_iframe_has_the_clips_crop_and_flip_but_its_own_colour_jitter(tmp_path):
    import numpy as np
    from stores import write_store

    ramp = np.broadcast_to(np.linspace(60, 160, 48).astype(np.uint8)[None, :, None], (48, 48, 3))
    frames = np.broadcast_to(ramp, (40, 48, 48, 3)).copy()  # every frame, I-frames included, is the same ramp
    keys = np.array([0, 10, 20, 30], np.int32)
    store = write_store(tmp_path / "ramp.zarr", {"v": {"frames": frames, "mv": np.zeros((40, 12, 12, 4), np.float16),
                                                       "keyframes": frames[keys], "keyframe_index": keys}})
    method = MCD(backbone="tiny", future_len=4)
    ds = ClipDataset(store, modalities=method.modalities, sampler=method.sampler(),
                     spec=ClipSpec(clip_len=4, stride=2, size=32, jitter=0.4, grayscale=0.0))
    for epoch in range(8):
        view = ds[(0, epoch)]["views"][0]
        clip_frame, iframe = view["rgb"][:, 0].flatten(), view["keyframe"].flatten()
        # Brightness and contrast are affine maps of the pixels: the same crop and flip give a correlation of 1
        # (-1 for a mirrored ramp), and own jitter gives another mean.
        assert np.corrcoef(clip_frame.numpy(), iframe.numpy())[0, 1] > 0.999
        assert (clip_frame.mean() - iframe.mean()).abs() > 1e-3


def test_dense_targets_on_the_authors_grid_at_paper_scale():
    from pathlib import Path

    from trainer.loop import TrainConfig, build_method

    config = TrainConfig.from_yaml(Path(__file__).parents[1] / "pipelines" / "train" / "mcd.yaml")
    config.method_args["motion_args"] = {**config.method_args["motion_args"], "width": 0.125}  # same grid, cheaper
    config.backbone_args = {"width": 0.125}
    method = build_method(config)
    assert method.target_grid(112) == (1, 7, 7)  # the authors' tgt_numel 1 x 7 x 7 (4-pixel cells gave 1 x 2 x 2)
    assert method.clip.forward_features(torch.zeros(1, 3, 16, 112, 112)).shape[3:] == (7, 7)  # the clip's grid

import pytest
import torch

from trainer.data import ClipDataset, ClipSpec
from trainer.methods.maclr import MaCLR

SPEC = ClipSpec(clip_len=4, stride=2, size=32)


def batch_for(method, store, n=4):
    ds = ClipDataset(store, modalities=method.modalities, views=method.views, spec=SPEC)
    return torch.utils.data.default_collate([ds[i] for i in range(n)])


@pytest.mark.parametrize("motion, channels", [("mv", 2), ("residual", 3)])
def test_motion_pathway_reads_the_chosen_modality_at_a_fraction_of_the_width(synth_store, motion, channels):
    torch.manual_seed(0)
    method = MaCLR(backbone="tiny", motion=motion, motion_width=0.5, queue=8, dim=16)
    assert method.modalities == ("rgb", motion)
    assert method.motion_path.backbone.stem[0].in_channels == channels
    assert method.motion_path.backbone.stage_dims == [8, 16, 32] and method.visual.backbone.stage_dims == [16, 32, 64]
    terms = method(batch_for(method, synth_store))
    assert set(terms) == {"vis", "cross", "mot"} and all(torch.isfinite(v) for v in terms.values())
    # The motion pathway is dropped: the exported encoder is the visual backbone, on RGB alone.
    assert method.encoder is method.visual.backbone and method.eval_modalities == ("rgb",)


def test_beta_zero_drops_the_motion_instance_term_and_queues_fill_with_both_views(synth_store):
    torch.manual_seed(0)
    method = MaCLR(backbone="tiny", beta=0.0, queue=8, dim=16)
    terms = method(batch_for(method, synth_store))
    assert set(terms) == {"vis", "cross"}
    assert method.queue_v.ptr.item() == 8 % 8 and method.queue_m.ptr.item() == 0  # 2 views x 4 keys, wrapped
    before = method.visual.key_backbone.stem[0].weight.clone()
    with torch.no_grad():
        method.visual.backbone.stem[0].weight.add_(1.0)
    method.after_step()
    torch.testing.assert_close(method.visual.key_backbone.stem[0].weight,
                               0.999 * before + 0.001 * method.visual.backbone.stem[0].weight)


def test_unknown_motion_modality_is_refused():
    with pytest.raises(ValueError, match="motion must be one of"):
        MaCLR(motion="depth")


def test_the_two_clips_start_half_a_second_to_ten_seconds_apart(tmp_path):

    from stores import decode_index, index_frames, write_store

    from trainer.samplers import partner_starts

    frames = index_frames(200, step=1)  # 200 frames at 10 fps: 0.5-10 s is 5-100 frames
    store = write_store(tmp_path / "long.zarr", {"long": {"frames": frames, "fps": 10.0},
                                                 "short": {"frames": frames[:12], "fps": 10.0},
                                                 "tiny": {"frames": frames[:8], "fps": 10.0}})
    method = MaCLR(backbone="tiny", queue=0)
    spec = ClipSpec(clip_len=4, stride=2, size=16, jitter=0.0, grayscale=0.0)  # 7-frame clips
    ds = ClipDataset(store, modalities=("rgb",), views=2, spec=spec, sampler=method.sampler())

    def starts(video, epoch):
        return [int(decode_index(v["rgb"], step=1)[0]) for v in ds[(video, epoch)]["views"]]

    gaps = [abs(a - b) for a, b in (starts(0, e) for e in range(200))]
    assert min(gaps) >= 5 and max(gaps) <= 100 and min(gaps) < 15 and max(gaps) > 85
    assert all(sorted(starts(1, e)) == [0, 5] for e in range(5))  # 12 frames: the one pair 0.5 s apart
    assert all(sorted(starts(2, e)) == [0, 1] for e in range(5))  # too short for 0.5 s: the farthest pair
    assert list(partner_starts(40, 7, 10, lo=5, hi=8)) == [2, 3, 4, 5, 15, 16, 17, 18]

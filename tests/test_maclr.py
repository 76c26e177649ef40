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

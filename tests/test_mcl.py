import torch

from trainer.data import ClipDataset, ClipSpec
from trainer.methods.mcl import MCL

SPEC = ClipSpec(clip_len=4, stride=2, size=32)


def batch_for(method, store, n=4):
    ds = ClipDataset(store, modalities=method.modalities, views=method.views, spec=SPEC, sampler=method.sampler())
    return torch.utils.data.default_collate([ds[i] for i in range(n)])


def test_mcl_terms_and_the_alignment_loss_trains_the_backbone_through_double_backprop(synth_store):
    torch.manual_seed(0)
    method = MCL(backbone="tiny", queue=8, dim=16, order_dim=8)
    batch = batch_for(method, synth_store)
    assert len(batch["views"]) == 4 and batch["motion_map"].shape == (4, 4, 8, 8)
    terms = method(batch)
    assert set(terms) == {"inter", "intra", "order", "mal"} and all(torch.isfinite(v) for v in terms.values())
    # L_MAL alone reaches the backbone (through the gradient map) and the inter head (through dS/dA).
    terms["mal"].backward()
    stem = method.online.backbone.stem[0].weight.grad
    assert stem is not None and stem.abs().sum() > 0
    assert method.online.inter[0].weight.grad.abs().sum() > 0
    assert method.online.intra[0].weight.grad is None  # the intra head plays no part in the map


def test_mal_is_zero_when_the_motion_map_is_the_networks_own_gradcam_and_grows_when_moved(synth_store):
    import torch.nn.functional as F

    from trainer.losses import gradcam
    from trainer.models import pool

    # A random network's Grad-CAM can be all zero for a clip (ReLU of negative evidence); the claim is about
    # maps that exist, so take the first initialisation whose map is non-zero for every clip of the batch.
    for seed in range(20):
        torch.manual_seed(seed)
        method = MCL(backbone="tiny", queue=0, dim=16, order_dim=8)
        batch = batch_for(method, synth_store)
        q, k = batch["views"][0]["rgb"], batch["views"][1]["rgb"]
        activation = method.online.backbone.forward_features(q)
        with torch.no_grad():
            zk = method.target.embed(method.target.backbone(k))[0]
        grad, = torch.autograd.grad((method.online.embed(pool(activation))[0] * zk).sum(), activation)
        attention = gradcam(activation, grad).detach()  # (B, 1, 2, 2): Grad-CAM of S = z_q . z_k, by hand
        if (attention.flatten(1).sum(1) > 0).all():
            break
    assert (attention.flatten(1).sum(1) > 0).all()
    # Nearest upsampling by whole factors to the map's (4, 8, 8): MCL pools it back to exactly the attention.
    batch["motion_map"] = F.interpolate(attention[:, None], size=batch["motion_map"].shape[1:])[:, 0]
    assert method(batch)["mal"].item() < 1e-5
    batch["motion_map"] = batch["motion_map"].roll(4, dims=3)  # the same map, half a frame to the side
    assert method(batch)["mal"].item() > 0.05


def test_optional_terms_can_be_switched_off_and_motion_source_is_declared(synth_store):
    method = MCL(backbone="tiny", queue=0, order_weight=0, mal_weight=0, dim=16)
    assert set(method(batch_for(method, synth_store))) == {"inter", "intra"}
    assert method.order_classifier is None
    assert MCL(motion="flow").modalities == ("rgb", "flow") and MCL().modalities == ("rgb", "mv")


def test_target_encoder_is_the_ema_of_the_online_one():
    method = MCL(backbone="tiny", queue=8, momentum=0.5)
    before = method.target.inter[0].weight.clone()
    with torch.no_grad():
        method.online.inter[0].weight.add_(2.0)
    method.after_step()
    torch.testing.assert_close(method.target.inter[0].weight, 0.5 * before + 0.5 * method.online.inter[0].weight)


def test_without_the_order_term_no_order_head_is_built_and_every_parameter_trains(synth_store):
    torch.manual_seed(0)
    method = MCL(backbone="tiny", queue=8, dim=16, order_dim=8, order_weight=0)
    sum(method(batch_for(method, synth_store)).values()).backward()
    assert method.online.order is None and method.target.order is None
    untrained = [n for n, p in method.named_parameters() if p.requires_grad and p.grad is None]
    assert not untrained  # DDP refuses parameters without gradients (issue: order_weight 0 crashed under DDP)

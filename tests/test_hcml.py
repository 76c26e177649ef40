import json

import pytest
import torch

from trainer.data import ClipDataset, ClipSpec
from trainer.methods.hcml import HCML, HierarchicalNet, motion_loss, next_step_pairs, temporal_difference
from trainer.models import build

SPEC = ClipSpec(clip_len=8, stride=2, size=32)


def test_temporal_difference_is_zero_at_the_first_step():
    x = torch.tensor([1.0, 4.0, 9.0]).reshape(1, 1, 3, 1, 1)
    assert temporal_difference(x).flatten().tolist() == [0.0, 3.0, 5.0]


def test_next_step_pairs_put_level_l_at_t_against_the_level_below_at_t_plus_1():
    below = torch.arange(4.0).reshape(1, 1, 4, 1, 1).expand(1, 1, 4, 4, 4)  # value = step index
    upper = torch.arange(2.0).reshape(1, 1, 2, 1, 1).expand(1, 1, 2, 2, 2) * 10  # 2 steps, coarser grid
    pred, target = next_step_pairs(upper, below)
    assert pred.shape == target.shape == (3 * 2 * 2, 1)  # steps 0..2 of the finer time, 2 x 2 cells
    assert target[:, 0].reshape(3, 4)[:, 0].tolist() == [1.0, 2.0, 3.0]
    assert pred[:, 0].reshape(3, 4)[:, 0].tolist() == [0.0, 0.0, 10.0]  # upper step t covers below 2t, 2t+1
    single = below[:, :, :1]
    assert next_step_pairs(upper[:, :, :1], single)[1].shape == (4, 1)  # one step: predicted at that step


def test_motion_loss_rewards_a_predictor_that_knows_the_next_step():
    g = torch.Generator().manual_seed(0)
    below = torch.randn(2, 8, 4, 2, 2, generator=g)
    upper = torch.cat([below[:, :, 1:], torch.randn(2, 8, 1, 2, 2, generator=g)], 2)  # upper(t) = below(t+1)
    identity = torch.nn.Conv3d(8, 8, 1, bias=False)
    with torch.no_grad():
        identity.weight.copy_(torch.eye(8)[:, :, None, None, None])
    good = motion_loss([below, upper], torch.nn.ModuleList([identity]), positions=64)
    bad = motion_loss([below, upper.flip(2)], torch.nn.ModuleList([identity]), positions=64)
    assert good < bad


def test_hierarchical_net_builds_motion_at_every_stage_and_fuses_it():
    net = HierarchicalNet(build("tiny", 3), "framediff", motion_width=0.5)
    x = torch.randn(2, 3, 8, 32, 32)
    maps, motions = net.forward_levels(x)
    assert [m.shape[1] for m in maps] == [16, 32, 64] and [m.shape[1] for m in motions] == [8, 8, 16, 32]
    assert [m.shape[2] for m in motions] == [8, 8, 4, 2]
    assert net(x).shape == (2, 64)
    # A still clip has no temporal difference: away from the zero-padded ends (4 steps of receptive field),
    # level 1's motion features are the same at every step; a moving clip's are not.
    x = torch.randn(2, 3, 16, 32, 32)
    still = x[:, :, :1].expand_as(x).contiguous()
    m1 = net.eval().forward_levels(still)[1][1]
    torch.testing.assert_close(m1[:, :, 7], m1[:, :, 8])
    moving = net.forward_levels(x)[1][1]
    assert (moving[:, :, 7] - moving[:, :, 8]).abs().max() > 1e-3


@pytest.mark.parametrize("level0", ["framediff", "mv"])
def test_hcml_trains_and_embeds_with_each_level0(synth_store, level0):
    torch.manual_seed(0)
    method = HCML(backbone="tiny", level0=level0, motion_width=0.5, positions=64)
    ds = ClipDataset(synth_store, modalities=method.modalities, views=method.views, spec=SPEC)
    batch = torch.utils.data.default_collate([ds[i] for i in range(2)])
    terms = method(batch)
    assert set(terms) == {"motion"} and torch.isfinite(terms["motion"])
    assert method.eval_modalities == (("rgb",) if level0 == "framediff" else ("rgb", "mv"))
    assert method.eval().embed(batch["views"][0]).shape == (2, 64)


def test_instance_term_makes_hcml_an_auxiliary_loss(synth_store):
    torch.manual_seed(0)
    method = HCML(backbone="tiny", instance=0.5, queue=8, dim=16, positions=64)
    assert method.views == 2
    ds = ClipDataset(synth_store, modalities=method.modalities, views=method.views, spec=SPEC)
    terms = method(torch.utils.data.default_collate([ds[i] for i in range(2)]))
    assert set(terms) == {"motion", "inst"} and method.queue.ptr.item() == 4


@pytest.mark.parametrize("level0", ["framediff", "mv"])
def test_finetuning_an_hcml_run_carries_its_motion_modules(synth_store, level0, tmp_path, capsys):
    """The paper embeds the motion modules in the backbone: fine-tuning starts from that whole network (at lr 0 its
    weights stay the pretrained ones, motion modules included), tests it multi-view with its level-0 input, and
    ``export`` writes either form."""
    from mvtools.cli import main
    from trainer.finetune import finetune
    from trainer.loop import TrainConfig, load_checkpoint, train
    from trainer.models import build

    run = tmp_path / "run"
    train(TrainConfig(method="hcml", store=str(synth_store), out=str(run), steps=2, batch_size=2, workers=0,
                      clip_len=4, size=32, method_args={"level0": level0, "positions": 64}), progress=False)
    out = tmp_path / "ft"
    result = finetune(synth_store, out, checkpoint=run / "checkpoint.pt", progress=False,
                      test_views={"clips": 1, "crops": 1},
                      overrides={"steps": 2, "lr": 0.0, "batch_size": 2, "workers": 0, "checkpoint_every": 2})
    pre, tuned = (load_checkpoint(p)["model"] for p in (run / "checkpoint.pt", out / "checkpoint.pt"))
    weights = [k for k in tuned if k.startswith("backbone.") and "running" not in k and "num_batches" not in k]
    assert any(k.startswith("backbone.levels.") for k in weights) and "backbone.motion0.0.weight" in weights
    assert all(torch.equal(tuned[k], pre["net." + k.removeprefix("backbone.")]) for k in weights)
    config = load_checkpoint(out / "checkpoint.pt")["config"]
    assert config["method_args"]["motion_modules"] == {"level0": level0, "motion_width": 0.25}
    assert result["test_videos"] == 2 and result["weights"].endswith("(hcml)")
    assert main(["export", "--checkpoint", str(run / "checkpoint.pt"), "-o", str(tmp_path / "b.pt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["form"] == "backbone"
    assert list(torch.load(tmp_path / "b.pt", weights_only=True)) == list(build("tiny").state_dict())
    assert main(["export", "--checkpoint", str(run / "checkpoint.pt"), "-o", str(tmp_path / "w.pt"), "--whole",
                 "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written["form"] == "whole" and written["motion_modules"]["level0"] == level0
    whole = torch.load(tmp_path / "w.pt", weights_only=True)
    net = HierarchicalNet(build("tiny"), level0)
    net.load_state_dict(whole)  # strictly: the exported network rebuilds from its form


def test_a_vit_has_no_stages_for_motion_modules():
    with pytest.raises(ValueError, match="'vit_tiny' has no stages"):
        HCML(backbone="vit_tiny")

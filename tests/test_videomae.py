"""The masked-modelling methods (videomae, mgm, mask: warped): names, the loss on hidden tokens, repeated sampling,
evaluation, and bad input that exits 2."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mvtools.cli import main
from trainer.loop import TrainConfig, TrainError, build_method, train
from trainer.methods.mgm import MGM
from trainer.methods.videomae import VideoMAE

REFERENCE = json.loads((Path(__file__).with_name("data") / "videomae_reference.json").read_text())


def test_the_method_holds_videomae_for_pretraining():
    method = VideoMAE(backbone="vit_s16")
    names = [[k.removeprefix("mae."), list(v.shape)] for k, v in method.state_dict().items()]
    assert names == REFERENCE["models"]["vit_s16"]["VideoMAEForPreTraining"]
    assert method.encoder is method.mae.videomae and method.modalities == ("rgb",)
    assert MGM().modalities == ("rgb", "mv") and MGM().ratio == 0.75 and VideoMAE().ratio == 0.9
    assert VideoMAE(mask="warped", motion="flow").modalities == ("rgb", "flow")


def test_mask_token_biases_and_norms_are_not_decayed():
    method = VideoMAE()
    decay, no_decay = method.param_groups(0.05)
    names = {id(p): n for n, p in method.named_parameters()}
    assert {names[id(p)] for p in no_decay["params"]} >= {"mae.mask_token", "mae.decoder.norm.weight",
                                                           "mae.videomae.encoder.layer.0.attention.attention.query.bias"}
    assert all(p.ndim > 1 for p in decay["params"]) and decay["weight_decay"] == 0.05
    assert no_decay["weight_decay"] == 0.0 and len(decay["params"]) + len(no_decay["params"]) == \
        len(list(method.parameters()))


def test_loss_is_over_hidden_tokens_only():
    """Zero predictions against per-token normalised targets: each hidden token of random pixels contributes
    (P - 1) / P (Bessel's correction over its P pixels), each constant token 0. Visible tokens are constant, hidden
    ones random, so the loss is (P - 1) / P only if it is taken over the hidden tokens alone."""
    torch.manual_seed(0)
    method = VideoMAE(backbone="vit_tiny")
    with torch.no_grad():
        method.mae.decoder.head.weight.zero_()
        method.mae.decoder.head.bias.zero_()
    mask = torch.zeros(2, 2 * 2 * 2, dtype=torch.bool)  # 4 frames x 32 x 32: 2 x 2 x 2 tokens
    mask[0, [0, 3, 5, 6]] = True
    mask[1, [1, 2, 4, 7]] = True
    x = torch.zeros(2, 3, 4, 32, 32)
    noise = torch.randn(2, 3, 4, 32, 32)
    for b in range(2):
        for i in torch.nonzero(mask[b])[:, 0].tolist():
            t, y, xx = i // 4, i // 2 % 2, i % 2
            x[b, :, 2 * t:2 * t + 2, 16 * y:16 * y + 16, 16 * xx:16 * xx + 16] = \
                noise[b, :, 2 * t:2 * t + 2, 16 * y:16 * y + 16, 16 * xx:16 * xx + 16]
    loss = method({"views": [{"rgb": x}], "mask": mask[:, None]})["recon"]
    p = 2 * 16 * 16
    assert loss.item() == pytest.approx((p - 1) / p, rel=1e-4)


def test_repeated_views_each_bring_their_mask(synth_store):
    from trainer.data import ClipDataset, ClipSpec

    torch.manual_seed(0)
    method = MGM(backbone="vit_tiny", repeated_sampling=3, ratio=0.5)
    data = ClipDataset(synth_store, modalities=method.modalities, views=1, spec=ClipSpec(4, 2, 32),
                       sampler=method.sampler())
    batch = torch.utils.data.default_collate([data[i] for i in range(2)])
    assert len(batch["views"]) == 3 and batch["mask"].shape == (2, 3, 8)
    assert batch["mask"].sum(-1).eq(4).all()  # 2 of 4 tokens at each of 2 steps
    terms = method(batch)
    terms["recon"].backward()
    assert torch.isfinite(terms["recon"]) and method.mae.mask_token.grad.abs().sum() > 0


def tiny(method, store, out, **kw) -> TrainConfig:
    base = dict(store=str(store), out=str(out), steps=2, batch_size=2, workers=0, checkpoint_every=2, clip_len=4,
                size=32)
    return TrainConfig.from_yaml(f"pipelines/train/{method}_tiny.yaml", **{**base, **kw})


def test_a_pretrained_vit_is_evaluated_like_any_encoder(synth_store, tmp_path):
    from trainer.evaluate import evaluate

    train(tiny("mgm", synth_store, tmp_path), progress=False)
    result = evaluate(tmp_path / "checkpoint.pt", synth_store, clips=2, workers=0)
    assert result["method"] == "mgm" and result["backbone"] == "vit_tiny" and result["step"] == 2
    assert result["train_videos"] + result["test_videos"] == 4


def write(tmp_path, name, **fields) -> str:
    recipe = TrainConfig.from_yaml("pipelines/train/videomae_tiny.yaml")
    text = {k: v for k, v in recipe.__dict__.items() if k not in ("store", "out")}
    text.update(fields)
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(text))  # JSON is YAML
    return str(path)


def test_bad_settings_exit_2_naming_the_problem(synth_store, tmp_path, capsys):
    args = ["--store", str(synth_store), "--workers", "0", "--steps", "1", "--batch-size", "2", "--quiet"]
    cases = [
        (write(tmp_path, "ratio", method_args={"ratio": 1.5}), "ratio must lie in (0, 1), got 1.5"),
        (write(tmp_path, "odd", clip_len=7), "a clip of 7 frames x 64 x 64 px is not divided by the tubelet 2"),
        (write(tmp_path, "cnn", backbone="tiny"), "masked modelling needs a ViT backbone"),
        (write(tmp_path, "kind", method_args={"mask": "random"}), "mask must be one of tube, mgm, warped"),
    ]
    for recipe, message in cases:
        out = tmp_path / ("run_" + recipe.rsplit("/", 1)[-1])
        assert main(["train", "--config", recipe, "--out", str(out), *args]) == 2, recipe
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
        assert not out.exists()


def test_motion_masks_on_a_store_without_vectors_exit_2_naming_the_flag(synth_dir, tmp_path, capsys):
    from mvtools.extract import ExtractConfig, extract

    frames_only = tmp_path / "frames.zarr"
    extract(synth_dir, frames_only, ExtractConfig(modalities=("frames",)), progress=False)
    for recipe in ("pipelines/train/mgm_tiny.yaml", "pipelines/train/mgmae_tiny.yaml"):
        out = tmp_path / "run"
        assert main(["train", "--config", recipe, "--store", str(frames_only), "--out", str(out), "--steps", "1",
                     "--workers", "0", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "modality 'mv' needs array 'mv'" in err and "--modalities ...,mv" in err and not out.exists()
    flow = write(tmp_path, "flow", method_args={"mask": "warped", "motion": "flow"})
    assert main(["train", "--config", flow, "--store", str(frames_only), "--out", str(tmp_path / "f"), "--steps", "1",
                 "--workers", "0", "--quiet"]) == 2
    assert "--flow dis" in capsys.readouterr().err


def test_build_method_turns_settings_that_do_not_fit_into_usage_errors():
    config = TrainConfig(method="videomae", backbone="vit_tiny", method_args={"unknown": 1})
    with pytest.raises(TrainError, match="videomae: .*unexpected keyword argument 'unknown'"):
        build_method(config)


def test_flow_guides_warped_masks_where_the_store_has_it(synth_dir, tmp_path):
    from mvtools.extract import ExtractConfig, extract
    from trainer.data import ClipDataset, ClipSpec

    store = tmp_path / "flow.zarr"
    extract(synth_dir, store, ExtractConfig(modalities=("frames",), flow="dis", flow_preset="ultrafast"),
            progress=False)
    method = VideoMAE(mask="warped", motion="auto", ratio=0.5)
    assert method.sampler().resolve(ClipDataset(store, modalities=("rgb",), spec=ClipSpec(4, 2, 32))) == "flow"
    data = ClipDataset(store, modalities=("rgb", "flow"), views=1, spec=ClipSpec(4, 2, 32), sampler=method.sampler())
    assert np.array_equal(data[0]["mask"].sum(-1).numpy(), [4])

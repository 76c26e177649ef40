"""The ViT backbones against Hugging Face transformers' VideoMAE (tests/data/videomae_reference.json, written by
tests/data/make_videomae_reference.py in a venv with transformers): names, shapes, order, parameter counts, and the
function under the same fixed weights."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.models import build
from trainer.vit import (
    MaskedAutoencoder,
    ViT,
    from_transformers,
    normalised_targets,
    patchify,
    resample_table,
    sinusoid_table,
)

REFERENCE = json.loads((Path(__file__).with_name("data") / "videomae_reference.json").read_text())
SMALL = REFERENCE["small"]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # what transformers un-normalises with


def deterministic_(state: dict[str, torch.Tensor]) -> None:
    """tests/data/make_videomae_reference.py's weights: the k-th floating entry from s_i = sin(0.37 i + 1.3 k)
    (1-d ``weight`` 1 + 0.25 s, 2+ dimensions s sqrt(6 / fan_in), the rest 0.1 s)."""
    with torch.no_grad():
        for k, (name, t) in enumerate(state.items()):
            s = torch.sin(0.37 * torch.arange(t.numel(), dtype=torch.float64) + 1.3 * k).reshape(t.shape)
            if name.endswith("weight") and t.dim() == 1:
                v = 1 + 0.25 * s
            elif t.dim() >= 2:
                v = s * math.sqrt(6 / (t.numel() // t.shape[0]))
            else:
                v = 0.1 * s
            t.copy_(v)


def transformers_state(entries) -> dict[str, torch.Tensor]:
    state = {k: torch.zeros(shape, dtype=torch.float64) for k, shape in entries}
    deterministic_(state)
    return state


def clips(batch: int = 2, shape=(3, 4, 48, 48)) -> torch.Tensor:
    j = torch.arange(math.prod(shape), dtype=torch.float64)
    return torch.stack([torch.sin(0.01 * j + 0.5 * b).reshape(shape) for b in range(batch)])


def small_vit(**kw) -> ViT:
    c = SMALL["config"]
    return ViT(3, c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"], c["intermediate_size"],
               c["patch_size"], c["tubelet_size"], c["num_frames"], c["image_size"], **kw).double().eval()


def small_autoencoder() -> MaskedAutoencoder:
    c = SMALL["config"]
    return MaskedAutoencoder(small_vit(), c["decoder_hidden_size"], c["decoder_num_hidden_layers"],
                             c["decoder_num_attention_heads"], c["decoder_intermediate_size"]).double().eval()


def test_reference_names_its_source():
    assert REFERENCE["transformers"].startswith("5.") and REFERENCE["torch"].startswith("2.13")
    assert sorted(REFERENCE["models"]) == ["vit_b16", "vit_s16"]


@pytest.mark.parametrize("name", ["vit_s16", "vit_b16"])
def test_encoder_names_shapes_and_order_are_transformers_videomae_model(name):
    ref = REFERENCE["models"][name]
    pretraining = [(k.removeprefix("videomae."), s) for k, s in ref["VideoMAEForPreTraining"]
                   if k.startswith("videomae.")]
    model = build(name)
    assert [(k, list(v.shape)) for k, v in model.state_dict().items()] == pretraining  # with the final layernorm
    assert sum(p.numel() for p in model.parameters()) == ref["encoder_params"]
    finetuned = [(k.removeprefix("videomae."), s) for k, s in ref["VideoMAEForVideoClassification"]
                 if k.startswith("videomae.")]
    assert [(k, list(v.shape)) for k, v in build(name, mean_pooling=True).state_dict().items()] == finetuned
    assert not any("position" in k for k in model.state_dict())  # the sinusoid table is no state-dict entry
    # what a fine-tuned transformers model adds around it: its norm after pooling and its classifier
    assert [k for k, _ in ref["VideoMAEForVideoClassification"] if not k.startswith("videomae.")] == \
        ["fc_norm.weight", "fc_norm.bias", "classifier.weight", "classifier.bias"]


@pytest.mark.parametrize("name", ["vit_s16", "vit_b16"])
def test_masked_autoencoder_has_videomae_for_pretraining_names(name):
    from trainer.vit import CONFIGS

    d = CONFIGS[name]["decoder"]
    model = MaskedAutoencoder(build(name), d["hidden"], d["depth"], d["heads"], d["intermediate"])
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == \
        REFERENCE["models"][name]["VideoMAEForPreTraining"]


def test_sinusoid_table_is_videomae_s():
    table = sinusoid_table(7, 6).double()
    p, j = 5, 3  # odd j: cosine of p / 10000^(2 * 1 / 6)
    assert table[p, j].item() == pytest.approx(math.cos(p / 10000 ** (2 / 6)), abs=1e-7)
    assert table[p, 2].item() == pytest.approx(math.sin(p / 10000 ** (2 / 6)), abs=1e-7)
    assert table.dtype == torch.float64 and sinusoid_table(7, 6).dtype == torch.float32  # float32, as transformers'


def test_resampled_table_keeps_the_reference_grid_and_interpolates_others():
    table = torch.arange(2 * 3 * 3, dtype=torch.float32)[:, None].repeat(1, 4)  # value = flat index
    assert torch.equal(resample_table(table, (2, 3, 3), (2, 3, 3)), table)
    twice = resample_table(table, (2, 3, 3), (2, 6, 6))
    assert twice.shape == (72, 4)
    # a linear ramp along x (index = 9 t + 3 y + x) stays one after trilinear resampling, clamped at the edges
    row = twice[:6, 0].numpy()
    np.testing.assert_allclose(row, np.clip((np.arange(6) + 0.5) / 2 - 0.5, 0, 2))


def test_same_weights_give_transformers_features():
    state = transformers_state(SMALL["pretraining_state_dict"])
    encoder_state = from_transformers(state)
    vit = small_vit()
    vit.load_state_dict(encoder_state)
    x = clips()
    with torch.no_grad():
        np.testing.assert_allclose(vit(x).flatten().numpy(), SMALL["encoder_mean"], rtol=1e-9, atol=1e-10)
        mask = torch.tensor(SMALL["mask"])
        visible = vit.forward_tokens(x, mask)
    ref = SMALL["visible_tokens"]
    assert list(visible.shape) == ref["shape"]
    assert visible.sum().item() == pytest.approx(ref["sum"], rel=1e-9, abs=1e-9)
    assert (visible * visible).sum().item() == pytest.approx(ref["sumsq"], rel=1e-9)
    np.testing.assert_allclose(visible[0, 0].numpy(), ref["first"], rtol=1e-9, atol=1e-10)


def test_masked_autoencoder_reconstructs_and_scores_as_transformers():
    model = small_autoencoder()
    model.load_state_dict(transformers_state(SMALL["pretraining_state_dict"]))
    x, mask = clips(), torch.tensor(SMALL["mask"])
    with torch.no_grad():
        predicted = model(x, mask)
    ref = SMALL["reconstruction"]
    assert list(predicted.shape) == ref["shape"]
    assert predicted.sum().item() == pytest.approx(ref["sum"], rel=1e-9)
    assert (predicted * predicted).sum().item() == pytest.approx(ref["sumsq"], rel=1e-9)
    np.testing.assert_allclose(predicted[1, 0, :16].numpy(), ref["first"], rtol=1e-9, atol=1e-10)
    # transformers' norm_pix_loss: targets from pixels un-normalised with ImageNet's statistics
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64)[:, None, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64)[:, None, None, None]
    targets = normalised_targets(patchify(x * std + mean, 2, 16))
    loss = torch.nn.functional.mse_loss(predicted, targets[mask].reshape(2, -1, targets.shape[-1]))
    assert loss.item() == pytest.approx(SMALL["loss"], rel=1e-9)


def test_classification_form_gives_transformers_logits():
    state = transformers_state(SMALL["classification_state_dict"])
    vit = small_vit(mean_pooling=True)
    vit.load_state_dict(from_transformers(state, has_layernorm=False))
    norm = torch.nn.LayerNorm(vit.stage_dims[0]).double()  # fc_norm: transformers' default eps
    norm.load_state_dict({"weight": state["fc_norm.weight"], "bias": state["fc_norm.bias"]})
    with torch.no_grad():
        logits = norm(vit(clips())) @ state["classifier.weight"].T + state["classifier.bias"]
    np.testing.assert_allclose(logits.flatten().numpy(), SMALL["classification_logits"], rtol=1e-9, atol=1e-10)


def test_hub_names_are_renamed_and_wrappers_dropped():
    hub = {"videomae.encoder.layer.0.attention.attention.q_bias": torch.zeros(2),
           "videomae.encoder.layer.0.attention.attention.v_bias": torch.ones(2),
           "videomae.layernorm.weight": torch.ones(2), "mask_token": torch.zeros(1, 1, 2),
           "decoder.head.weight": torch.zeros(3, 2), "encoder_to_decoder.weight": torch.zeros(2, 2),
           "fc_norm.weight": torch.ones(2), "classifier.bias": torch.zeros(5)}
    assert sorted(from_transformers(hub)) == ["encoder.layer.0.attention.attention.query.bias",
                                              "encoder.layer.0.attention.attention.value.bias", "layernorm.weight"]
    assert "layernorm.weight" not in from_transformers(hub, has_layernorm=False)
    plain = {"encoder.layer.3.attention.attention.q_bias": torch.zeros(2), "fc_norm.weight": torch.ones(2)}
    assert sorted(from_transformers(plain)) == ["encoder.layer.3.attention.attention.query.bias", "fc_norm.weight"]


def test_clips_the_tubelet_does_not_divide_are_refused_by_name():
    vit = build("vit_tiny")
    vit.check_input(8, 64)
    with pytest.raises(ValueError, match="7 frames x 64 x 64 px is not divided by the tubelet 2 x 16 x 16"):
        vit.check_input(7, 64)
    with pytest.raises(ValueError, match="size of 16"):
        vit.check_input(8, 40)
    assert vit(torch.randn(1, 3, 4, 32, 48)).shape == (1, 64)  # other sizes: the table is resampled


def test_drop_path_drops_whole_samples_in_training_only():
    torch.manual_seed(0)
    vit = build("vit_tiny", drop_path=0.5)
    rates = [layer.drop_path.p for layer in vit.encoder.layer]
    assert rates == [0.0, 0.5]  # linear over the blocks
    x = torch.randn(64, 5, 8)
    dropped = vit.encoder.layer[1].drop_path.train()(x)
    kept = (dropped != 0).flatten(1).all(1)
    assert torch.equal(dropped[kept], 2 * x[kept]) and (dropped[~kept] == 0).all() and 0 < kept.sum() < 64
    assert torch.equal(vit.encoder.layer[1].drop_path.eval()(x), x)

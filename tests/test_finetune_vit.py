"""Fine-tuning ViTs: VideoMAE's knobs (label smoothing, mixup / cutmix, layer-wise lr decay, drop path), starting
from a masked-modelling run or a transformers VideoMAE state dict, the recipes, and what export writes."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mvtools.cli import main
from trainer.finetune import finetune, read_recipe
from trainer.loop import TrainConfig, load_checkpoint, train
from trainer.mixup import cutmix_box, mix, smoothed_targets, soft_cross_entropy
from trainer.supervised import Supervised

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(clip_len=4, size=32, workers=0, batch_size=2, checkpoint_every=100)


def test_smoothed_targets_and_their_cross_entropy():
    targets = smoothed_targets(torch.tensor([2, 0]), 4, 0.1)
    assert targets[0].tolist() == pytest.approx([0.025, 0.025, 0.925, 0.025])
    logits = torch.randn(2, 4)
    assert soft_cross_entropy(logits, targets).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, torch.tensor([2, 0]), label_smoothing=0.1).item(), rel=1e-6)


def test_mixup_blends_clips_and_targets_with_the_same_weight():
    torch.manual_seed(0)
    x = torch.stack([torch.zeros(3, 2, 8, 8), torch.ones(3, 2, 8, 8)])
    mixed, targets = mix(x, smoothed_targets(torch.tensor([0, 1]), 2), mixup=0.8)
    lam = targets[0, 0].item()  # sample 0 (class 0) mixed with sample 1 (class 1)
    assert targets[1, 1].item() == pytest.approx(lam) and targets.sum(1).tolist() == pytest.approx([1.0, 1.0])
    assert torch.allclose(mixed[0], torch.full_like(mixed[0], 1 - lam)) and torch.allclose(mixed[1], torch.full_like(
        mixed[1], lam))


def test_cutmix_pastes_a_box_into_every_frame_and_weighs_targets_by_its_area():
    torch.manual_seed(3)
    x = torch.stack([torch.zeros(3, 2, 16, 16), torch.ones(3, 2, 16, 16)])
    mixed, targets = mix(x, smoothed_targets(torch.tensor([0, 1]), 2), cutmix=1.0)
    pasted = mixed[0, 0, 0] == 1  # sample 1's pixels in sample 0
    assert torch.equal(pasted, mixed[0, 2, 1] == 1)  # the same box in every channel and frame
    assert targets[0, 1].item() == pytest.approx(pasted.float().mean().item())  # weight = the box's share
    rows, cols = torch.nonzero(pasted, as_tuple=True)
    if len(rows):
        assert pasted[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # a box
    torch.manual_seed(0)
    cy, cx = int(torch.randint(100, ())), int(torch.randint(100, ()))
    torch.manual_seed(0)
    # lam 0.75: half the side (a quarter of the area) around a uniform centre, clipped at the border
    assert cutmix_box(100, 100, 0.75) == (max(cy - 25, 0), min(cy + 25, 100), max(cx - 25, 0), min(cx + 25, 100))


def test_layer_decay_scales_each_depth():
    method = Supervised(backbone="vit_tiny", backbone_args={"mean_pooling": True}, classes=3, layer_decay=0.5)
    names = {id(p): n for n, p in method.named_parameters()}
    scale = {names[id(p)]: g["lr_scale"] for g in method.param_groups(0.05) for p in g["params"]}
    assert scale["fc.weight"] == 1.0 and scale["fc_norm.weight"] == 1.0
    assert scale["backbone.encoder.layer.1.intermediate.dense.weight"] == 0.5  # depth 2 of 2: 0.5^(3 - 2)
    assert scale["backbone.encoder.layer.0.attention.attention.query.bias"] == 0.25
    assert scale["backbone.embeddings.patch_embeddings.projection.weight"] == 0.125
    decays = {names[id(p)]: g["weight_decay"] for g in method.param_groups(0.05) for p in g["params"]}
    assert decays["fc.weight"] == 0.05 and decays["fc.bias"] == 0.0 and decays["fc_norm.weight"] == 0.0
    assert len(scale) == len(list(method.parameters()))
    first = method.param_groups(0.05)[0]
    assert first["lr_scale"] == 1.0  # the loop logs the first group's lr: the classifier's


def uniform_videos(values, labels) -> dict:
    return {f"v{i:02d}": {"frames": np.full((8, 32, 32, 3), v, np.uint8), "label": lab}
            for i, (v, lab) in enumerate(zip(values, labels))}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A 2-step videomae run (vit_tiny) on dark / bright videos, and the store."""
    from stores import write_store

    tmp = tmp_path_factory.mktemp("vit")
    greys = [10, 20, 30, 40, 5, 15, 25, 35, 200, 210, 220, 230, 205, 215, 225, 235]
    store = write_store(tmp / "db.zarr", uniform_videos(greys, ["dark"] * 8 + ["bright"] * 8))
    run = tmp / "run"
    train(TrainConfig.from_yaml(ROOT / "pipelines/train/videomae_tiny.yaml", store=store, out=str(run), steps=2,
                                **SMALL), progress=False)
    return run / "checkpoint.pt", store


def test_finetune_starts_from_the_masked_autoencoder_s_encoder(pretrained, tmp_path):
    checkpoint, store = pretrained
    out = tmp_path / "ft"
    result = finetune(store, out, checkpoint=checkpoint, recipe=ROOT / "pipelines/finetune/ucf101_vit_tiny.yaml",
                      overrides={**SMALL, "steps": 3, "lr": 0.0}, progress=False, test_views={"clips": 2, "crops": 3})
    pre = load_checkpoint(checkpoint)["model"]
    tuned = load_checkpoint(out / "checkpoint.pt")["model"]
    encoder = [k for k in tuned if k.startswith("backbone.")]
    assert encoder and all(torch.equal(tuned[k], pre["mae.videomae." + k.removeprefix("backbone.")]) for k in encoder)
    assert "backbone.layernorm.weight" not in tuned and "fc_norm.weight" in tuned  # VideoMAE's fine-tuning head
    assert result["weights"].endswith("(videomae)") and result["views"] == "2 clips x 3 crops"
    config = load_checkpoint(out / "checkpoint.pt")["config"]
    assert config["backbone_args"] == {"mean_pooling": True, "drop_path": 0.1}
    assert config["method_args"]["layer_decay"] == 0.75 and config["method_args"]["mixup"] == 0.8


def test_vit_finetuning_learns_what_the_labels_say(pretrained, tmp_path):
    _, store = pretrained
    recipe = ROOT / "pipelines/finetune/ucf101_vit_tiny.yaml"
    result = finetune(store, tmp_path / "ft", from_scratch=True, recipe=recipe, progress=False,
                      test_views={"clips": 1, "crops": 1},
                      overrides={**SMALL, "steps": 40, "batch_size": 4, "lr": 0.003, "warmup_steps": 0})
    assert result["top1"] == 1.0  # dark vs bright, through mixup, cutmix and label smoothing


def hub_state(encoder_state: dict[str, torch.Tensor], classes: int = 7) -> dict[str, torch.Tensor]:
    """A state dict as the Hub's VideoMAEForVideoClassification checkpoints hold it: ``videomae.`` prefix, ``q_bias``
    / ``v_bias``, ``fc_norm`` and ``classifier``."""
    out = {}
    for k, v in encoder_state.items():
        k = k.replace("attention.attention.query.bias", "attention.attention.q_bias")
        out["videomae." + k.replace("attention.attention.value.bias", "attention.attention.v_bias")] = v
    width = next(iter(encoder_state.values())).shape[0]
    return {**out, "fc_norm.weight": torch.ones(width), "fc_norm.bias": torch.zeros(width),
            "classifier.weight": torch.zeros(classes, width), "classifier.bias": torch.zeros(classes)}


def test_init_takes_a_transformers_state_dict_and_lists_the_mismatches_of_another_width(pretrained, tmp_path,
                                                                                        capsys):
    from trainer.models import build

    _, store = pretrained
    torch.manual_seed(1)
    source = build("vit_tiny", mean_pooling=True).state_dict()
    torch.save(hub_state(source), tmp_path / "hub.pt")
    recipe = ROOT / "pipelines/finetune/ucf101_vit_tiny.yaml"
    out = tmp_path / "ft"
    assert main(["finetune", "--init", str(tmp_path / "hub.pt"), "--store", store, "--out", str(out), "--config",
                 str(recipe), "--steps", "1", "--lr", "0", "--batch-size", "2", "--workers", "0", "--clips", "1",
                 "--crops", "1", "--quiet"]) == 0
    tuned = load_checkpoint(out / "checkpoint.pt")["model"]
    assert all(torch.equal(tuned["backbone." + k], v) for k, v in source.items())
    # a checkpoint of another width (a ViT-S's names and shapes): exit 2, the first mismatches named, nothing written
    wide = {k: torch.zeros(s) for k, s in json.loads((ROOT / "tests/data/videomae_reference.json").read_text())
            ["models"]["vit_s16"]["VideoMAEForVideoClassification"]}
    torch.save(wide, tmp_path / "wide.pt")
    assert main(["finetune", "--init", str(tmp_path / "wide.pt"), "--store", store, "--out", str(tmp_path / "x"),
                 "--config", str(recipe), "--workers", "0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "does not fit backbone 'vit_tiny'" in err and len(err.strip().splitlines()) == 1
    assert "embeddings.patch_embeddings.projection.weight: shape (384, 3, 2, 16, 16) where the backbone has " \
           "(64, 3, 2, 16, 16)" in err and "more)" in err  # the first five listed, then how many more
    assert not (tmp_path / "x").exists()


def test_export_of_a_finetuned_vit_is_transformers_videomae_model(pretrained, tmp_path, capsys):
    from trainer.models import build

    checkpoint, store = pretrained
    out = tmp_path / "ft"
    finetune(store, out, checkpoint=checkpoint, recipe=ROOT / "pipelines/finetune/ucf101_vit_tiny.yaml",
             overrides={**SMALL, "steps": 1}, progress=False, test_views={"clips": 1, "crops": 1})
    assert main(["export", "--checkpoint", str(out / "checkpoint.pt"), "-o", str(tmp_path / "e.pt")]) == 0
    state = torch.load(tmp_path / "e.pt", weights_only=True)
    assert list(state) == list(build("vit_tiny", mean_pooling=True).state_dict())  # VideoMAEModel's, mean pooling
    assert main(["export", "--checkpoint", str(checkpoint), "-o", str(tmp_path / "p.pt")]) == 0
    assert list(torch.load(tmp_path / "p.pt", weights_only=True)) == list(build("vit_tiny").state_dict())


@pytest.mark.parametrize("name", ["ucf101_vit", "ucf101_vit_tiny"])
def test_vit_finetune_recipes_are_valid_and_cite_their_sources(name):
    path = ROOT / "pipelines" / "finetune" / f"{name}.yaml"
    fields, views = read_recipe(path)
    config = TrainConfig(**{**fields, "method": "supervised"})
    config.validate()
    assert config.backbone == ("vit_tiny" if name.endswith("_tiny") else "vit_b16")
    assert config.method_args["layer_decay"] == 0.75 and config.backbone_args["drop_path"] == 0.1
    assert views == {"clips": 10, "crops": 3} and config.optimizer == "adamw" and config.schedule == "cosine"
    if not name.endswith("_tiny"):
        text = path.read_text()
        assert "[paper]" in text and "[default]" in text  # what VideoMAE says and what is ours, told apart

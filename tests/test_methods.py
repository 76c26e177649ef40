"""The contract every motion method meets, on a small synthetic store (tiny recipe, CPU)."""

import csv
import inspect
from pathlib import Path

import pytest
import torch

from trainer.loop import TrainConfig, load_checkpoint, train
from trainer.methods import REGISTRY

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines" / "train"
MOTION_METHODS = sorted(m for m in REGISTRY if m not in ("rgb", "diverging"))


def tiny(method, store, out, **kw) -> TrainConfig:
    """The method's tiny recipe (in-batch negatives, no queues) at batch 4 on the 4-video store."""
    base = dict(store=str(store), out=str(out), steps=30, batch_size=4, workers=0, checkpoint_every=10)
    return TrainConfig.from_yaml(PIPELINES / f"{method}_tiny.yaml", **{**base, **kw})


def losses(run) -> list[dict]:
    with open(Path(run) / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def moving(tmp_path_factory):
    from stores import moving_textures, write_store

    return write_store(tmp_path_factory.mktemp("moving") / "s.zarr", moving_textures(videos=16))


@pytest.mark.parametrize("method", sorted(m for m in REGISTRY if m != "diverging"))
def test_training_lowers_the_loss_on_a_held_batch(method, moving, tmp_path):
    """40 steps from the tiny recipe (constant lr, no warm-up, no colour jitter, for every method alike) on 16
    hand-built videos, twice the batch: the loss of one fixed batch, drawn apart from training, falls by 5%
    or more from the same network before training."""
    from trainer.data import ClipDataset, ClipSpec
    from trainer.loop import build_method

    no_jitter = {"jitter": 0.0, "grayscale": 0.0}
    config = tiny(method, moving, tmp_path, steps=40, batch_size=8, lr=0.004, warmup_steps=0, clip_len=4, size=32,
                  checkpoint_every=40, augment=no_jitter)
    torch.manual_seed(config.seed)
    before = build_method(config)  # train() seeds and builds the same way: the same initial weights
    train(config, progress=False)
    after = build_method(config)
    after.load_state_dict(load_checkpoint(tmp_path / "checkpoint.pt")["model"])
    held = ClipDataset(moving, modalities=before.modalities, views=before.views, seed=99,
                       spec=ClipSpec(4, 2, 32, **no_jitter), sampler=before.sampler())
    batch = torch.utils.data.default_collate([held[(i, 0)] for i in range(8)])

    def loss(m):
        torch.manual_seed(0)
        return sum(m.train()(batch).values()).item()

    rows = losses(tmp_path)
    assert len(rows) == 40 and all(torch.isfinite(torch.tensor(list(r.values()))).all() for r in rows)
    assert loss(after) < 0.95 * loss(before)


@pytest.mark.parametrize("method", MOTION_METHODS)
def test_resume_continues_the_same_run(method, synth_store, tmp_path):
    def config(out, **kw):
        c = tiny(method, synth_store, out, steps=8, checkpoint_every=4, **kw)
        params = inspect.signature(REGISTRY[method]).parameters
        c.method_args.update({k: 8 for k in ("queue", "motion_queue") if k in params})  # queues are resumed too
        return c

    train(config(tmp_path / "a"), progress=False)
    train(config(tmp_path / "b"), progress=False, until=4)
    train(config(tmp_path / "b"), progress=False, resume=True)
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 8


@pytest.mark.parametrize("method", sorted(m for m in REGISTRY if m != "diverging"))
def test_every_method_has_a_tiny_and_a_paper_scale_recipe(method):
    assert (PIPELINES / f"{method}_tiny.yaml").exists() and (PIPELINES / f"{method}.yaml").exists()
    for name in (f"{method}_tiny.yaml", f"{method}.yaml"):
        config = TrainConfig.from_yaml(PIPELINES / name)
        assert config.method == method and config.bn == REGISTRY[method].bn  # the paper's choice, spelled out
        config.validate()

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


@pytest.mark.parametrize("method", MOTION_METHODS)
def test_thirty_steps_lower_the_loss(method, synth_store, tmp_path):
    train(tiny(method, synth_store, tmp_path), progress=False)
    rows = losses(tmp_path)
    assert len(rows) == 30 and all(torch.isfinite(torch.tensor(list(r.values()))).all() for r in rows)
    first, last = (sum(r["loss"] for r in part) / 10 for part in (rows[:10], rows[-10:]))
    assert last < first


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

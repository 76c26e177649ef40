import csv
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from trainer.data import ClipDataset, ClipSpec
from trainer.loop import TrainConfig, TrainError, build_method, load_checkpoint, lr_factor, train
from trainer.methods import REGISTRY

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines" / "train"


def config(store, out, **kw) -> TrainConfig:
    base = dict(method="rgb", store=str(store), out=str(out), steps=6, batch_size=2, clip_len=4, stride=2,
                size=32, workers=0, checkpoint_every=3, warmup_steps=2, method_args={"queue": 16})
    return TrainConfig(**{**base, **kw})


def rows(run) -> list[dict]:
    with open(os.path.join(run, "metrics.csv")) as f:
        return list(csv.DictReader(f))


def test_lr_warms_up_then_decays_to_zero():
    assert lr_factor(0, 4, 20) == 0.25 and lr_factor(3, 4, 20) == 1.0
    assert lr_factor(12, 4, 20) == pytest.approx(0.5) and lr_factor(20, 4, 20) == pytest.approx(0.0)


def test_resumed_run_continues_with_the_same_losses(synth_store, tmp_path):
    straight = train(config(synth_store, tmp_path / "a"), progress=False)
    train(config(synth_store, tmp_path / "b", workers=2), progress=False, until=3)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 3
    resumed = train(config(synth_store, tmp_path / "b"), progress=False, resume=True)
    assert resumed["resumed_from"] == 3 and straight["last"] == resumed["last"]
    a, b = rows(tmp_path / "a"), rows(tmp_path / "b")
    assert list(a[0]) == ["step", "loss", "inst", "lr", "bad_clips"] and len(a) == len(b) == 6
    assert a == b
    losses = [float(r["loss"]) for r in a]
    assert all(map(torch.isfinite, torch.tensor(losses)))
    assert straight["steps_per_s"] > 0 and 0 <= straight["data_wait_fraction"] < 1


def test_existing_run_is_not_overwritten_without_resume(synth_store, tmp_path):
    train(config(synth_store, tmp_path, steps=1), progress=False)
    with pytest.raises(TrainError, match="--resume"):
        train(config(synth_store, tmp_path, steps=1), progress=False)


@pytest.fixture
def diverging():
    """A method (a real plug-in, registered like any other) whose loss turns NaN from its 4th step on."""
    from trainer.methods.rgb import RGB

    class Diverging(RGB):
        name = "diverging"

        def __init__(self, **kw):
            super().__init__(**kw)
            self.register_buffer("calls", torch.zeros((), dtype=torch.long))

        def forward(self, batch):
            self.calls += 1
            terms = super().forward(batch)
            return {"inst": terms["inst"] * (float("nan") if self.calls > 3 else 1.0)}

    REGISTRY["diverging"] = Diverging
    yield "diverging"
    del REGISTRY["diverging"]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(synth_store, tmp_path, diverging):
    with pytest.raises(TrainError, match=r"step 4: loss is nan \(inst=nan\).*checkpoint of step 3 is kept"):
        train(config(synth_store, tmp_path, method=diverging, checkpoint_every=1), progress=False)
    kept = load_checkpoint(tmp_path / "checkpoint.pt")
    assert kept["step"] == 3 and all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())
    assert len(rows(tmp_path)) == 3


def test_nan_loss_exits_1_and_a_usage_error_exits_2(synth_store, tmp_path, diverging, capsys):
    from mvtools.cli import main

    recipe = tmp_path / "diverging.yaml"
    recipe.write_text(f"method: {diverging}\nclip_len: 4\nsize: 32\ncheckpoint_every: 1\n"
                      "method_args: {queue: 16}\n")
    args = ["train", "--config", str(recipe), "--store", str(synth_store), "--steps", "6", "--batch-size", "2",
            "--workers", "0", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "run")]) == 1
    assert "step 4: loss is nan" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "run")]) == 2  # the run exists and --resume is not given
    assert "--resume" in capsys.readouterr().err


def test_checkpoint_loads_with_weights_only_and_rebuilds_the_method(synth_store, tmp_path):
    train(config(synth_store, tmp_path, steps=2), progress=False)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    method = build_method(state["config"])
    method.load_state_dict(state["model"])
    assert state["step"] == 2 and state["config"]["method"] == "rgb"


def test_bn_mode_is_the_methods_unless_the_recipe_says_and_sync_keeps_the_checkpoint_names():
    from trainer.batchnorm import SyncBatchNorm

    base = {"method": "rgb", "backbone": "tiny", "backbone_args": {}, "method_args": {"queue": 8}}
    assert build_method(base).bn == "shuffle"
    assert build_method({**base, "method": "mcd", "method_args": {}}).bn == "sync"
    local, sync = build_method({**base, "bn": "local"}), build_method({**base, "bn": "sync"})
    assert not any(isinstance(m, SyncBatchNorm) for m in local.modules())
    assert sum(isinstance(m, SyncBatchNorm) for m in sync.modules()) == sum(
        isinstance(m, torch.nn.BatchNorm3d) for m in local.modules())
    sync.load_state_dict(local.state_dict())  # same names: a checkpoint loads either way
    x = {"views": [{"rgb": torch.randn(2, 3, 4, 16, 16)}] * 2}
    torch.testing.assert_close(sync(x)["inst"], local(x)["inst"])  # one process: one batch, the same numbers
    with pytest.raises(TrainError, match="bn must be one of"):
        TrainConfig(bn="group").validate()


def test_queue_room_is_one_epoch_of_other_videos():
    from trainer.loop import queue_room

    assert queue_room(videos=16, global_batch=4, per_sample=2) == 24 and queue_room(4, 8, 2) == 0
    assert queue_room(240_000, 256, 3) == 3 * (240_000 - 256)


def test_a_queue_longer_than_the_store_can_fill_is_warned_about_at_start(synth_store, tmp_path, capsys):
    from mvtools.cli import main
    from trainer.loop import QueueWarning

    # 4 videos, global batch 2, 2 keys per sample: 4 keys of other videos at most.
    warned = r"'queue' holds 6 keys .* fill only 4 .*--config rgb_tiny .*--set method_args.queue=4"
    with pytest.warns(QueueWarning, match=warned):
        train(config(synth_store, tmp_path / "a", steps=1, method_args={"queue": 6}), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", QueueWarning)
        train(config(synth_store, tmp_path / "b", steps=1, method_args={"queue": 4}), progress=False)
    assert main(["train", "--store", str(synth_store), "--out", str(tmp_path / "c"), "--steps", "1", "--batch-size",
                 "2", "--workers", "0", "--quiet"]) == 0  # the default: a 4096-key queue
    assert "mvtools train: warning: rgb: queue 'queue' holds 4096 keys" in capsys.readouterr().err


def test_store_without_the_methods_modalities_is_refused(mv_only_store, tmp_path):
    from trainer.data import DataError

    with pytest.raises(DataError, match="frames"):
        train(config(mv_only_store, tmp_path), progress=False)
    assert not (tmp_path / "checkpoint.pt").exists()


@pytest.mark.parametrize("name", sorted(n for n in REGISTRY if n != "diverging"))
def test_gradients_reach_every_trainable_parameter(name, synth_store):
    torch.manual_seed(0)
    backbone = TrainConfig.from_yaml(PIPELINES / f"{name}_tiny.yaml").backbone  # tiny, or vit_tiny (masked methods)
    method = REGISTRY[name](backbone=backbone, **({"queue": 16} if name == "rgb" else {}))
    ds = ClipDataset(synth_store, modalities=method.modalities, views=method.views,
                     spec=ClipSpec(clip_len=4, stride=2, size=32), sampler=method.sampler())
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    loss = sum(method(batch).values())
    loss.backward()
    missing = [n for n, p in method.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(synth_store, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "mvtools", "train", "--store", str(synth_store), "--out", str(run), "--steps", "3",
           "--batch-size", "2", "--workers", "0", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["world_size"] == 2 and state["step"] == 3
    assert len(rows(run)) == 3


def test_resume_with_no_checkpoint_starts_at_step_0_and_says_so(synth_store, tmp_path):
    from trainer.loop import RunNotice

    with pytest.warns(RunNotice, match=f"--resume: no checkpoint in {tmp_path / 'run'} yet, starting at step 0"):
        summary = train(config(synth_store, tmp_path / "run", steps=2), progress=False, resume=True)
    assert summary["resumed_from"] == 0 and load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 2


@pytest.fixture
def damaged_store(synth_store, tmp_path):
    """A copy of the synthetic store whose second video's frames shard is truncated."""
    import shutil

    from stores import damage

    copy = tmp_path / "damaged.zarr"
    shutil.copytree(synth_store, copy)
    key = ClipDataset(copy).videos[1].key
    damage(copy, key, "frames", "truncate")
    return copy, key


def test_damaged_clips_are_replaced_counted_and_bounded(damaged_store, tmp_path):
    from trainer.loop import RunNotice, TrainingFailed

    store, key = damaged_store
    with pytest.warns(RunNotice, match=f"skipping a clip of damaged video {key!r} .*array 'frames'") as notes:
        summary = train(config(store, tmp_path / "a", max_bad_clips=0.5), progress=False)
    assert len([n for n in notes if issubclass(n.category, RunNotice)]) == 1  # once per video
    counts = [int(r["bad_clips"]) for r in rows(tmp_path / "a")]
    assert counts == sorted(counts) and counts[-1] == summary["bad_clips"] > 0  # cumulative
    # 6 steps x 2 clips = 12 samples: a bound of 1/12 is passed as soon as a second clip is replaced
    with pytest.raises(TrainingFailed, match=r"damaged clips replaced, more than max_bad_clips \(8.33%\) of the run's "
                                             r"12 samples; run `mvtools verify .* --repair`"):
        train(config(store, tmp_path / "b", max_bad_clips=1 / 12, checkpoint_every=1), progress=False)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == len(rows(tmp_path / "b"))


def test_on_bad_clip_fail_ends_the_run_with_one_line_naming_the_video(damaged_store, tmp_path, capsys):
    """The error comes from a DataLoader worker (torch re-raises it wrapped): one line, exit 1; --debug adds the
    traceback."""
    from mvtools.cli import main

    store, key = damaged_store
    args = ["train", "--store", str(store), "--steps", "6", "--batch-size", "2", "--workers", "2", "--quiet",
            "--on-bad-clip", "fail", "--checkpoint-every", "1"]
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("clip_len: 4\nsize: 32\nmethod_args: {queue: 0}\n")
    assert main([*args, "--config", str(recipe), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mvtools train: error: step ") and "Traceback" not in err, err
    assert f"{store}: video {key!r}, array 'frames', frames " in err and "is kept" in err
    assert main(["--debug", *args, "--config", str(recipe), "--out", str(tmp_path / "debug")]) == 1
    assert "Traceback" in capsys.readouterr().err

"""--set KEY=VALUE on train, finetune and eval (trainer/overrides.py): dotted keys into the recipe, typed values."""

import numpy as np
import pytest
import torch
from stores import write_store
from test_strict_json import strict_loads

from mvtools.cli import main
from trainer.loop import TrainConfig
from trainer.overrides import apply_settings, field_defaults, parse_setting

FIELDS = field_defaults(TrainConfig)


def test_values_are_yaml_scalars_and_lists_with_numbers_as_numbers():
    assert parse_setting("lr=1e-3") == (["lr"], 0.001)  # YAML 1.1 alone would keep "1e-3" a string
    assert parse_setting("method_args.queue=0") == (["method_args", "queue"], 0)
    assert parse_setting("milestones=[0.6, 0.85]") == (["milestones"], [0.6, 0.85])
    assert parse_setting("augment.flip=false") == (["augment", "flip"], False)
    assert parse_setting("split=null") == (["split"], None)
    assert parse_setting("method=rgb") == (["method"], "rgb")
    for bad in ("steps", "=3", "method_args..queue=1"):
        with pytest.raises(ValueError, match="expected KEY=VALUE"):
            parse_setting(bad)


def test_dotted_keys_update_one_entry_and_keep_the_recipe_s_others():
    recipe = {"method": "rgb", "lr": 0.002, "method_args": {"dim": 64, "queue": 4096}, "augment": None}
    out = apply_settings(recipe, ["method_args.queue=0", "augment.flip=false", "lr=1", "backbone_args.width=0.5",
                                  "method_args.head.layers=2"], FIELDS)
    assert out == {"method": "rgb", "lr": 1.0, "method_args": {"dim": 64, "queue": 0, "head": {"layers": 2}},
                   "augment": {"flip": False}, "backbone_args": {"width": 0.5}}
    assert recipe["method_args"] == {"dim": 64, "queue": 4096}  # the recipe itself is left alone
    assert isinstance(out["lr"], float)  # an int is a float where the field is one


@pytest.mark.parametrize("setting, message", [
    ("queue=0", "unknown key 'queue'; valid keys: amp, augment"),
    ("steps.x=1", "steps is not a mapping"),
    ("steps=abc", "steps takes an integer, not 'abc'"),
    ("steps=true", "steps takes an integer"),
    ("amp=1", "amp takes true or false"),
    ("method_args=3", "method_args takes a mapping"),
])
def test_bad_settings_name_the_key_and_what_it_takes(setting, message):
    with pytest.raises(ValueError, match=message):
        apply_settings({}, [setting], FIELDS)


def test_train_finetune_and_eval_take_set(tmp_path, capsys):
    frames = {v: np.full((8, 32, 32, 3), v, np.uint8) for v in (10, 30, 50, 70, 190, 210, 230, 250)}
    store = write_store(tmp_path / "s.zarr", {f"v{v}": {"frames": f, "label": "dark" if v < 128 else "bright"}
                                              for v, f in frames.items()})
    run = tmp_path / "run"
    base = ["--store", store, "--workers", "0", "--quiet"]
    assert main(["train", "--config", "rgb_tiny", "--out", str(run), "--steps", "1", *base,
                 "--set", "clip_len=4", "--set", "size=32", "--set", "batch_size=2", "--set", "steps=5",
                 "--set", "method_args.queue=4", "--set", "augment.flip=false"]) == 0
    assert "trained rgb (tiny) to step 1" in capsys.readouterr().out
    config = torch.load(run / "checkpoint.pt", weights_only=True)["config"]
    assert (config["clip_len"], config["size"], config["batch_size"], config["steps"]) == (4, 32, 2, 1)  # flag wins
    assert config["method_args"] == {"dim": 64, "queue": 4, "momentum": 0.99, "temperature": 0.2}  # rgb_tiny's others
    assert config["augment"] == {"flip": False}
    ft = tmp_path / "ft"
    assert main(["finetune", "--config", "ucf101_tiny", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(ft),
                 *base, "--set", "steps=1", "--set", "batch_size=2", "--set", "test_clips=1", "--set", "test_crops=1",
                 "--set", "method_args.dropout=0.0", "--set", "size=32", "--json"]) == 0
    result = strict_loads(capsys.readouterr().out)
    assert result["train"]["steps_per_s"] is None  # 1 step: no timed step (NaN before; not JSON)
    assert strict_loads((ft / "test.json").read_text()) == result
    assert result["views"] == "1 clips x 1 crops" and result["clip"] == {"clip_len": 8, "stride": 2, "size": 32}
    assert torch.load(ft / "checkpoint.pt", weights_only=True)["config"]["method_args"]["dropout"] == 0.0
    assert main(["finetune", "--config", "ucf101_tiny", "--from-scratch", "--out", str(tmp_path / "x"), *base,
                 "--set", "method=rgb"]) == 2
    assert "unknown key 'method'" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["eval", "--checkpoint", str(ft / "checkpoint.pt"), "--clips", "1", "--crops", "1", *base[:-1],
                 "--set", "size=16", "--json"]) == 0
    assert strict_loads(capsys.readouterr().out)["clip"]["size"] == 16
    assert main(["eval", "--checkpoint", str(ft / "checkpoint.pt"), *base[:-1], "--set", "lr=0.1"]) == 2
    assert "--protocol linear-sgd takes every key" in capsys.readouterr().err

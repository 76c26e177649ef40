import json

import pytest
import torch

from mvtools.cli import main
from trainer.data import DataError, Video, split_keys, split_videos
from trainer.evaluate import evaluate, linear_probe, retrieval
from trainer.loop import TrainConfig, train


def video(key, label, split=None):
    return Video(key, 10, 64, 64, label, split)


def test_retrieval_recall_on_hand_made_features():
    train_x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7071, 0.7071]])
    train_y = torch.tensor([0, 1, 1])
    test_x = torch.tensor([[0.9, 0.1], [0.8, 0.6]])
    test_y = torch.tensor([1, 1])
    # Query 1 ranks train 0 (class 0) first, then 2 (class 1); query 2 ranks train 2 first.
    out = retrieval(train_x, train_y, test_x, test_y, ks=(1, 2))
    assert out == {"knn_top1": 0.5, "recall@1": 0.5, "recall@2": 1.0}


def test_linear_probe_separates_separable_features():
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(3) * 4
    y = torch.arange(60) % 3
    x = centres[y] + torch.randn(60, 3, generator=g)
    assert linear_probe(x[:45], y[:45], x[45:], y[45:], 3) == 1.0
    assert linear_probe(x[:45], y[:45].roll(1), x[45:], y[45:], 3) < 0.5


def test_split_keys_prefers_the_store_split_and_falls_back_per_class():
    stored = [video("a", "x", "train"), video("b", "x", "test"), video("c", "y", "train")]
    assert split_keys(stored)[:2] == (["a", "c"], ["b"])
    plain = [video(f"{c}{i}", c) for c in "xy" for i in range(4)] + [video("z0", "z")]
    train_keys, test_keys, source = split_keys(plain)
    assert test_keys == ["x3", "y3"] and "z0" in train_keys and "no splits" in source
    with pytest.raises(DataError, match="'u' has no label"):
        split_keys([video("u", None)])


def test_split_videos_takes_the_store_split_else_the_per_class_rule():
    stored = [video("a", "x", "train"), video("b", "x", "val"), video("c", "y", "train")]
    assert [v.key for v in split_videos(stored, "val")] == ["b"]
    assert [v.key for v in split_videos(stored, "test")] == ["b"]  # no "test": the store's val is the test side
    plain = [video(f"{c}{i}", c) for c in "xy" for i in range(4)]
    assert [v.key for v in split_videos(plain, "test")] == ["x3", "y3"]
    assert len(split_videos(plain, "train")) == 6 and split_videos(plain, "val") == []
    assert split_videos(plain, None) == plain


def uniform_videos(values, labels) -> dict:
    """One 8-frame 32 x 32 video per value, every pixel that grey level."""
    import numpy as np

    return {f"v{i:02d}": {"frames": np.full((8, 32, 32, 3), v, np.uint8), "label": lab}
            for i, (v, lab) in enumerate(zip(values, labels))}


def test_train_then_eval_from_the_command_line_on_stores_with_known_answers(tmp_path, capsys):
    from stores import write_store

    # Dark and bright videos: any encoder tells them apart, so the probe is exact; identical videos with
    # alternating labels carry nothing, so every test video gets the same prediction: top-1 = 1/2 exactly.
    greys = [10, 20, 30, 40, 5, 15, 25, 35, 200, 210, 220, 230, 205, 215, 225, 235]
    dark_bright = write_store(tmp_path / "db.zarr", uniform_videos(greys, ["dark"] * 8 + ["bright"] * 8))
    same = write_store(tmp_path / "same.zarr", uniform_videos([128] * 16, ["a", "b"] * 8))
    run, recipe = tmp_path / "run", tmp_path / "small.yaml"
    recipe.write_text("clip_len: 4\nsize: 32\nmethod_args: {queue: 8}\n")
    assert main(["train", "--config", str(recipe), "--store", dark_bright, "--out", str(run), "--steps", "2",
                 "--batch-size", "2", "--workers", "0", "--quiet"]) == 0
    assert "trained rgb (tiny) to step 2" in capsys.readouterr().out

    def evaluate_json(store):
        assert main(["eval", "--checkpoint", str(run / "checkpoint.pt"), "--store", store, "--json",
                     "--workers", "0", "--clips", "2"]) == 0
        return json.loads(capsys.readouterr().out)

    result = evaluate_json(dark_bright)
    assert result["train_videos"] == 12 and result["test_videos"] == 4  # the last quarter of each class
    assert result["linear_top1"] == 1.0 and result["recall@5"] == 1.0
    assert evaluate_json(same)["linear_top1"] == 0.5
    # Evaluating without a checkpoint fails with a clear message.
    assert main(["eval", "--checkpoint", str(tmp_path / "none.pt"), "--store", same]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_eval_refuses_unlabelled_store(synth_dir, synth_store, tmp_path):
    from mvtools.extract import ExtractConfig, extract

    store = tmp_path / "unlabelled.zarr"
    extract(synth_dir, store, ExtractConfig(labels="none", modalities=("frames",)), progress=False)
    run = tmp_path / "run"
    train(TrainConfig(store=str(synth_store), out=str(run), steps=1, batch_size=2, clip_len=4, size=32, workers=0,
                      method_args={"queue": 8}), progress=False)
    with pytest.raises(DataError, match="no label"):
        evaluate(run / "checkpoint.pt", store, workers=0)


def test_eval_on_damaged_data_fails_with_one_line_naming_the_video(synth_store, tmp_path, capsys):
    """Evaluation never replaces clips: a damaged one ends it (exit 1), named, from inside a DataLoader worker."""
    import shutil

    from stores import damage

    copy = tmp_path / "damaged.zarr"
    shutil.copytree(synth_store, copy)
    key = sorted(p.name for p in (copy / "videos").iterdir())[3]
    damage(copy, key, "frames", "truncate")
    run = tmp_path / "run"
    train(TrainConfig(store=str(synth_store), out=str(run), steps=1, batch_size=2, clip_len=4, size=32, workers=0,
                      method_args={"queue": 0}), progress=False)
    assert main(["eval", "--checkpoint", str(run / "checkpoint.pt"), "--store", str(copy), "--workers", "2"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"mvtools eval: error: {copy}: video {key!r}, array 'frames'"), err

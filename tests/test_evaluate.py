import json

import pytest
import torch

from mvtools.cli import main
from trainer.data import DataError, Video
from trainer.evaluate import evaluate, linear_probe, retrieval, split_keys
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


def test_train_then_eval_from_the_command_line(synth_store, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--store", str(synth_store), "--out", str(run), "--steps", "2", "--batch-size", "2",
                 "--workers", "0", "--quiet"]) == 0
    assert "trained rgb (tiny) to step 2" in capsys.readouterr().out
    assert main(["eval", "--checkpoint", str(run / "checkpoint.pt"), "--store", str(synth_store), "--json",
                 "--workers", "0", "--clips", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"linear_top1", "knn_top1", "recall@1", "recall@5", "recall@10"} <= set(result)
    assert result["train_videos"] == 2 and result["test_videos"] == 2 and 0 <= result["linear_top1"] <= 1
    # Evaluating against a store whose videos have no labels fails with a clear message.
    assert main(["eval", "--checkpoint", str(tmp_path / "none.pt"), "--store", str(synth_store)]) == 2
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

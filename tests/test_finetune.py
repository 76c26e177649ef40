"""Downstream protocols: multi-view testing, fine-tuning, linear-SGD, export and --init, on hand-built stores whose
answers are known in advance."""

import json
import math

import numpy as np
import pytest
import torch
from stores import write_store

from mvtools.cli import main
from trainer.data import ClipDataset, ClipSpec, Video, crop_view
from trainer.finetune import evaluate_classifier, finetune, linear_sgd
from trainer.loop import TrainConfig, TrainError, load_checkpoint, lr_factor, train
from trainer.multiview import classification_metrics, video_scores
from trainer.weights import encoder_state, mismatches, read_state_dict


def halves_store(path, t: int = 24, videos: int = 2) -> str:
    """32 x 64 videos whose left half is 4 t and right half 4 t + 128 at frame t: a view's frame indices and its
    horizontal offset can be read back from its mean (crop 0 -> 4 t, centre -> 4 t + 64, crop 2 -> 4 t + 128)."""
    frames = np.zeros((t, 32, 64, 3), np.uint8)
    frames[:, :, :32] = (4 * np.arange(t))[:, None, None, None]
    frames[:, :, 32:] = (4 * np.arange(t) + 128)[:, None, None, None]
    return write_store(path, {f"v{i}": {"frames": frames, "label": "ab"[i % 2]} for i in range(videos)})


def mean_levels(rgb: torch.Tensor) -> np.ndarray:
    """Per frame, the clip's mean grey level back in 0..255."""
    from trainer.data import MEAN, STD

    return ((rgb[0].flatten(1).mean(1) * STD + MEAN) * 255).double().numpy()


def test_test_crops_are_squares_spaced_along_the_long_side():
    wide, tall = Video("w", 10, 120, 160, None, None), Video("t", 10, 160, 120, None, None)
    assert [crop_view(wide, 0, c, 3).box for c in range(3)] == [(0, 0, 120, 120), (20, 0, 140, 120),
                                                                 (40, 0, 160, 120)]
    assert [crop_view(tall, 0, c, 3).box[1] for c in range(3)] == [0, 20, 40]
    assert crop_view(wide, 5, 0, 1).box == (20, 0, 140, 120) and crop_view(wide, 5, 0, 1).start == 5


def test_multiview_dataset_gives_every_clip_at_every_crop(tmp_path):
    store = halves_store(tmp_path / "halves.zarr")
    spec = ClipSpec(clip_len=4, stride=2, size=16)  # span 7 of 24 frames: room 17
    data = ClipDataset(store, train=False, clips_per_video=3, crops=3, spec=spec)
    assert len(data) == 2 * 3 * 3
    for i in range(len(data)):
        item = data[i]
        video, rest = divmod(i, 9)
        clip, crop = divmod(rest, 3)
        start = round(17 * (clip + 0.5) / 3)
        expected = 4 * (start + 2 * np.arange(4)) + 64 * crop
        assert item["video"] == video
        np.testing.assert_allclose(mean_levels(item["views"][0]["rgb"]), expected, atol=0.6)


class MeanLogits(torch.nn.Module):
    """logits = (a m, 0) of a clip's mean level m: a classifier with a known softmax."""

    def forward(self, rgb):
        m = rgb.flatten(1).mean(1)
        return torch.stack([3.0 * m, torch.zeros_like(m)], 1)


def test_video_scores_average_the_softmax_over_every_view(tmp_path):
    store = halves_store(tmp_path / "halves.zarr", videos=1)
    data = ClipDataset(store, train=False, clips_per_video=2, crops=3, spec=ClipSpec(clip_len=4, stride=2, size=16))
    scores, labels = video_scores(MeanLogits(), data, batch_size=4, workers=0)
    # Independently: the 6 views' means from the pixel levels (normalised), softmax of (3 m, 0), averaged.
    from trainer.data import MEAN, STD

    ps = []
    for clip in range(2):
        start = round(17 * (clip + 0.5) / 2)
        for crop in range(3):
            level = np.mean(4 * (start + 2 * np.arange(4)) + 64 * crop)
            m = (level / 255 - MEAN) / STD
            ps.append(1 / (1 + math.exp(-3 * m)))
    assert labels.tolist() == [0]
    np.testing.assert_allclose(scores[0].numpy(), [np.mean(ps), 1 - np.mean(ps)], rtol=2e-3)


def test_classification_metrics_on_hand_made_scores():
    classes = ["a", "b", "c", "d", "e", "f"]
    scores = torch.tensor([[.5, .1, .1, .1, .1, .1],   # a -> a
                           [.1, .5, .1, .1, .1, .1],   # a -> b (a is 2nd... tied at .1: still in the top 5)
                           [.0, .1, .2, .3, .4, .0],   # b -> e; b is 4th
                           [.6, .0, .1, .1, .1, .1]])  # c -> a; c among the top 5 (tie)
    labels = torch.tensor([0, 0, 1, 2])
    out = classification_metrics(scores, labels, classes)
    assert out["top1"] == 0.25
    assert out["per_class"] == {"a": 0.5, "b": 0.0, "c": 0.0} and out["mean_class_accuracy"] == pytest.approx(1 / 6)
    assert out["confusion"][0] == [1, 1, 0, 0, 0, 0] and out["confusion"][1][4] == 1 and out["confusion"][2][0] == 1
    top5 = classification_metrics(torch.tensor([[.0, .1, .2, .3, .4, .5]]), torch.tensor([0]), classes)["top5"]
    assert top5 == 0.0 and out["top5"] == 1.0


def test_step_schedule_multiplies_by_gamma_at_each_milestone():
    factors = [lr_factor(s, 0, 100, "step", [0.5, 0.8], 0.1) for s in (0, 49, 50, 79, 80, 99)]
    assert factors == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert lr_factor(0, 4, 100, "step", [0.5]) == 0.25  # warm-up first


def uniform_videos(values, labels) -> dict:
    return {f"v{i:02d}": {"frames": np.full((8, 32, 32, 3), v, np.uint8), "label": lab}
            for i, (v, lab) in enumerate(zip(values, labels))}


SMALL = dict(clip_len=4, size=32, workers=0, batch_size=2, checkpoint_every=100)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A 2-step rgb run on dark / bright videos, and the store."""
    tmp = tmp_path_factory.mktemp("pretrained")
    greys = [10, 20, 30, 40, 5, 15, 25, 35, 200, 210, 220, 230, 205, 215, 225, 235]
    store = write_store(tmp / "db.zarr", uniform_videos(greys, ["dark"] * 8 + ["bright"] * 8))
    run = tmp / "run"
    train(TrainConfig(store=store, out=str(run), steps=2, method_args={"queue": 8}, **SMALL), progress=False)
    return run / "checkpoint.pt", store


def test_finetune_starts_from_the_pretrained_encoder_and_tests_multiview(pretrained, tmp_path):
    checkpoint, store = pretrained
    out = tmp_path / "ft"
    result = finetune(store, out, checkpoint=checkpoint, overrides={**SMALL, "steps": 3, "lr": 0.0},
                      progress=False, plot=True, test_views={"clips": 2, "crops": 3})
    # lr 0: the weights after 3 steps are the pretrained encoder's, parameter for parameter
    pre = load_checkpoint(checkpoint)["model"]
    tuned = load_checkpoint(out / "checkpoint.pt")["model"]
    params = [k for k in tuned if k.startswith("backbone.") and "running" not in k and "num_batches" not in k]
    assert params and all(torch.equal(tuned[k], pre["visual.backbone." + k.removeprefix("backbone.")])
                          for k in params)
    assert result["test_videos"] == 4 and result["views"] == "2 clips x 3 crops" and result["weights"].endswith("(rgb)")
    assert json.loads((out / "test.json").read_text())["top1"] == result["top1"]
    assert (out / "confusion.png").stat().st_size > 1000 and "ce" in (out / "metrics.csv").read_text()


def test_identical_videos_with_alternating_labels_score_exactly_half(tmp_path):
    # Every test video looks the same, so every one gets the same prediction: top-1 = mean class = 1/2.
    store = write_store(tmp_path / "same.zarr", uniform_videos([128] * 16, ["a", "b"] * 8))
    result = finetune(store, tmp_path / "ft", from_scratch=True, overrides={**SMALL, "steps": 4}, progress=False,
                      test_views={"clips": 2, "crops": 1})
    assert result["top1"] == 0.5 and result["mean_class_accuracy"] == 0.5 and result["top5"] == 1.0
    assert sorted(map(sum, zip(*result["confusion"]))) == [0, 4]  # one predicted class for all


def test_finetuning_learns_what_the_labels_say(pretrained, tmp_path):
    _, store = pretrained
    result = finetune(store, tmp_path / "ft", from_scratch=True, progress=False, test_views={"clips": 1, "crops": 1},
                      overrides={**SMALL, "steps": 40, "lr": 0.05, "batch_size": 4})
    assert result["top1"] == 1.0  # dark vs bright: any trained classifier separates them


def test_linear_sgd_trains_only_the_classifier(pretrained, tmp_path):
    checkpoint, store = pretrained
    out = tmp_path / "linear"
    result = linear_sgd(checkpoint, store, out, overrides={**SMALL, "steps": 5}, test_views={"clips": 1, "crops": 3},
                        progress=False)
    assert result["protocol"] == "linear-sgd"
    pre = load_checkpoint(checkpoint)["model"]
    tuned = load_checkpoint(out / "checkpoint.pt")["model"]
    backbone = [k for k in tuned if k.startswith("backbone.")]
    assert backbone and all(torch.equal(tuned[k], pre["visual." + k]) for k in backbone)  # BN statistics too
    assert not torch.equal(tuned["fc.weight"], torch.nn.Linear(*tuned["fc.weight"].shape[::-1]).weight)


def test_export_then_init_round_trips_and_misfits_are_listed(pretrained, tmp_path, capsys):
    checkpoint, store = pretrained
    exported = tmp_path / "encoder.pt"
    assert main(["export", "--checkpoint", str(checkpoint), "-o", str(exported), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["backbone"] == "tiny"
    state = read_state_dict(exported)
    from trainer.loop import build_method

    method = build_method(load_checkpoint(checkpoint)["config"])
    method.load_state_dict(load_checkpoint(checkpoint)["model"])
    assert state.keys() == encoder_state(method).keys() and all(torch.equal(state[k], v)
                                                                 for k, v in encoder_state(method).items())
    out = tmp_path / "ft"
    assert main(["finetune", "--init", str(exported), "--store", store, "--out", str(out), "--steps", "1",
                 "--batch-size", "2", "--workers", "0", "--clips", "1", "--crops", "1", "--quiet",
                 "--config", str(write_recipe(tmp_path))]) == 0
    assert (out / "test.json").exists()
    # A state dict of other shapes: exit 2, the first mismatches named, nothing written.
    bad = {k: (torch.zeros(3, *v.shape[1:]) if k == "stem.0.weight" else v) for k, v in state.items()}
    bad["extra.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pt")
    assert main(["finetune", "--init", str(tmp_path / "bad.pt"), "--store", store, "--out", str(tmp_path / "x"),
                 "--config", str(write_recipe(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "stem.0.weight: shape (3," in err and "extra.weight: not in the backbone" in err
    assert not (tmp_path / "x").exists()


def write_recipe(tmp_path):
    recipe = tmp_path / "tiny_ft.yaml"
    recipe.write_text("backbone: tiny\nclip_len: 4\nsize: 32\nsteps: 2\nbatch_size: 2\nworkers: 0\n")
    return recipe


def test_bad_inputs_exit_2_with_one_line_and_leave_the_run_alone(pretrained, synth_dir, tmp_path, capsys):
    from mvtools.extract import ExtractConfig, extract

    checkpoint, store = pretrained
    unlabelled = tmp_path / "unlabelled.zarr"
    extract(synth_dir, unlabelled, ExtractConfig(labels="none", modalities=("frames",)), progress=False)
    missing_class = write_store(tmp_path / "split.zarr", {
        "a0": {"frames": np.zeros((8, 32, 32, 3), np.uint8), "label": "a", "split": "train"},
        "a1": {"frames": np.zeros((8, 32, 32, 3), np.uint8), "label": "a", "split": "test"},
        "c0": {"frames": np.zeros((8, 32, 32, 3), np.uint8), "label": "c", "split": "test"}})
    base = ["finetune", "--checkpoint", str(checkpoint), "--workers", "0", "--quiet"]
    cases = [(["--store", str(unlabelled), "--out", str(tmp_path / "u")], "has no label"),
             (["--store", missing_class, "--out", str(tmp_path / "m")], "classes c of the test split have no train"),
             (["--store", store, "--out", str(tmp_path / "b"), "--backbone", "r3d_18"], "holds a 'tiny' encoder"),
             (["--store", store, "--out", str(tmp_path / "n"), "--from-scratch"], "exactly one of")]
    for args, message in cases:
        assert main(base + args) == 2, args
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
        assert not (tmp_path / args[3].rsplit("/", 1)[-1]).exists()
    # An existing fine-tuned run is not overwritten without --resume.
    out = tmp_path / "ft"
    finetune(store, out, checkpoint=checkpoint, overrides={**SMALL, "steps": 1}, progress=False,
             test_views={"clips": 1, "crops": 1})
    before = (out / "checkpoint.pt").read_bytes()
    assert main(base + ["--store", store, "--out", str(out)]) == 2
    assert "exists; pass --resume" in capsys.readouterr().err and (out / "checkpoint.pt").read_bytes() == before


def test_eval_picks_the_protocol_of_the_checkpoint(pretrained, tmp_path, capsys):
    checkpoint, store = pretrained
    out = tmp_path / "ft"
    finetune(store, out, checkpoint=checkpoint, overrides={**SMALL, "steps": 1}, progress=False,
             test_views={"clips": 1, "crops": 1})
    png = tmp_path / "confusion.png"
    assert main(["eval", "--checkpoint", str(out / "checkpoint.pt"), "--store", store, "--workers", "0",
                 "--clips", "2", "--crops", "3", "--plot", str(png), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["protocol"] == "multiview" and result["views"] == "2 clips x 3 crops" and png.exists()
    assert result == {**result, **evaluate_classifier(out / "checkpoint.pt", store, clips=2, crops=3, workers=0)}
    assert main(["eval", "--checkpoint", str(out / "checkpoint.pt"), "--store", store, "--protocol", "lbfgs"]) == 2
    assert "fine-tuned classifier" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(checkpoint), "--store", store, "--protocol", "linear-sgd", "--steps", "2",
                 "--workers", "0", "--clips", "1", "--crops", "1", "--clip-len", "4", "--size", "32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["clip"] == {"clip_len": 4, "stride": 2, "size": 32}
    with pytest.raises(TrainError, match="not a classifier"):
        evaluate_classifier(checkpoint, store)


def test_mismatches_name_missing_unexpected_and_reshaped_entries():
    from trainer.models import build

    net = build("tiny")
    state = net.state_dict()
    first = next(iter(state))
    state = {**state, first: torch.zeros(1), "head.weight": torch.zeros(2)}
    del state[list(state)[1]]
    found = mismatches(net, state)
    assert found[0].startswith(f"{first}: shape (1,)") and any(m.endswith(": missing") for m in found)
    assert found[-1] == "head.weight: not in the backbone"


@pytest.mark.parametrize("name", ["ucf101", "hmdb51", "ucf101_tiny", "hmdb51_tiny"])
def test_finetune_recipes_are_valid_and_cite_their_sources(name):
    from pathlib import Path

    from trainer.finetune import read_recipe

    path = Path(__file__).resolve().parents[1] / "pipelines" / "finetune" / f"{name}.yaml"
    fields, views = read_recipe(path)
    config = TrainConfig(**{**fields, "method": "supervised"})
    config.validate()
    assert views == {"clips": 10, "crops": 3} and config.optimizer == "sgd" and config.method_args["dropout"] == 0.5
    assert config.backbone == ("tiny" if name.endswith("_tiny") else "r2plus1d_18")
    if not name.endswith("_tiny"):
        text = path.read_text()
        assert "METHODS.md" in text and "[default]" in text  # what a paper says and what is ours, told apart

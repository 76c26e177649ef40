import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mvtools import open_store
from mvtools.recipes import annotations
from mvtools.synth import encode_video, render

MVTOOLS = str(Path(sys.executable).with_name("mvtools"))


def test_ucf101(tmp_path):
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Basketball\n")
    (lists / "trainlist02.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
                                          "Basketball/v_Basketball_g09_c02.avi 2\n")
    (lists / "testlist02.txt").write_text("Basketball/v_Basketball_g01_c01.avi\n")
    table = annotations("ucf101", tmp_path, split=2)
    assert table == {"v_ApplyEyeMakeup_g08_c01": ("ApplyEyeMakeup", "train"),
                     "v_Basketball_g09_c02": ("Basketball", "train"),
                     "v_Basketball_g01_c01": ("Basketball", "test")}
    with pytest.raises(FileNotFoundError, match="trainlist01"):
        annotations("ucf101", tmp_path, split=1)
    with pytest.raises(ValueError, match="splits 1, 2, 3"):
        annotations("ucf101", tmp_path, split=4)


def test_hmdb51(tmp_path):
    (tmp_path / "brush_hair_test_split1.txt").write_text("a.avi 1\nb.avi 2\nc.avi 0\n")
    (tmp_path / "cartwheel_test_split1.txt").write_text("d.avi 2 \n")
    assert annotations("hmdb51", tmp_path) == {"a": ("brush_hair", "train"), "b": ("brush_hair", "test"),
                                               "d": ("cartwheel", "test")}


def test_kinetics400(tmp_path):
    header = "label,youtube_id,time_start,time_end,split\n"
    (tmp_path / "train.csv").write_text(header + "abseiling,--Ntc_Xd5v0,24,34,train\n")
    (tmp_path / "validate.csv").write_text(header + "\"air drumming\",--nQbRBEz2s,104,114,val\n")
    assert annotations("kinetics400", tmp_path) == {"--Ntc_Xd5v0_000024_000034": ("abseiling", "train"),
                                                    "--nQbRBEz2s_000104_000114": ("air drumming", "val")}


def test_ssv2_and_diving48(tmp_path):
    (tmp_path / "something-something-v2-train.json").write_text(json.dumps(
        [{"id": "78687", "label": "holding potato", "template": "Holding [something] next to [something]",
          "placeholders": ["potato", "vicks"]}]))
    (tmp_path / "something-something-v2-validation.json").write_text(json.dumps(
        [{"id": "74225", "label": "x", "template": "Spinning [something] that quickly stops spinning"}]))
    assert annotations("ssv2", tmp_path) == {"78687": ("Holding something next to something", "train"),
                                             "74225": ("Spinning something that quickly stops spinning", "val")}
    (tmp_path / "Diving48_V2_train.json").write_text(json.dumps([{"vid_name": "-mmq0PT-u8k_00155", "label": 0}]))
    (tmp_path / "Diving48_V2_test.json").write_text(json.dumps([{"vid_name": "zzz_00001", "label": 47}]))
    assert annotations("diving48", tmp_path) == {"-mmq0PT-u8k_00155": ("0", "train"), "zzz_00001": ("47", "test")}
    with pytest.raises(ValueError, match="unknown recipe"):
        annotations("imagenet", tmp_path)


def test_extract_with_the_ucf101_recipe_stores_label_and_split(tmp_path):
    src = tmp_path / "UCF-101"
    for rel, motion in [("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "left"),
                        ("Basketball/v_Basketball_g01_c01.avi", "up"),
                        ("Basketball/v_Basketball_g99_c09.avi", "up")]:  # listed in no split file
        encode_video(src / rel, render(motion, np.random.default_rng(0), num_frames=8, width=64, height=48))
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Basketball\n")
    (lists / "trainlist02.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n")
    (lists / "testlist02.txt").write_text("Basketball/v_Basketball_g01_c01.avi\n")
    out = subprocess.run([MVTOOLS, "extract", src, "-o", tmp_path / "u.zarr", "--recipe", "ucf101", "--split", "2",
                          "--annotations", lists, "--workers", "0", "--quiet"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    store = open_store(tmp_path / "u.zarr")
    got = {store[k].attrs["source"]: (store[k].attrs["label"], store[k].attrs["split"]) for k in store}
    assert got == {"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi": ("ApplyEyeMakeup", "train"),
                   "Basketball/v_Basketball_g01_c01.avi": ("Basketball", "test")}
    bad = subprocess.run([MVTOOLS, "extract", src, "-o", tmp_path / "v.zarr", "--recipe", "ucf101", "--split", "1",
                          "--annotations", lists], capture_output=True, text=True)
    assert bad.returncode == 2 and "trainlist01" in bad.stderr

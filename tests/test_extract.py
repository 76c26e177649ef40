import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from mvtools import open_store
from mvtools.extract import ExtractConfig, discover, extract, label_of, plan, sanitize, video_keys


def test_discover_recurses_sorts_and_survives_symlink_loops(tmp_path):
    (tmp_path / "b" / "deep").mkdir(parents=True)
    (tmp_path / "a").mkdir()
    for rel in ["b/deep/x.MP4", "a/y.avi", "a/z.webm", "a/notes.txt", "top.mkv"]:
        (tmp_path / rel).write_bytes(b"")
    os.symlink(tmp_path, tmp_path / "b" / "loop")  # a folder that contains itself
    os.symlink(tmp_path / "gone.mp4", tmp_path / "a" / "dangling.mp4")
    found = discover(tmp_path)
    assert found == ["a/dangling.mp4", "a/y.avi", "a/z.webm", "b/deep/x.MP4", "top.mkv"]
    with pytest.raises(FileNotFoundError):
        discover(tmp_path / "missing")


def test_keys_are_sanitized_and_unique():
    assert sanitize("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi") == "ApplyEyeMakeup__v_ApplyEyeMakeup_g01_c01"
    assert sanitize(".hidden.mp4") == "hidden" and sanitize("_x/__init__.mp4") == "x__init"
    odd = ["my class/it's a \"clip\".mp4", "café/vidéo 1.mp4", "a/b.mp4", "a/b.avi", "a b/c.mp4", "a_b/c.mp4"]
    keys = video_keys(odd)
    assert len(set(keys.values())) == len(odd)
    for k in keys.values():
        assert k.isascii() and "/" not in k and " " not in k and "'" not in k and '"' not in k
        assert not k.startswith((".", "_"))
    assert keys["a/b.mp4"] != keys["a/b.avi"] and keys["a/b.mp4"].startswith("a__b-")
    assert video_keys(["x/y.mp4"]) == {"x/y.mp4": "x__y"}


def test_label_of():
    assert label_of("jump/v1.mp4", "folder") == "jump"
    assert label_of("ucf/jump/v1.mp4", "folder") == "jump"
    assert label_of("v1.mp4", "folder") is None
    assert label_of("jump/v1.mp4", "none") is None


def test_bad_inputs_are_reported_and_the_job_goes_on(synth_dir, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(synth_dir, src)
    (src / "left" / "empty.mp4").touch()
    (src / "left" / "text.mp4").write_text("not a video")
    (src / "left" / "noise.avi").write_bytes(np.random.default_rng(0).bytes(20_000))
    os.symlink(src / "nowhere.mp4", src / "left" / "broken.mp4")
    odd = src / "rotate_cw" / "it's a \"clip\" é.mp4"
    shutil.copy(synth_dir / "left" / "left_0000.mp4", odd)
    report = extract(src, tmp_path / "s.zarr", progress=False)
    assert len(report.extracted) == 5
    assert set(report.failed) == {"left/empty.mp4", "left/text.mp4", "left/noise.avi", "left/broken.mp4"}
    assert "empty" in report.failed["left/empty.mp4"] and "broken symlink" in report.failed["left/broken.mp4"]
    store = open_store(tmp_path / "s.zarr")
    assert len(store.keys()) == 5 and store.attrs["failures"] == report.failed
    odd_key = next(k for k in store.keys() if store[k].attrs["source"] == str(odd.relative_to(src)))
    assert store[odd_key].attrs["label"] == "rotate_cw"


def test_rerun_skips_complete_videos_and_redoes_changed_ones(synth_dir, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(synth_dir, src)
    first = extract(src, tmp_path / "s.zarr", progress=False)
    before = open_store(tmp_path / "s.zarr")[first.extracted[0]].mv[:]
    second = extract(src, tmp_path / "s.zarr", progress=False)
    assert second.extracted == [] and sorted(second.skipped) == sorted(first.extracted)
    shutil.copy(src / "rotate_cw" / "rotate_cw_0001.mp4", src / "left" / "left_0000.mp4")
    third = extract(src, tmp_path / "s.zarr", progress=False)
    assert third.extracted == ["left__left_0000"]
    after = open_store(tmp_path / "s.zarr")["left__left_0000"]
    assert after.attrs["label"] == "left" and not np.array_equal(after.mv[:], before)


def test_motion_vector_only_mode_skips_pixels_but_keeps_keyframes(synth_dir, synth_store, tmp_path):
    config = ExtractConfig(modalities=("mv", "keyframes"))
    extract(synth_dir, tmp_path / "mv.zarr", config, progress=False)
    fast, full = open_store(tmp_path / "mv.zarr"), open_store(synth_store)
    assert fast.keys() == full.keys()
    for key in fast.keys():
        a, b = fast[key], full[key]
        assert sorted(a.arrays()) == ["frame_type", "keyframe_index", "keyframes", "mv", "mv_mask", "pts"]
        np.testing.assert_array_equal(a.mv[:], b.mv[:])
        np.testing.assert_array_equal(a.keyframe_index[:], b.keyframe_index[:])
        assert np.abs(a.keyframes[:].astype(int) - b.keyframes[:]).max() <= 1


def test_config_validation():
    with pytest.raises(ValueError, match="unknown modalities"):
        ExtractConfig(modalities=("frames", "optical"))
    with pytest.raises(ValueError, match="even"):
        ExtractConfig(size=127)


def test_yaml_recipes_fill_the_config_and_flags_override(tmp_path):
    root = Path(__file__).resolve().parents[1] / "pipelines"
    assert ExtractConfig.from_yaml(root / "extract.yaml") == ExtractConfig()
    mv_only = ExtractConfig.from_yaml(root / "mv_only.yaml", size=64)
    assert mv_only.modalities == ("mv", "keyframes") and mv_only.size == 64
    for recipe in ("ucf101", "hmdb51", "kinetics400", "ssv2", "diving48"):
        assert ExtractConfig.from_yaml(root / f"{recipe}.yaml").size == 128
    bad = tmp_path / "bad.yaml"
    bad.write_text("size: 128\nsharpness: 3\n")
    with pytest.raises(ValueError, match="sharpness"):
        ExtractConfig.from_yaml(bad)


def _mtimes(store_dir, key) -> dict:
    """Modification times of every file of a video group except its own zarr.json (the attributes)."""
    group = store_dir / "videos" / key
    return {p: p.stat().st_mtime_ns for p in group.rglob("*") if p.is_file() and p != group / "zarr.json"}


def test_quick_check_trusts_size_and_mtime_and_verify_rehashes(synth_dir, tmp_path):
    src, store = tmp_path / "src", tmp_path / "s.zarr"
    shutil.copytree(synth_dir, src)
    extract(src, store, progress=False)
    victim = src / "left" / "left_0000.mp4"
    st = victim.stat()
    victim.write_bytes(b"\0" * st.st_size)  # other content, same size, and the old mtime restored:
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    work = plan(src, open_store(store), ExtractConfig())
    assert work.jobs == [] and len(work.unchanged) == 4  # skipped without opening (it is no video any more)
    again = extract(src, store, progress=False)
    assert again.extracted == [] and len(again.skipped) == 4 and not again.failed
    verified = extract(src, store, progress=False, verify=True)
    assert list(verified.failed) == ["left/left_0000.mp4"] and len(verified.skipped) == 3
    assert "left__left_0000" in open_store(store)  # the copy of the old content is kept, the failure recorded


def test_a_touched_source_is_rehashed_once_not_reextracted(synth_dir, tmp_path):
    src, store = tmp_path / "src", tmp_path / "s.zarr"
    shutil.copytree(synth_dir, src)
    extract(src, store, progress=False)
    key, victim = "left__left_0000", src / "left" / "left_0000.mp4"
    arrays_before = _mtimes(store, key)
    later = victim.stat().st_mtime_ns + 5_000_000_000
    os.utime(victim, ns=(later, later))  # touched: same bytes, new mtime
    work = plan(src, open_store(store), ExtractConfig())
    assert [j.key for j in work.jobs] == [key] and work.jobs[0].expect_sha256 == open_store(store)[key].attrs["sha256"]
    report = extract(src, store, progress=False)
    assert report.extracted == [] and key in report.skipped
    assert open_store(store)[key].attrs["source_mtime_ns"] == later and _mtimes(store, key) == arrays_before
    assert plan(src, open_store(store), ExtractConfig()).jobs == []  # refreshed: the next run skips it unopened
    relabelled = extract(src, store, ExtractConfig(labels="none"), progress=False)  # same settings, other labels
    assert relabelled.extracted == [] and len(relabelled.skipped) == 4
    assert open_store(store)[key].attrs["label"] is None and _mtimes(store, key) == arrays_before
    assert open_store(store).attrs["labels"] == []


def test_reencode_to_short_gops_without_b_frames(real_h264, tmp_path):
    """MCD's preprocessing: every clip gets a nearby I-frame and every P-frame points to the previous frame."""
    import subprocess
    import sys

    mvtools = str(Path(sys.executable).with_name("mvtools"))
    (tmp_path / "src" / "a").mkdir(parents=True)
    shutil.copy(real_h264, tmp_path / "src" / "a" / "clip.mp4")
    for codec, gop, key in (("h264", 12, "h.zarr"), ("mpeg4", 8, "m.zarr")):
        run = subprocess.run([mvtools, "extract", tmp_path / "src", "-o", tmp_path / key, "--workers", "0", "--quiet",
                              "--modalities", "mv,keyframes", "--reencode", codec, "--gop", str(gop), "--bframes", "0"],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        store = open_store(tmp_path / key)
        view = store["a__clip"]
        types = view.frame_type[:]
        assert list(np.flatnonzero(types == 0)) == list(range(0, len(types), gop)) and not (types == 2).any()
        assert view.attrs["transcoded"] is True and view.attrs["codec"] == "h264" and len(view) == 337
        assert store.settings["reencode"] == {"codec": codec, "gop": gop, "bframes": 0}
    run = subprocess.run([mvtools, "extract", tmp_path / "src", "-o", tmp_path / "h.zarr", "--workers", "0", "--quiet",
                          "--modalities", "mv,keyframes", "--reencode", "h264", "--gop", "16", "--bframes", "0"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "other settings" in run.stderr
    with pytest.raises(ValueError, match="--reencode"):
        ExtractConfig(gop=12)


def test_a_task_of_several_videos_reads_no_other_video(synth_dir, tmp_path, monkeypatch):
    """Mid-run the index is stale: any listing of the store would read every video group, per video (O(N^2) at
    scale). A task holding the store must write its videos without one."""
    from mvtools.extract import Job, begin_run, open_run, run_jobs
    from mvtools.store import Store

    config = ExtractConfig(modalities=("frames", "mv"))
    store, work = open_run(synth_dir, tmp_path / "s.zarr", config)
    begin_run(store, work)
    scans = []
    real_scan = Store.scan
    monkeypatch.setattr(Store, "scan", lambda self: scans.append(1) or real_scan(self))
    jobs = [Job(rel=p.relative_to(synth_dir).as_posix(), key=f"k{i}", path=str(p), fresh=True)
            for i, p in enumerate(sorted(synth_dir.rglob("*.mp4")))]
    outcomes = run_jobs(jobs, str(tmp_path / "s.zarr"), config)
    assert [o.error for o in outcomes] == [None] * len(jobs) and len(jobs) == 4
    assert scans == []

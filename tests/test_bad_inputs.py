"""Every kind of awkward input from the field, in one dataset: each either extracts correctly or fails
with a one-line reason naming it, and the others are written."""

import os
import shutil

import numpy as np
import pytest

from mvtools import open_store
from mvtools.extract import extract
from mvtools.synth import encode_video, render

VFR_MS = [0, 40, 80, 150, 200, 330, 360, 400, 520, 560, 600, 700]


def frames(n=12, w=160, h=96, seed=0, motion="left"):
    return render(motion, np.random.default_rng(seed), num_frames=n, width=w, height=h)


@pytest.fixture(scope="module")
def awkward(tmp_path_factory, real_h264):
    src = tmp_path_factory.mktemp("awkward") / "src"
    good = src / "good"
    good.mkdir(parents=True)
    encode_video(good / "plain.mp4", frames())
    encode_video(good / "one frame.mp4", frames(n=1))
    encode_video(good / "odd size.mp4", frames(w=322, h=242))
    encode_video(good / "rotated.mp4", frames(), rotation=90)
    encode_video(good / "vfr.mp4", frames(), pts=VFR_MS)
    encode_video(good / "it's \"quoted\" – ünïcode.mp4", frames(seed=3))
    encode_video(good / "a b.mp4", frames(seed=4))  # a b.mp4 and a_b.mp4 sanitize to the same key
    encode_video(good / "a_b.mp4", frames(seed=5))
    encode_video(good / "hevc.mkv", frames(), codec="libx265", bframes=0)
    encode_video(good / "vp9.webm", frames(), codec="libvpx-vp9", bframes=0)
    encode_video(good / "av1.mkv", frames(), codec="libsvtav1", bframes=0)
    bad = src / "bad"
    bad.mkdir()
    (bad / "zero.mp4").touch()
    cut = real_h264.read_bytes()
    (bad / "truncated.mp4").write_bytes(cut[: len(cut) // 3])
    (bad / "random.mp4").write_bytes(np.random.default_rng(0).bytes(40_000))
    (bad / "text.mp4").write_text("hello, I am not a video\n")
    _audio_only(bad / "audio.mp4")  # audio only, with a video extension
    os.symlink(src / "does-not-exist.mp4", bad / "dangling.mp4")
    os.symlink(src, bad / "loop")  # a folder containing itself
    return src


def _audio_only(path):
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for _ in range(4):
            c.mux(s.encode(frame))
        c.mux(s.encode())


@pytest.fixture(scope="module")
def result(awkward, tmp_path_factory):
    path = tmp_path_factory.mktemp("s") / "awkward.zarr"
    return extract(awkward, path, progress=False), open_store(path)


def by_source(store, rel):
    return next(store[k] for k in store.keys() if store[k].attrs["source"] == rel)


def test_bad_files_fail_with_a_reason_and_the_rest_is_written(result):
    report, store = result
    reasons = {rel.split("/")[-1]: reason for rel, reason in report.failed.items()}
    assert set(reasons) == {"zero.mp4", "truncated.mp4", "random.mp4", "text.mp4", "audio.mp4", "dangling.mp4"}
    assert "empty" in reasons["zero.mp4"] and "broken symlink" in reasons["dangling.mp4"]
    assert "no video stream" in reasons["audio.mp4"] and "truncated" in reasons["truncated.mp4"]
    assert all("\n" not in r for r in reasons.values())
    assert len(store.keys()) == 11 and store.incomplete() == []
    assert store.attrs["failures"] == report.failed


def test_odd_sizes_single_frames_and_names(result):
    _, store = result
    odd = by_source(store, "good/odd size.mp4")
    assert (odd.attrs["width"], odd.attrs["height"]) == (322, 242) and odd.frames.shape == (12, 128, 170, 3)
    assert odd.mv.shape == (12, 32, 43, 4)
    one = by_source(store, "good/one frame.mp4")
    assert len(one) == 1 and one.frame_type[:].tolist() == [0] and one.keyframe_index[:].tolist() == [0]
    quoted = by_source(store, "good/it's \"quoted\" – ünïcode.mp4")
    assert quoted.key.isascii() and "'" not in quoted.key and " " not in quoted.key
    ab = {by_source(store, "good/a b.mp4").key, by_source(store, "good/a_b.mp4").key}
    assert len(ab) == 2 and all(k.startswith("good__a_b-") for k in ab)


def test_rotation_is_recorded_and_vfr_timestamps_kept(result):
    _, store = result
    assert by_source(store, "good/rotated.mp4").attrs["rotation"] == 90
    assert by_source(store, "good/plain.mp4").attrs["rotation"] == 0
    vfr = by_source(store, "good/vfr.mp4")
    np.testing.assert_allclose(vfr.pts[:], np.array(VFR_MS) / 1000)


def test_codecs_without_vectors_are_transcoded(result):
    _, store = result
    for rel, codec in (("good/hevc.mkv", "hevc"), ("good/vp9.webm", "vp9"), ("good/av1.mkv", "libdav1d")):
        view = by_source(store, rel)
        assert view.attrs["transcoded"] is True and view.attrs["codec"] == codec
        assert view.mv_mask[1:].any(), f"{rel}: the H.264 re-encode carries vectors"
        assert len(view) == 12
    assert by_source(store, "good/plain.mp4").attrs["transcoded"] is False


def test_transcode_never_makes_them_failures(awkward, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(awkward / "good" / "hevc.mkv", src / "hevc.mkv")
    shutil.copy(awkward / "good" / "plain.mp4", src / "plain.mp4")
    report = extract(src, tmp_path / "n.zarr", transcode="never", progress=False)
    assert report.extracted == ["plain"] and "codec hevc carries no motion vectors" in report.failed["hevc.mkv"]


def test_include_and_exclude_globs(awkward, tmp_path):
    report = extract(awkward, tmp_path / "g.zarr", include=["good/*.mp4"], exclude=["*a_b*", "*a b*"],
                     progress=False)
    assert len(report.extracted) == 6 and not report.failed  # .mp4 only: no hevc.mkv, vp9.webm, av1.mkv
    assert {"good__plain", "good__one_frame", "good__odd_size", "good__rotated", "good__vfr"} < set(report.extracted)
    assert not any(k.startswith("good__a_b") for k in report.extracted)


def test_a_file_without_read_permission(awkward, tmp_path):
    import subprocess
    import sys

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(awkward / "good" / "plain.mp4", src / "readable.mp4")
    shutil.copy(awkward / "good" / "plain.mp4", src / "locked.mp4")
    (src / "locked.mp4").chmod(0o000)
    code = ("import sys; from mvtools.extract import extract\n"
            "r = extract(sys.argv[1], sys.argv[2], progress=False); print(r.extracted, r.failed)")
    cmd = [sys.executable, "-c", code, str(src), str(tmp_path / "s.zarr")]
    if os.geteuid() == 0:  # root reads anything: drop the capabilities that let it (util-linux setpriv)
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and setpriv (util-linux) is not installed")
        cmd = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['readable'] {'locked.mp4': 'permission denied'}"

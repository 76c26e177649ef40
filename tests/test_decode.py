import os

import av
import numpy as np
import pytest
from mvextractor.videocap import VideoCap

from mvtools import VideoError, iter_motion, probe
from mvtools.decode import MV_COLUMNS
from mvtools.synth import encode_video, render


def mvextractor_records(path):
    cap = VideoCap()
    assert cap.open(str(path))
    cap.set_decode_frames(False)  # after open(): open() resets it
    out = []
    while True:
        ok, _frame, mvs, frame_type = cap.read()
        if not ok:
            break
        out.append((mvs, frame_type))
    cap.release()
    return out


def single_threaded_reference(path):
    """FFmpeg decoding with one thread, side data read through PyAV's own structured view."""
    out = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_count = 1
        s.codec_context.options = {"flags2": "+export_mvs"}
        for f in c.decode(s):
            sd = f.side_data.get("MOTION_VECTORS")
            if sd is None:
                out.append(np.zeros((0, 10), np.int32))
            else:
                a = sd.to_ndarray()
                out.append(np.stack([a[name].astype(np.int32) for name in MV_COLUMNS], axis=1))
    return out


@pytest.mark.parametrize("fixture", ["real_h264", "real_mpeg4"])
def test_vectors_identical_to_mvextractor(fixture, request):
    path = request.getfixturevalue(fixture)
    ref = mvextractor_records(path)
    ours = list(iter_motion(path, decode_frames=False))
    assert len(ours) == len(ref) == 337
    for rec, (mvs, frame_type) in zip(ours, ref):
        assert rec.motion_vectors.dtype == np.int32 and rec.motion_vectors.shape[1] == 10
        np.testing.assert_array_equal(rec.motion_vectors, mvs, err_msg=f"frame {rec.index}")
        assert rec.pict_type == frame_type


def test_pixel_decode_gives_the_same_vectors(real_mpeg4):
    fast = list(iter_motion(real_mpeg4, decode_frames=False))
    full = iter_motion(real_mpeg4, decode_frames=True)
    for a, b in zip(fast, full):
        assert a.frame is None and b.frame.shape == (720, 1280, 3) and b.frame.dtype == np.uint8
        np.testing.assert_array_equal(a.motion_vectors, b.motion_vectors)


@pytest.mark.parametrize("fixture", ["bframe_video", "bframe_mpeg4_video"])
def test_bframe_vectors_exact_against_single_threaded_ffmpeg(fixture, request):
    bframe_video = request.getfixturevalue(fixture)
    ours = list(iter_motion(bframe_video, decode_frames=False))
    ref = single_threaded_reference(bframe_video)
    assert len(ours) == len(ref) == 60
    assert {r.pict_type for r in ours} == {"I", "P", "B"}
    for rec, mvs in zip(ours, ref):
        np.testing.assert_array_equal(rec.motion_vectors, mvs, err_msg=f"frame {rec.index}")
    futures = np.concatenate([r.motion_vectors for r in ours if r.pict_type == "B"])
    assert (futures[:, 0] == 1).any(), "B-frames should carry future (source=+1) vectors"


def test_bframe_vectors_agree_with_mvextractor(bframe_video):
    # mvextractor decodes with frame threading, which perturbs a few B-frames run to run (NOTES.md):
    # every frame must match exactly in at least one of a few mvextractor runs.
    ours = list(iter_motion(bframe_video, decode_frames=False))
    unmatched = set(range(len(ours)))
    for _ in range(4):
        ref = mvextractor_records(bframe_video)
        assert [r.pict_type for r in ours] == [t for _, t in ref]
        unmatched = {i for i in unmatched if not np.array_equal(ours[i].motion_vectors, ref[i][0])}
        if not unmatched:
            break
    assert not unmatched, f"frames never matching mvextractor: {sorted(unmatched)}"


def test_mpeg4_bframes_agree_with_mvextractor_but_one_known_case(bframe_mpeg4_video):
    # With two consecutive MPEG-4 B-frames, mvextractor (which bundles another FFmpeg) returns other
    # vectors for the B-frame right after an I/P frame, the same in every run; single-threaded FFmpeg,
    # the reference for B-frame video, is matched exactly by the test above. Everything else must agree.
    ours = list(iter_motion(bframe_mpeg4_video, decode_frames=False))
    ref = mvextractor_records(bframe_mpeg4_video)
    types = "".join(r.pict_type for r in ours)
    assert types == "".join(t for _, t in ref)
    differ = [i for i, (r, (m, _)) in enumerate(zip(ours, ref)) if not np.array_equal(r.motion_vectors, m)]
    known = all(types[i] == "B" and types[i - 1] in "IP" for i in differ)
    assert known, f"frames differing outside the known case: {differ}"
    assert len(differ) < types.count("B")


def test_records_in_display_order(bframe_video):
    recs = list(iter_motion(bframe_video, frame_size=(160, 120)))
    assert [r.index for r in recs] == list(range(60))
    pts = [r.pts for r in recs]
    assert pts == sorted(pts) and pts[0] == 0.0 and pts[1] == pytest.approx(1 / 25)
    assert recs[0].pict_type == "I" and recs[0].is_keyframe
    assert recs[0].frame.shape == (120, 160, 3)


def test_probe(real_h264):
    info = probe(real_h264)
    assert (info.codec, info.width, info.height, info.fps, info.num_frames) == ("h264", 1280, 720, 25.0, 337)


def _expect_video_error(path, fragment):
    with pytest.raises(VideoError) as err:
        list(iter_motion(path, decode_frames=False))
    assert str(path) in str(err.value) and fragment in err.value.reason
    assert "\n" not in str(err.value)


def test_bad_inputs_raise_video_error(tmp_path, real_h264):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    _expect_video_error(empty, "empty")
    _expect_video_error(tmp_path / "missing.mp4", "not found")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    _expect_video_error(junk, "cannot open")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 100)
    _expect_video_error(text, "cannot open")
    cut_header = tmp_path / "cut_header.mp4"  # index (moov) at the end: cut, the file cannot open
    data = real_h264.read_bytes()
    cut_header.write_bytes(data[: len(data) // 2])
    _expect_video_error(cut_header, "truncated/corrupt")
    link = tmp_path / "dangling.mp4"
    os.symlink(tmp_path / "nowhere.mp4", link)
    _expect_video_error(link, "broken symlink")


def test_truncated_faststart_file(tmp_path):
    # Index at the front: the file opens, and decoding runs out of data half way.
    whole = encode_video(tmp_path / "whole.mp4", render("left", np.random.default_rng(1), num_frames=40),
                         faststart=True)
    cut = tmp_path / "cut.mp4"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    assert len(list(iter_motion(whole, decode_frames=False))) == 40
    _expect_video_error(cut, "truncated")


def test_audio_only_file(tmp_path):
    path = tmp_path / "tone.m4a"
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        t = np.arange(16000, dtype=np.float32) / 16000
        frame = av.AudioFrame.from_ndarray(np.sin(2 * np.pi * 440 * t)[None, :1024].astype(np.float32),
                                           format="fltp", layout="mono")
        frame.sample_rate = 16000
        for _ in range(5):
            c.mux(s.encode(frame))
        c.mux(s.encode())
    _expect_video_error(path, "no video stream")

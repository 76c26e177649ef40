import numpy as np

from mvtools import iter_motion, probe
from mvtools.features import FRAME_TYPE_CODES, iter_features, stored_size
from mvtools.motion import frame_difference


def features(path, short_side, **kw):
    info = probe(path)
    size = stored_size(info.width, info.height, short_side)
    recs = iter_motion(path, frame_size=size)
    return list(iter_features(recs, (info.width, info.height), size, **kw)), size


def test_stored_size_keeps_aspect_and_short_side():
    assert stored_size(1280, 720, 128) == (228, 128)
    assert stored_size(240, 320, 128) == (128, 170)
    assert stored_size(322, 242, 128) == (170, 128)


def test_features_in_display_order_with_motion_compensation(bframe_video):
    feats, (w, h) = features(bframe_video, 120)
    assert [f.index for f in feats] == list(range(60))
    types = {f.frame_type for f in feats}
    assert types == {FRAME_TYPE_CODES[t] for t in "IPB"}
    for f in feats:
        assert f.frame.shape == (h, w, 3) and f.mv.shape == (h // 4, w // 4, 4)
        assert f.residual.dtype == np.int16 and f.residual.shape == f.frame.shape
        if f.frame_type == FRAME_TYPE_CODES["I"]:
            assert not f.mv_mask.any() and not f.residual.any()
    b_frames = [f for f in feats if f.frame_type == FRAME_TYPE_CODES["B"]]
    assert any(f.mv_mask[..., 1].any() for f in b_frames), "B-frames keep their future field"
    # Motion compensation must explain most of the change between frames (NOTES: ~30-50% of |diff|).
    frames = np.stack([f.frame for f in feats])
    diff = np.abs(frame_difference(frames)).mean(axis=(1, 2, 3))
    res = np.array([np.abs(f.residual).mean() for f in feats])
    inter = np.array([f.frame_type != FRAME_TYPE_CODES["I"] for f in feats])
    assert res[inter].mean() < 0.6 * diff[inter].mean()


def test_accumulated_motion_grows_along_the_gop(tmp_path):
    from mvtools.synth import encode_video, render

    path = encode_video(tmp_path / "right.mp4",
                        render("right", np.random.default_rng(3), num_frames=20, width=256, height=128),
                        bframes=0, gop=100, refs=1)
    # One reference frame: FFmpeg does not export which reference a vector uses (see README).
    feats, _ = features(path, 128, accumulate=True)
    # The camera moves right at constant speed: per frame dx is constant, accumulated dx grows linearly.
    step = np.median([np.median(f.mv[..., 0][f.mv_mask[..., 0]]) for f in feats[1:]])
    centre = [float(np.median(f.mv_acc[8:24, 16:48, 0])) for f in feats]
    assert step > 1.0
    np.testing.assert_allclose(centre[10], 10 * step, rtol=0.1)
    assert centre[0] == 0.0 and np.all(np.diff(centre[1:12]) > 0)

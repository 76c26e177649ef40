import shutil

import av
import cv2
import numpy as np
import pytest
import zarr
from PIL import Image

from mvtools import show
from mvtools.cli import main

LEFT = "left__left_0000"  # the camera moves left: the scene moves right (+x) in the image


def hue_degrees(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb, np.uint8), cv2.COLOR_RGB2HSV)[..., 0].astype(float) * 2


def uniform(dx: float, dy: float, shape=(6, 8)) -> np.ndarray:
    return np.broadcast_to(np.array([dx, dy], np.float32), (*shape, 2))


def test_hsv_hue_is_the_direction_with_y_down():
    right = show.flow_to_hsv(uniform(3, 0))
    assert right.shape == (6, 8, 3) and right.dtype == np.uint8
    assert (right == [255, 0, 0]).all()  # hue 0: red
    for (dx, dy), angle in (((0, 2), 90), ((-1, 0), 180), ((0, -5), 270), ((1, 1), 45)):
        np.testing.assert_allclose(hue_degrees(show.flow_to_hsv(uniform(dx, dy))), angle, atol=2)


def test_hsv_value_is_the_magnitude():
    assert (show.flow_to_hsv(uniform(0, 0)) == 0).all()  # no motion: black
    half = show.flow_to_hsv(uniform(0, 1), max_magnitude=2)
    assert cv2.cvtColor(half, cv2.COLOR_RGB2HSV)[..., 2].max() in (127, 128)
    assert cv2.cvtColor(show.flow_to_hsv(uniform(0, 9), max_magnitude=2), cv2.COLOR_RGB2HSV)[..., 2].min() == 255


def test_colour_wheel_is_the_legend():
    wheel = show.colour_wheel(33)
    assert wheel.shape == (33, 33, 4) and wheel[0, 0, 3] == 0 and wheel[16, 16, 3] == 255
    assert tuple(wheel[16, 32, :3]) == (255, 0, 0)  # the right rim: motion to the right
    np.testing.assert_allclose(hue_degrees(wheel[32:33, 16:17, :3]), 90, atol=2)  # the bottom: down


def test_diverging_is_centred_at_zero():
    values = np.array([[[-50] * 3, [0] * 3, [50] * 3]], np.int16)
    (neg, zero, pos), = show.diverging(values, limit=50).astype(int)
    assert neg[2] > neg[0] and pos[0] > pos[2]  # blue below zero, red above
    assert zero.min() > 230  # white-ish at 0


def test_forward_motion_negates_past_vectors():
    mv = np.zeros((2, 2, 4), np.float32)
    mask = np.zeros((2, 2, 2), bool)
    mv[0, 0], mask[0, 0] = (2, 1, 0, 0), (True, False)  # came from 2 px right: moves left
    mv[0, 1], mask[0, 1] = (0, 0, 0, 3), (False, True)  # goes 3 px down
    motion, known = show.forward_motion(mv, mask)
    np.testing.assert_array_equal(motion[0], [[-2, -1], [0, 3]])
    assert known.tolist() == [[True, True], [False, False]] and not motion[1].any()


def test_arrows_average_blocks_and_skip_still_ones():
    motion, mask = uniform(1, 0, (8, 8)).copy(), np.ones((8, 8), bool)
    motion[:4, :4] = 0  # one still block of 4x4 cells (16x16 px)
    x, y, u, v = show.arrow_samples(motion, mask, cell=4, spacing=16)
    assert len(x) == 3 and set(zip(x, y)) == {(24, 8), (8, 24), (24, 24)}
    assert (u == 1).all() and (v == 0).all()


def sample(index=3, h=32, w=48):
    rng = np.random.default_rng(index)
    mv = np.zeros((h // 4, w // 4, 4), np.float16)
    mv[..., 0] = -2  # moves right
    return {"index": index, "frame_type": 1, "frames": rng.integers(0, 255, (h, w, 3), np.uint8),
            "mv": mv, "mv_mask": np.ones((h // 4, w // 4, 2), bool),
            "residual": rng.integers(-20, 20, (h, w, 3)).astype(np.int8),
            "framediff": rng.integers(-40, 40, (h, w, 3)).astype(np.int16)}


def test_panels_titles_and_grid_size():
    samples = [sample(3), sample(4)]
    mods = ("frames", "mv", "residual", "framediff")
    rows = [show.frame_panels(s, mods, show.scales(samples)) for s in samples]
    assert [p.title for p in rows[0]] == [f"frame 3 · P · {m}" for m in mods]
    assert len(rows[0][0].arrows[0]) == 6  # 48x32 px at one arrow per 16 px
    assert (rows[1][1].image == [255, 0, 0]).all()  # the field panel: all red, moving right
    grid = show.layout(2, 4, (32, 48), panel_height=64)
    assert grid.size == (4 * 96, 2 * (64 + 20)) and len(grid.boxes()) == 8
    image = show.render_grid(rows, panel_height=64)
    assert image.shape == (2 * 84, 4 * 96, 3) and image.dtype == np.uint8
    field = image[84 - 64 + 10:84 - 20, 96 + 10:96 + 50]  # inside row 0's mv panel, clear of the legend
    assert (np.abs(field.astype(int) - [255, 0, 0]).max(axis=-1) < 40).mean() > 0.9


def test_store_source_shows_the_motion(synth_store):
    clip = show.from_store(synth_store, LEFT, slice(4, 10, 2), None, limit=32)
    assert clip.modalities == ("frames", "mv", "residual", "framediff")  # no flow stored
    assert [s["index"] for s in clip.samples] == [4, 6, 8] and clip.fps == 25.0
    s = clip.samples[0]
    assert s["frames"].shape == (128, 192, 3) and s["mv"].shape == (32, 48, 4) and s["framediff"].dtype == np.int16
    p_frame = next(s for s in clip.samples if s["frame_type"] != 0)
    motion, known = show.forward_motion(p_frame["mv"], p_frame["mv_mask"])
    assert np.median(motion[known][:, 0]) > 1 and abs(np.median(motion[known][:, 1])) < 0.5
    hue = hue_degrees(show.flow_to_hsv(motion[known][None], 4.0))
    assert np.median(np.minimum(hue, 360 - hue)) < 10  # red: to the right


def test_frame_ranges():
    assert show.parse_frames("2:5") == slice(2, 5) and show.parse_frames("-3:") == slice(-3, None)
    assert show.parse_frames("7") == slice(7, 8) and show.parse_frames("::2") == slice(None, None, 2)
    for bad in ("a:b", "1:2:0", "1:2:3:4"):
        with pytest.raises(ValueError, match="--frames"):
            show.parse_frames(bad)
    assert show.frame_range(slice(-3, None), 40, 300) == (range(37, 40), 0)
    assert show.frame_range(slice(None), 40, 32) == (range(0, 32), 8)
    assert show.default_output("a/b c") == "a_b_c.png"


def test_writes_png_mp4_gif(synth_store, tmp_path):
    clip = show.from_store(synth_store, LEFT, slice(0, 5), ("frames", "mv", "residual"), limit=300)
    w = show.layout(1, 3, (128, 192), 96).size[0]
    assert show.write(tmp_path / "a.png", clip, panel_height=96) == (w, 5 * 116)
    with Image.open(tmp_path / "a.png") as png:
        assert png.size == (w, 5 * 116)
    assert show.write(tmp_path / "a.mp4", clip, panel_height=96) == (w, 116)
    with av.open(str(tmp_path / "a.mp4")) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 5 and (frames[0].width, frames[0].height) == (w, 116)
    show.write(tmp_path / "a.gif", clip, panel_height=96)
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == 5 and gif.size == (w, 116)


def test_cli_errors_exit_2(synth_store, tmp_path, capsys):
    assert main(["show", str(synth_store), "left__nope", "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "'left__nope'" in err and LEFT in err and err.count("\n") == 1
    assert main(["show", str(synth_store), LEFT, "--modalities", "frames,flow", "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "has no 'flow' array" in err and "--flow" in err
    assert main(["show", str(synth_store)]) == 2 and "give the KEY" in capsys.readouterr().err
    assert main(["show", str(synth_store), LEFT, "-o", str(tmp_path / "x.jpg")]) == 2
    assert ".png, .mp4, .gif" in capsys.readouterr().err
    assert main(["show", str(tmp_path / "missing.mp4")]) == 2 and "file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["show", str(synth_store), LEFT, "--modalities", "optical"])
    assert exit_.value.code == 2
    assert not (tmp_path / "x.png").exists()


def test_cli_shows_stored_flow(synth_store, tmp_path, capsys):
    store = tmp_path / "flow.zarr"
    shutil.copytree(synth_store, store)
    group = zarr.open_group(store / "videos" / LEFT, mode="r+")
    flow = np.zeros((40, 128, 192, 2), np.float16)
    flow[..., 1] = 2  # everything moves down
    group.create_array("flow", data=flow, chunks=(16, 128, 192, 2))
    clip = show.from_store(store, LEFT, slice(0, 2), None, limit=32)
    assert clip.modalities == ("frames", "mv", "flow", "residual", "framediff")  # flow next to mv by default
    out = tmp_path / "flow.png"
    assert main(["show", str(store), LEFT, "-o", str(out), "--frames", "3:5", "--modalities", "mv,flow"]) == 0
    assert "frames 3-4; mv,flow" in capsys.readouterr().out
    with Image.open(out) as png:
        image = np.asarray(png.convert("RGB"))
    w = show.layout(1, 2, (128, 192)).panel_w
    assert image.shape == (2 * 212, 2 * w, 3)
    flow_panel = image[30:120, w + 10:w + 150]
    np.testing.assert_allclose(np.median(hue_degrees(flow_panel)), 90, atol=3)


def test_cli_on_a_video_file(synth_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    video = next(synth_dir.rglob("left_0000.mp4"))
    assert main(["show", str(video), "--frames", "0:3", "--panel-height", "96"]) == 0
    assert "wrote left_0000.png" in capsys.readouterr().out
    with Image.open(tmp_path / "left_0000.png") as image:
        assert image.size == (4 * 144, 3 * 116)  # frames, mv, residual, framediff; 192x128 -> 144x96 panels
    assert main(["show", str(video), "KEY"]) == 2 and "is for a store" in capsys.readouterr().err
    assert main(["show", str(video), "--modalities", "flow"]) == 2 and "'flow'" in capsys.readouterr().err


def stepping_square_store(path) -> str:
    """One 64 x 64 video of 8 frames: a 16 px square of vectors (past dx = -8 px: content moving right) one token
    further right at each tubelet step (frames 2t, 2t + 1 at token (1, t)), no motion elsewhere."""
    from stores import write_store

    mv = np.zeros((8, 16, 16, 4), np.float16)
    for f in range(8):
        t = f // 2
        mv[f, 4:8, 4 * t:4 * t + 4, 0] = -8.0
    return write_store(path, {"sq": {"frames": np.full((8, 64, 64, 3), 200, np.uint8), "mv": mv,
                                     "mv_mask": np.ones((8, 16, 16, 2), bool)}})


def test_mgm_mask_is_drawn_where_the_vectors_move(tmp_path):
    store = stepping_square_store(tmp_path / "sq.zarr")
    clip = show.from_store(store, "sq", slice(0, 8), ("frames",), limit=32, also=("mv",))
    assert clip.modalities == ("frames",) and "mv" in clip.samples[0]  # read for the mask, not shown
    tokens = show.apply_mask(clip, "mgm", 1 / 16)
    assert tokens.shape == (4, 4, 4) and [list(zip(*np.nonzero(t))) for t in tokens] == [[(1, t)] for t in range(4)]
    for f, sample in enumerate(clip.samples):
        expected = np.zeros((64, 64), bool)
        expected[16:32, 16 * (f // 2):16 * (f // 2) + 16] = True
        assert np.array_equal(sample["mask"], expected) and sample["mask_note"] == "mgm mask 6%"
    panel = show.frame_panels(clip.samples[0], clip.modalities, show.scales(clip.samples))[0]
    assert (panel.image[16:32, 0:16] == np.rint(0.25 * 200 + 0.75 * 128)).all() and (panel.image[:16] == 200).all()
    tube = show.apply_mask(clip, "tube", 0.75, seed=1)
    assert all(np.array_equal(tube[0], t) for t in tube) and tube[0].sum() == 12


def test_cli_draws_masks_and_refuses_what_cannot_be_drawn(synth_store, tmp_path, capsys):
    out = tmp_path / "m.gif"
    assert main(["show", str(synth_store), LEFT, "--mask", "warped", "--frames", "0:8", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    with Image.open(out) as gif:
        assert gif.n_frames == 8
    frames_only = tmp_path / "frames.zarr"
    shutil.copytree(synth_store, frames_only)
    shutil.rmtree(frames_only / "videos" / LEFT / "mv")
    assert main(["show", str(frames_only), LEFT, "--mask", "tube", "--modalities", "frames",
                 "-o", str(tmp_path / "t.png")]) == 0  # a tube mask needs no vectors
    capsys.readouterr()
    cases = [([str(frames_only), LEFT, "--mask", "mgm", "--modalities", "frames"], "has no 'mv' array"),
             ([str(synth_store), LEFT, "--mask", "mgm", "--mask-ratio", "1.5"], "--mask-ratio must lie in (0, 1)"),
             ([str(synth_store), LEFT, "--mask", "tube", "--modalities", "mv"], "include frames"),
             ([str(synth_store), LEFT, "--mask", "mgm", "--patch", "6"], "--patch must be a multiple of 4")]
    for args, message in cases:
        assert main(["show", *args, "-o", str(tmp_path / "x.png")]) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "x.png").exists()

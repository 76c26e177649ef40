import numpy as np
import pytest

from mvtools import motion


def block(source, w, h, x0, y0, mx, my, scale=4):
    """One FFmpeg vector row for a w x h block whose top-left pixel is (x0, y0)."""
    cx, cy = x0 + w // 2, y0 + h // 2
    return [source, w, h, cx + mx // scale, cy + my // scale, cx, cy, mx, my, scale]


def test_dense_field_rasterises_blocks_by_direction():
    mvs = np.array([
        block(-1, 16, 16, 0, 0, 8, -4),       # past, 16x16 at the origin: (2, -1) px
        block(1, 8, 16, 16, 0, -6, 2, 2),     # future, 8x16 at x=16, MPEG-4 scale 2: (-3, 1) px
        block(-1, 8, 8, 16, 16, 4, 4),        # past 8x8 at (16, 16): (1, 1) px
    ], np.int32)
    field, mask = motion.dense_field(mvs, 32, 32)
    assert field.shape == (8, 8, 4) and mask.shape == (8, 8, 2)
    np.testing.assert_array_equal(field[:4, :4, :2], np.broadcast_to([2.0, -1.0], (4, 4, 2)))
    np.testing.assert_array_equal(field[:4, 4:6, 2:], np.broadcast_to([-3.0, 1.0], (4, 2, 2)))
    np.testing.assert_array_equal(field[4:6, 4:6, :2], np.broadcast_to([1.0, 1.0], (2, 2, 2)))
    expected_past = np.zeros((8, 8), bool)
    expected_past[:4, :4] = expected_past[4:6, 4:6] = True
    expected_future = np.zeros((8, 8), bool)
    expected_future[:4, 4:6] = True
    np.testing.assert_array_equal(mask[..., 0], expected_past)
    np.testing.assert_array_equal(mask[..., 1], expected_future)
    assert not field[~mask.repeat(2, axis=2)].any(), "cells without a vector stay zero"


def per_block_loop(mvs, height, width):
    """The definition, one block at a time."""
    gh, gw = motion.grid_shape(height, width)
    field, mask = np.zeros((gh, gw, 4), np.float32), np.zeros((gh, gw, 2), bool)
    for source, w, h, _sx, _sy, dx, dy, mx, my, scale in mvs:
        d = int(source > 0)
        x0, y0 = (dx - w // 2) // 4, (dy - h // 2) // 4
        ys, xs = slice(max(y0, 0), y0 + max(h // 4, 1)), slice(max(x0, 0), x0 + max(w // 4, 1))
        field[ys, xs, 2 * d:2 * d + 2] = (mx / scale, my / scale)
        mask[ys, xs, d] = True
    return field, mask


@pytest.mark.parametrize("fixture", ["real_h264", "real_mpeg4", "bframe_video"])
def test_dense_field_equals_the_per_block_definition_on_real_vectors(fixture, request):
    from mvtools import iter_motion, probe

    path = request.getfixturevalue(fixture)
    info = probe(path)
    for rec in iter_motion(path, decode_frames=False):
        if rec.index % 7 and fixture != "bframe_video":  # the loop is slow: a sample of the long clips
            continue
        fast = motion.dense_field(rec.motion_vectors, info.height, info.width)
        slow = per_block_loop(rec.motion_vectors, info.height, info.width)
        np.testing.assert_array_equal(fast[0], slow[0], err_msg=f"frame {rec.index}")
        np.testing.assert_array_equal(fast[1], slow[1], err_msg=f"frame {rec.index}")


def test_dense_field_places_unaligned_blocks():
    mvs = np.array([block(-1, 8, 8, 4, 12, 8, 0)], np.int32)  # 8x8 at (4, 12): not on the 8-pixel grid
    field, mask = motion.dense_field(mvs, 32, 32)
    assert mask[3:5, 1:3, 0].all() and mask[..., 0].sum() == 4 and field[3, 1, 0] == 2.0


def test_dense_field_clips_blocks_beyond_the_frame():
    # 1080p is coded as 1088 rows: the last macroblock row hangs over the frame.
    field, mask = motion.dense_field(np.array([block(-1, 16, 16, 0, 1072, 4, 0)], np.int32), 1080, 16)
    assert field.shape[:2] == (270, 4)
    assert mask[268:, :, 0].all() and mask[:268].sum() == 0


def test_dense_field_of_an_i_frame_is_empty():
    field, mask = motion.dense_field(np.zeros((0, 10), np.int32), 30, 50)
    assert field.shape == (8, 13, 4) and not mask.any() and not field.any()


def test_resize_field_averages_and_rescales():
    field = np.zeros((4, 4, 4), np.float32)
    mask = np.zeros((4, 4, 2), bool)
    field[:, :2, :2] = [4.0, 2.0]
    mask[:, :2, 0] = True
    field[0, 2, :2] = [8.0, 8.0]  # one of four cells in the top-right output cell
    mask[0, 2, 0] = True
    out, out_mask = motion.resize_field(field, mask, (2, 2), (0.5, 0.25))
    np.testing.assert_allclose(out[:, 0, :2], [[2.0, 0.5], [2.0, 0.5]])
    assert out_mask[:, 0, 0].all()
    assert not out_mask[0, 1, 0], "a quarter-covered cell carries no vector"
    assert not out_mask[..., 1].any() and not out[..., 2:].any()


def test_resize_field_non_integer_shrink_keeps_a_uniform_field():
    field = np.zeros((180, 320, 4), np.float32)
    field[..., :2] = [8.0, -4.0]
    field[..., 2:] = [1.0, 2.0]
    mask = np.ones((180, 320, 2), bool)
    out, out_mask = motion.resize_field(field, mask, (32, 57), (57 / 320, 32 / 180))
    assert out.shape == (32, 57, 4) and out_mask.all()
    np.testing.assert_allclose(out[..., 0], 8.0 * 57 / 320, rtol=1e-5)
    np.testing.assert_allclose(out[..., 3], 2.0 * 32 / 180, rtol=1e-5)


def test_prediction_of_a_translated_image_recovers_it():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    frame = np.roll(ref, (2, -3), axis=(0, 1))  # content moved down 2 and left 3
    field = np.zeros((8, 12, 4), np.float32)
    field[..., :2] = [3.0, -2.0]  # reference position - current position
    mask = np.zeros((8, 12, 2), bool)
    mask[..., 0] = True
    pred = motion.predict(field, mask, ref, None)
    res = motion.residual(frame, pred)
    inner = (slice(4, -4), slice(4, -4))
    assert not res[inner].any(), "integer translation: zero residual away from the borders"
    np.testing.assert_array_equal(pred.astype(np.int16) + res, frame)


def test_bi_prediction_averages_and_intra_uses_colocated_pixels():
    past = np.full((8, 8, 3), 100, np.uint8)
    future = np.full((8, 8, 3), 201, np.uint8)
    field = np.zeros((2, 2, 4), np.float32)
    mask = np.zeros((2, 2, 2), bool)
    mask[0, 0] = [True, True]  # bi-predicted
    mask[0, 1] = [False, True]  # future only
    mask[1, 0] = [True, False]  # past only; (1, 1) is intra
    pred = motion.predict(field, mask, past, future)
    assert pred[0, 0, 0] == 151 and pred[0, 4, 0] == 201 and pred[4, 0, 0] == 100 and pred[4, 4, 0] == 100
    with pytest.raises(ValueError):
        motion.predict(field, mask, None, None)


def test_accumulate_follows_vectors_back_to_the_i_frame():
    gh, gw = 4, 6
    field = np.zeros((gh, gw, 4), np.float32)
    field[..., :2] = [4.0, 0.0]  # each cell comes from one cell (4 px) to the right
    mask = np.zeros((gh, gw, 2), bool)
    mask[..., 0] = True
    ref_motion = np.zeros((gh, gw, 2), np.float32)
    ref_motion[:, :, 0] = np.arange(gw) * 10.0  # distinct per column
    res = np.ones((16, 24, 3), np.int16)
    ref_res = np.zeros((16, 24, 3), np.int16)
    ref_res[:, :, 0] = np.arange(24)
    acc, acc_res = motion.accumulate(field, mask, res, ref_motion, ref_res)
    # D(c) = d(c) + D_ref(c + 1 cell), clamped at the right edge.
    np.testing.assert_allclose(acc[0, :, 0], 4.0 + np.minimum(np.arange(gw) + 1, gw - 1) * 10.0)
    np.testing.assert_array_equal(acc_res[0, :, 0], 1 + np.minimum(np.arange(24) + 4, 23))
    # At the I-frame (zero references) accumulation is the identity.
    acc0, res0 = motion.accumulate(field, mask, res, np.zeros_like(ref_motion), np.zeros_like(ref_res))
    np.testing.assert_array_equal(acc0, field[..., :2])
    np.testing.assert_array_equal(res0, res)


def test_frame_difference():
    frames = np.array([[[0]], [[10]], [[5]]], np.uint8)
    np.testing.assert_array_equal(motion.frame_difference(frames)[:, 0, 0], [0, 10, -5])
    with_previous = motion.frame_difference(frames, previous=np.array([[3]], np.uint8))
    np.testing.assert_array_equal(with_previous[:, 0, 0], [-3, 10, -5])

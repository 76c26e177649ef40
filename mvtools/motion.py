"""Pure array maths on motion: block vectors -> dense fields, motion-compensated prediction and residuals,
CoViAR accumulation, frame differences. NumPy and OpenCV only; no I/O.

Conventions: a field is (H/4, W/4, 4) float32 = (past dx, past dy, future dx, dy) per 4x4-pixel cell,
in pixels, with FFmpeg's sign: displacement = reference position - current position. Its mask is
(H/4, W/4, 2) bool, True where the cell carries a vector for that direction (intra cells carry none).
"""

from __future__ import annotations

import cv2
import numpy as np

CELL = 4  # pixels per side of a motion-field cell
PAST, FUTURE = 0, 1


def grid_shape(height: int, width: int) -> tuple[int, int]:
    """Cells covering an image: (ceil(H/4), ceil(W/4))."""
    return -(-height // CELL), -(-width // CELL)


def dense_field(motion_vectors: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise FFmpeg block vectors (N, 10: source, w, h, src_x, src_y, dst_x, dst_y, mx, my, scale)
    onto the 4x4-cell grid of an (height, width) frame.

    Block b covers pixels [dst_x - w/2, dst_x + w/2) x [dst_y - h/2, dst_y + h/2); its cells get
    (motion_x, motion_y) / motion_scale in the slot of its direction (source < 0: past, > 0: future).
    """
    gh, gw = grid_shape(height, width)
    field = np.zeros((gh, gw, 4), np.float32)
    mask = np.zeros((gh, gw, 2), bool)
    mv = np.asarray(motion_vectors)
    if mv.shape[0] == 0:
        return field, mask
    source, bw, bh, dst_x, dst_y, mx, my, scale = (mv[:, j] for j in (0, 1, 2, 5, 6, 7, 8, 9))
    ncx = np.maximum(bw // CELL, 1)
    ncy = np.maximum(bh // CELL, 1)
    count = ncx * ncy
    block = np.repeat(np.arange(mv.shape[0]), count)
    offset = np.arange(block.size) - np.repeat(np.cumsum(count) - count, count)
    cx = (dst_x - bw // 2)[block] // CELL + offset % ncx[block]
    cy = (dst_y - bh // 2)[block] // CELL + offset // ncx[block]
    inside = (cx >= 0) & (cx < gw) & (cy >= 0) & (cy < gh)
    block, cx, cy = block[inside], cx[inside], cy[inside]
    direction = (source[block] > 0).astype(np.intp)
    s = np.maximum(scale[block], 1).astype(np.float32)
    field[cy, cx, 2 * direction] = mx[block] / s
    field[cy, cx, 2 * direction + 1] = my[block] / s
    mask[cy, cx, direction] = True
    return field, mask


def resize_field(
    field: np.ndarray, mask: np.ndarray, grid: tuple[int, int], scale_xy: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a field to another grid (gh, gw) and rescale its vectors by (sx, sy).

    Shrinking averages the vectors of covered cells, weighted by their mask; a cell keeps a vector
    where at least half of its area carried one.
    """
    gh, gw = grid
    interp = cv2.INTER_AREA if gh * gw < mask.shape[0] * mask.shape[1] else cv2.INTER_NEAREST
    weight = mask.astype(np.float32)
    num = cv2.resize(field * np.repeat(weight, 2, axis=2), (gw, gh), interpolation=interp)
    den = cv2.resize(weight, (gw, gh), interpolation=interp).reshape(gh, gw, 2)
    num = num.reshape(gh, gw, 4)
    out_mask = den >= 0.5
    den4 = np.repeat(den, 2, axis=2)
    out = np.divide(num, den4, out=np.zeros_like(num), where=den4 > 0)
    out *= np.array(scale_xy * 2, np.float32)
    out[~np.repeat(out_mask, 2, axis=2)] = 0.0
    return out, out_mask


def _pixel_field(cells: np.ndarray, height: int, width: int) -> np.ndarray:
    gh, gw = cells.shape[:2]
    up = cv2.resize(cells, (gw * CELL, gh * CELL), interpolation=cv2.INTER_NEAREST)
    return up.reshape(gh * CELL, gw * CELL, -1)[:height, :width]


def warp(reference: np.ndarray, displacement: np.ndarray) -> np.ndarray:
    """P(x) = R(x + d(x)), bilinear, borders replicated. displacement is (H, W, 2) in pixels."""
    h, w = displacement.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(
        reference, xs + displacement[..., 0], ys + displacement[..., 1],
        interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE,
    )


def predict(
    field: np.ndarray, mask: np.ndarray, past: np.ndarray | None, future: np.ndarray | None
) -> np.ndarray:
    """Motion-compensated prediction (H, W, 3) uint8 of a frame from its decoded references.

    Per cell: the past or the future warped reference, their rounded mean where both carry a vector
    (bi-prediction), and the co-located pixels of the nearest reference where neither does (intra).
    This approximates the codec: bilinear instead of its sub-pixel filters, no weighted prediction, and
    each direction's reference is taken as the nearest I/P frame (FFmpeg does not export ref indices).
    """
    if past is None and future is None:
        raise ValueError("predict needs at least one reference frame")
    h, w = (past if past is not None else future).shape[:2]
    use = mask.copy()
    if past is None:
        use[..., PAST] = False
    if future is None:
        use[..., FUTURE] = False
    pix = _pixel_field(np.concatenate([field, use.astype(np.float32)], axis=2), h, w)
    use_past, use_future = pix[..., 4:5] > 0.5, pix[..., 5:6] > 0.5
    fallback = past if past is not None else future
    pred = fallback.astype(np.int16)
    if use_past.any():
        pred_past = warp(past, np.ascontiguousarray(pix[..., 0:2])).astype(np.int16)
        pred = np.where(use_past, pred_past, pred)
    if use_future.any():
        pred_future = warp(future, np.ascontiguousarray(pix[..., 2:4])).astype(np.int16)
        both = use_past & use_future
        if both.any():
            pred = np.where(both, (pred + pred_future + 1) // 2, pred)
        pred = np.where(use_future & ~use_past, pred_future, pred)
    return pred.astype(np.uint8)


def residual(frame: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """r = frame - prediction, int16 in [-255, 255]; prediction + r == frame exactly."""
    return frame.astype(np.int16) - prediction.astype(np.int16)


def accumulate(
    field: np.ndarray, mask: np.ndarray, res: np.ndarray, ref_motion: np.ndarray, ref_residual: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One CoViAR step back to the GOP's I-frame along the past direction (nearest sampling):

    D_t(c) = d_t(c) + D_ref(c + d_t(c)),    R_t(x) = r_t(x) + R_ref(x + d_t(x)),

    with d_t = 0 where the cell has no past vector. ref_motion is (gh, gw, 2), ref_residual (H, W, 3);
    both are zero at the I-frame.
    """
    d = field[..., 0:2] * mask[..., PAST:PAST + 1]
    gh, gw = d.shape[:2]
    cy, cx = np.mgrid[0:gh, 0:gw]
    sx = np.clip(np.rint(cx + d[..., 0] / CELL).astype(np.intp), 0, gw - 1)
    sy = np.clip(np.rint(cy + d[..., 1] / CELL).astype(np.intp), 0, gh - 1)
    motion = d + ref_motion[sy, sx]
    h, w = res.shape[:2]
    dp = _pixel_field(d, h, w)
    py, px = np.mgrid[0:h, 0:w]
    qx = np.clip(np.rint(px + dp[..., 0]).astype(np.intp), 0, w - 1)
    qy = np.clip(np.rint(py + dp[..., 1]).astype(np.intp), 0, h - 1)
    return motion.astype(np.float32), res.astype(np.int16) + ref_residual[qy, qx].astype(np.int16)


def frame_difference(frames: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
    """d_t = x_t - x_{t-1} as int16, over axis 0; d_0 = x_0 - previous, or 0 when there is none."""
    frames = np.asarray(frames).astype(np.int16)
    out = np.empty_like(frames)
    out[1:] = frames[1:] - frames[:-1]
    out[0] = frames[0] - previous.astype(np.int16) if previous is not None else 0
    return out

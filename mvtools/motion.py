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


def grid_shape(height: int, width: int, cell: int = CELL) -> tuple[int, int]:
    """Cells covering an image: (ceil(H/cell), ceil(W/cell))."""
    return -(-height // cell), -(-width // cell)


def coarsest_cell(motion_vectors: np.ndarray) -> int:
    """8 if every block is a multiple of 8 pixels and sits on the 8-pixel grid (always, for FFmpeg's
    H.264 and MPEG-4 vectors), else 4. A field rasterised on that grid is exact and 4x smaller."""
    _, w, h, _, _, dst_x, dst_y, *_ = np.ascontiguousarray(np.asarray(motion_vectors).T)
    return 8 if not ((w | h | (dst_x - (w >> 1)) | (dst_y - (h >> 1))) & 7).any() else CELL


def dense_field(
    motion_vectors: np.ndarray, height: int, width: int, *, cell: int = CELL
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise FFmpeg block vectors (N, 10: source, w, h, src_x, src_y, dst_x, dst_y, mx, my, scale)
    onto the grid of cell x cell pixels covering an (height, width) frame (4x4 cells by default).

    Block b covers pixels [dst_x - w/2, dst_x + w/2) x [dst_y - h/2, dst_y + h/2); its cells get
    (motion_x, motion_y) / motion_scale in the slot of its direction (source < 0: past, > 0: future).
    """
    if cell not in (4, 8, 16):
        raise ValueError(f"cell must be 4, 8 or 16 pixels, not {cell}")
    gh, gw = grid_shape(height, width, cell)
    mv = np.asarray(motion_vectors)
    if mv.shape[0] == 0:
        return np.zeros((gh, gw, 4), np.float32), np.zeros((gh, gw, 2), bool)
    if cell == CELL and coarsest_cell(mv) == 8:  # rasterise 4x fewer cells, then repeat each 2x2
        field, mask = _rasterise(mv, *grid_shape(height, width, 8), 8)
        field = field.repeat(2, axis=0).repeat(2, axis=1)[:gh, :gw]
        mask = mask.repeat(2, axis=0).repeat(2, axis=1)[:gh, :gw]
        return field, mask
    return _rasterise(mv, gh, gw, cell)


def _rasterise(mv: np.ndarray, gh: int, gw: int, cell: int) -> tuple[np.ndarray, np.ndarray]:
    source, w, h, _, _, dst_x, dst_y, mx, my, scale = np.ascontiguousarray(mv.T)
    shift = cell.bit_length() - 1  # cells are powers of two: x // cell == x >> shift, also below 0
    ncx, ncy = np.maximum(w >> shift, 1), np.maximum(h >> shift, 1)
    x0, y0 = (dst_x - (w >> 1)) >> shift, (dst_y - (h >> 1)) >> shift
    scale = np.maximum(scale, 1).astype(np.float32)
    vx, vy = mx / scale, my / scale
    direction = (source > 0).astype(np.intp)
    inside = (x0 >= 0) & (y0 >= 0) & (x0 + ncx <= gw) & (y0 + ncy <= gh)
    # Macroblocks (16x16 pixels, k x k cells) are most blocks: write one value each on a grid of
    # macroblocks, expand it, then paint the smaller partitions over it.
    k = max(16 >> shift, 1)
    ch, cw = -(-gh // k), -(-gw // k)
    mb = np.flatnonzero(inside & (ncx == k) & (ncy == k) & (((x0 | y0) & (k - 1)) == 0))
    coarse_f = np.zeros(ch * cw * 4, np.float32)
    coarse_m = np.zeros(ch * cw * 2, bool)
    at = (y0[mb] // k) * cw + x0[mb] // k
    d = direction[mb]
    coarse_f[at * 4 + 2 * d] = vx[mb]
    coarse_f[at * 4 + 2 * d + 1] = vy[mb]
    coarse_m[at * 2 + d] = True
    field = coarse_f.reshape(ch, cw, 4).repeat(k, axis=0).repeat(k, axis=1)[:gh, :gw].reshape(-1)
    mask = coarse_m.reshape(ch, cw, 2).repeat(k, axis=0).repeat(k, axis=1)[:gh, :gw].reshape(-1)
    rest = inside.copy()
    rest[mb] = False
    shapes = ncy * 4096 + ncx
    for shape in sorted(set(shapes[rest].tolist())):  # a handful of shapes; np.unique costs ~0.1 ms
        cy, cx = divmod(int(shape), 4096)
        sel = np.flatnonzero((shapes == shape) & rest)
        offsets = (np.arange(cy)[:, None] * gw + np.arange(cx)).ravel()
        idx = ((y0[sel] * gw + x0[sel])[:, None] + offsets).ravel()
        d = np.repeat(direction[sel], offsets.size)
        field[idx * 4 + 2 * d] = np.repeat(vx[sel], offsets.size)
        field[idx * 4 + 2 * d + 1] = np.repeat(vy[sel], offsets.size)
        mask[idx * 2 + d] = True
    field, mask = field.reshape(gh, gw, 4), mask.reshape(gh, gw, 2)
    for b in np.flatnonzero(~inside):  # blocks hanging over the frame edge (e.g. 1080p's 1088th row)
        ys = slice(max(y0[b], 0), max(y0[b] + ncy[b], 0))
        xs = slice(max(x0[b], 0), max(x0[b] + ncx[b], 0))
        field[ys, xs, 2 * direction[b]:2 * direction[b] + 2] = (vx[b], vy[b])
        mask[ys, xs, direction[b]] = True
    return field, mask


def resize_field(
    field: np.ndarray, mask: np.ndarray, grid: tuple[int, int], scale_xy: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a field to another grid (gh, gw) and rescale its vectors by (sx, sy).

    Shrinking averages the vectors of covered cells, weighted by their mask; a cell keeps a vector
    where at least half of its area carried one.
    """
    gh, gw = grid
    shrink = gh * gw < mask.shape[0] * mask.shape[1]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_NEAREST  # AREA takes at most 4 channels
    weight = mask.astype(np.float32)
    weighted = (field.reshape(*field.shape[:2], 2, 2) * weight[..., None]).reshape(field.shape)
    num = cv2.resize(weighted, (gw, gh), interpolation=interp).reshape(gh, gw, 2, 2)
    cover = cv2.resize(weight, (gw, gh), interpolation=interp).reshape(gh, gw, 2)
    out_mask = cover >= 0.5
    # Mean over the covered area, scaled to the new grid's pixels; 0 where the cell keeps no vector.
    vectors = num * (np.float32(1) / np.maximum(cover, 1e-6))[..., None] * np.array(scale_xy, np.float32)
    vectors *= out_mask[..., None]
    return vectors.reshape(gh, gw, 4), out_mask


def pixel_field(cells: np.ndarray, height: int, width: int) -> np.ndarray:
    """Per-cell values (gh, gw, C) repeated over each cell's 4x4 pixels, cropped to (height, width, C)."""
    gh, gw = cells.shape[:2]
    if cells.dtype == bool:
        return pixel_field(cells.astype(np.uint8), height, width).astype(bool)
    up = cv2.resize(cells, (gw * CELL, gh * CELL), interpolation=cv2.INTER_NEAREST)
    return up.reshape(gh * CELL, gw * CELL, -1)[:height, :width]


def _identity_map(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    key = (height, width)
    if key not in _IDENTITY:
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        _IDENTITY[key] = (xs, ys)
    return _IDENTITY[key]


_IDENTITY: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def warp(reference: np.ndarray, displacement: np.ndarray) -> np.ndarray:
    """P(x) = R(x + d(x)), bilinear, borders replicated. displacement is (H, W, 2) in pixels."""
    xs, ys = _identity_map(*displacement.shape[:2])
    return cv2.remap(reference, xs + displacement[..., 0], ys + displacement[..., 1],
                     interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


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
    use[..., PAST] &= past is not None
    use[..., FUTURE] &= future is not None
    # A zero displacement where a cell has no vector makes the warp itself the co-located fallback.
    d = (field.reshape(*field.shape[:2], 2, 2) * use[..., None]).reshape(field.shape)
    if not use[..., FUTURE].any():
        return warp(past, pixel_field(d[..., 0:2], h, w))
    if not use[..., PAST].any() and past is None:
        return warp(future, pixel_field(d[..., 2:4], h, w))
    pred_past = warp(past, pixel_field(d[..., 0:2], h, w)).astype(np.uint16)
    pred_future = warp(future, pixel_field(d[..., 2:4], h, w)).astype(np.uint16)
    # Per cell: 0 past (or intra: co-located past), 1 future only, 2 both (bi-prediction).
    source = (use[..., FUTURE] * (1 + use[..., PAST])).astype(np.uint8)
    source = pixel_field(source[..., None], h, w)
    pred = np.where(source == 1, pred_future, pred_past)
    pred = np.where(source == 2, (pred_past + pred_future + 1) >> 1, pred)
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
    dp = pixel_field(d, h, w)
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

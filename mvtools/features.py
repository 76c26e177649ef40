"""One video's motion records -> per-frame features at the stored resolution.

Records arrive in display order. A B-frame's future reference is the next I/P frame, which comes
after it, so B-frames wait in a short queue until that anchor arrives; output stays in display order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from . import motion
from .decode import MotionRecord

FRAME_TYPE_CODES = {"I": 0, "P": 1, "B": 2, "?": 3}


def stored_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(w, h) with the short side = short_side and the aspect ratio kept (long side rounded to even)."""
    if width <= height:
        return short_side, max(2, 2 * round(height * short_side / width / 2))
    return max(2, 2 * round(width * short_side / height / 2)), short_side


@dataclass
class FrameFeatures:
    """Everything stored for one frame; arrays are at the stored resolution (h, w)."""

    index: int
    pts: float
    frame_type: int
    is_keyframe: bool
    frame: np.ndarray | None  # (h, w, 3) uint8; None when decoded without pixels
    mv: np.ndarray  # (h/4, w/4, 4) float32: past dx, dy, future dx, dy
    mv_mask: np.ndarray  # (h/4, w/4, 2) bool: past, future
    residual: np.ndarray | None = None  # (h, w, 3) int16
    mv_acc: np.ndarray | None = None  # (h/4, w/4, 2) float32, back to the GOP's I-frame
    residual_acc: np.ndarray | None = None  # (h, w, 3) int16


@dataclass
class _Anchor:
    frame: np.ndarray
    mv_acc: np.ndarray | None
    residual_acc: np.ndarray | None


def iter_features(
    records: Iterable[MotionRecord],
    source_size: tuple[int, int],
    target_size: tuple[int, int],
    *,
    residuals: bool = True,
    accumulate: bool = False,
) -> Iterator[FrameFeatures]:
    """Turn records (``frame`` already at target_size, or None) into FrameFeatures, in display order.

    source_size / target_size are (width, height) of the coded and the stored frames.
    """
    (W, H), (w, h) = source_size, target_size
    grid = motion.grid_shape(h, w)
    scale = (w / W, h / H)
    past: _Anchor | None = None
    waiting: list[FrameFeatures] = []

    def compensate(f: FrameFeatures, before: _Anchor | None, after: _Anchor | None) -> None:
        if f.frame_type == FRAME_TYPE_CODES["I"] or (before is None and after is None):
            if residuals:
                f.residual = np.zeros_like(f.frame, dtype=np.int16)
            if accumulate:
                f.mv_acc = np.zeros((*grid, 2), np.float32)
                f.residual_acc = np.zeros_like(f.frame, dtype=np.int16)
            return
        pred = motion.predict(
            f.mv, f.mv_mask, before.frame if before else None, after.frame if after else None
        )
        res = motion.residual(f.frame, pred)
        if residuals:
            f.residual = res
        if accumulate:
            ref = before or _Anchor(f.frame, np.zeros((*grid, 2), np.float32), np.zeros_like(res))
            f.mv_acc, f.residual_acc = motion.accumulate(f.mv, f.mv_mask, res, ref.mv_acc, ref.residual_acc)

    for rec in records:
        if rec.frame is None and (residuals or accumulate):
            raise ValueError("residuals and accumulation need records decoded with decode_frames=True")
        # The coarsest exact grid (8 px for FFmpeg's vectors) is enough to resample from.
        cell = motion.coarsest_cell(rec.motion_vectors)
        field, mask = motion.dense_field(rec.motion_vectors, H, W, cell=cell)
        field, mask = motion.resize_field(field, mask, grid, scale)
        f = FrameFeatures(
            index=rec.index, pts=rec.pts, frame_type=FRAME_TYPE_CODES.get(rec.pict_type, 3),
            is_keyframe=rec.is_keyframe, frame=rec.frame, mv=field, mv_mask=mask,
        )
        if not (residuals or accumulate):
            yield f
            continue
        if rec.pict_type == "B":
            waiting.append(f)
            continue
        compensate(f, past, None)
        for b in waiting:
            compensate(b, past, _Anchor(f.frame, None, None))
        yield from waiting
        waiting.clear()
        yield f
        past = _Anchor(f.frame, f.mv_acc, f.residual_acc)
    for b in waiting:
        compensate(b, past, None)
    yield from waiting

"""Accuracy and cost of free motion vectors against optical flow, on motion whose truth is known exactly.

Each sequence is a random texture seen through an affine camera (``mvtools.synth.camera_matrices``):
pure translations (integer and sub-pixel px/frame), a rotation and a zoom, rendered at 320x240 and
encoded with libx264 (crf 23, no B-frames, one reference frame, one GOP), then decoded with mvtools.
The ground truth of every pixel comes from the camera maps (``mvtools.flow.affine_flow``).

- Optical flow (DIS presets, Farneback, RAFT where a GPU and torchvision are present) runs on the
  decoded frames, t -> t+1, and is compared with the forward truth t -> t+1.
- The H.264 motion-vector field (``motion.dense_field``, 4x4 cells, past direction) keeps FFmpeg's
  sign: at P-frame t+1, whose only reference is frame t, it is reference position - current position,
  i.e. the backward flow t+1 -> t; it is compared with that backward truth, only on cells carrying a
  vector (coverage = share of interior pixels that do; intra blocks carry none).

EPE = mean endpoint error in px over pixels >= 16 px from the border, averaged over the frame pairs.
Time per frame: the vectors' MV-only decode plus rasterisation; the flows' estimator call alone (the
pipeline decodes pixels anyway), one process, on this machine.

Usage: python benchmarks/motion_quality.py [--frames 32] [--width 320 --height 240]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from mvtools import flow, motion, synth
from mvtools.decode import iter_motion

MARGIN = 16
#: name -> camera motion (content moves by shift px/frame, turns rotation deg/frame, scales zoom/frame)
SEQUENCES = {
    "shift 1,0": {"shift": (1.0, 0.0)},
    "shift 2,-1": {"shift": (2.0, -1.0)},
    "shift 4,3": {"shift": (4.0, 3.0)},
    "shift 0.5,0.25": {"shift": (0.5, 0.25)},
    "shift 1.5,-2.5": {"shift": (1.5, -2.5)},
    "rotate 1 deg": {"rotation": 1.0},
    "zoom 2%": {"zoom": 1.02},
}
FLOWS = {
    "DIS ultrafast": lambda p, n: flow.dis_flow(p, n, "ultrafast"),
    "DIS fast": lambda p, n: flow.dis_flow(p, n, "fast"),
    "DIS medium": lambda p, n: flow.dis_flow(p, n, "medium"),
    "Farneback": flow.farneback_flow,
}


def make_sequence(path: Path, motion_kw: dict, frames: int, width: int, height: int, seed: int):
    """Encode one sequence; return its path and camera maps."""
    canvas_size = 2 * max(width, height) + 8 * frames
    canvas = synth.texture(np.random.default_rng(seed), canvas_size)
    views = synth.camera_matrices(canvas_size, width, height, frames, **motion_kw)
    synth.encode_video(path, synth.render_views(canvas, views, width, height), bframes=0, refs=1, gop=1000)
    return path, views


def mv_quality(path: Path, views, width: int, height: int) -> tuple[float, float, float]:
    """(EPE px, coverage, seconds per frame) of the motion-vector field against the backward truth."""
    t0 = time.perf_counter()
    fields = [(rec.index, motion.dense_field(rec.motion_vectors, height, width))
              for rec in iter_motion(path, decode_frames=False)]
    seconds = (time.perf_counter() - t0) / len(fields)
    errors, coverage = [], []
    for index, (field, mask) in fields[1:]:
        est, valid = flow.mv_as_flow(field, mask, height, width)
        truth = flow.affine_flow(views[index], views[index - 1], height, width)
        errors.append(flow.endpoint_error(est, truth, valid, MARGIN))
        coverage.append(valid[MARGIN:-MARGIN, MARGIN:-MARGIN].mean())
    return float(np.nanmean(errors)), float(np.mean(coverage)), seconds


def flow_quality(estimate, frames: list[np.ndarray], views) -> tuple[float, float]:
    """(EPE px, seconds per frame pair) of a flow estimator against the forward truth t -> t+1."""
    height, width = frames[0].shape[:2]
    errors, seconds = [], 0.0
    for t in range(len(frames) - 1):
        t0 = time.perf_counter()
        est = estimate(frames[t], frames[t + 1])
        seconds += time.perf_counter() - t0
        errors.append(flow.endpoint_error(est, flow.affine_flow(views[t], views[t + 1], height, width), None, MARGIN))
    return float(np.mean(errors)), seconds / (len(frames) - 1)


def flows_available() -> dict:
    methods = dict(FLOWS)
    try:
        flow.check_raft_available()
    except Exception as e:  # MvtoolsError: no GPU or no torchvision
        print(f"RAFT skipped: {e}\n")
        return methods
    for model in flow.RAFT_MODELS:
        raft = flow.RaftFlow(model, "DEFAULT", device="cuda")
        raft(np.zeros((1, 128, 128, 3), np.uint8), np.zeros((1, 128, 128, 3), np.uint8))  # warm-up

        def one_pair(p, n, raft=raft):
            out = raft(p[None], n[None])[0]
            raft.torch.cuda.synchronize()
            return out

        methods[f"RAFT {model.split('_')[1]} (GPU, 1 pair/call)"] = one_pair
    return methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    args = parser.parse_args()
    methods = flows_available()
    rows: dict[str, list] = {"H.264 motion vectors": [], **{name: [] for name in methods}}
    times: dict[str, list] = {name: [] for name in rows}
    coverage = []
    with tempfile.TemporaryDirectory(prefix="mvtools-quality-") as tmp:
        for seed, motion_kw in enumerate(SEQUENCES.values()):
            path, views = make_sequence(Path(tmp) / f"{seed}.mp4", motion_kw, args.frames, args.width,
                                        args.height, seed)
            epe, cov, sec = mv_quality(path, views, args.width, args.height)
            rows["H.264 motion vectors"].append(epe)
            times["H.264 motion vectors"].append(sec)
            coverage.append(cov)
            frames = [rec.frame for rec in iter_motion(path, decode_frames=True)]
            for method, estimate in methods.items():
                epe, sec = flow_quality(estimate, frames, views)
                rows[method].append(epe)
                times[method].append(sec)
    print(f"EPE (px) against the exact motion, {args.width}x{args.height}, {args.frames} frames per sequence, "
          f"libx264 crf 23; border of {MARGIN} px excluded\n")
    print("| method | " + " | ".join(SEQUENCES) + " | ms per frame |")
    print("|---" * (len(SEQUENCES) + 2) + "|")
    for method, errors in rows.items():
        ms = 1000 * float(np.median(times[method]))
        print(f"| {method} | " + " | ".join(f"{e:.2f}" for e in errors) + f" | {ms:.2f} |")
    print("| (vector coverage) | " + " | ".join(f"{100 * c:.0f}%" for c in coverage) + " | |")
    translations = [e for name, e in zip(SEQUENCES, rows["H.264 motion vectors"]) if name.startswith("shift")]
    verdict = "within" if max(translations) <= 1.0 else "NOT within"
    print(f"\nMotion vectors on pure translations: worst EPE {max(translations):.2f} px ({verdict} 1.0 px).")


if __name__ == "__main__":
    main()

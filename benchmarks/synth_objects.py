"""A second synthetic set for ``motion_benefit.py``: objects moving independently over a textured, slightly
moving background, with motion that changes over time within a video.

What MCD's negatives (other times of the same video move differently), MCL's motion boundaries (object edges)
and FIMA's foreground cells (the objects) assume, and the camera-motion set of ``mvtools synth`` lacks. Each
video has 2-4 objects (discs or squares of their own random texture, radius 10-20 px at 192 x 128) over a
random texture that drifts 0.2-0.5 px per frame in a random direction. The class is the law the objects move
by; every object follows it with its own centre, phase, amplitude and period (20-32 frames), so objects move
independently and their velocity turns within a clip:

    swing_h, swing_v, swing_diag, swing_anti   back and forth along one axis (x, y, x = y, x = -y)
    orbit_cw, orbit_ccw                        around a circle, clockwise / counter-clockwise on screen
    stop_go                                    along a random direction, speed |sin|: moves, stops, moves on
    spin                                       in place, turning, the sense reversing every half period

Appearance (textures, shapes, count, positions, drift) is drawn independently of the class.

    python benchmarks/synth_objects.py OUT_DIR [--videos 128] [--seed 0]   # writes OUT/<class>/<class>_<i>.mp4
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mvtools.synth import encode_video, texture  # noqa: E402

CLASSES = ("swing_h", "swing_v", "swing_diag", "swing_anti", "orbit_cw", "orbit_ccw", "stop_go", "spin")
AXES = {"swing_h": (1.0, 0.0), "swing_v": (0.0, 1.0), "swing_diag": (0.7071, 0.7071), "swing_anti": (0.7071, -0.7071)}


def trajectory(law: str, t: np.ndarray, rng: np.random.Generator, centre: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """(positions (T, 2) in pixels, rotation angles (T,) in degrees) of one object moving by ``law``."""
    period = rng.uniform(20, 32)
    phase = rng.uniform(0, 2 * math.pi)
    w = 2 * math.pi / period
    angle = np.zeros(len(t))
    if law in AXES:
        amplitude = rng.uniform(12, 24)
        offset = amplitude * np.sin(w * t + phase)[:, None] * np.array(AXES[law])
    elif law in ("orbit_cw", "orbit_ccw"):
        radius = rng.uniform(10, 20)
        sense = 1.0 if law == "orbit_cw" else -1.0  # image y points down: +angle in x, y is clockwise on screen
        offset = radius * np.stack([np.cos(sense * w * t + phase), np.sin(sense * w * t + phase)], 1)
    elif law == "stop_go":
        direction = rng.uniform(0, 2 * math.pi)
        speed = rng.uniform(2.0, 3.5) * np.abs(np.sin(w * t + phase))  # px per frame
        distance = np.cumsum(speed) - speed[0]
        offset = distance[:, None] * np.array([math.cos(direction), math.sin(direction)])
    elif law == "spin":
        offset = np.zeros((len(t), 2))
        rate = rng.uniform(5, 9) * np.sign(np.sin(w * t + phase) + 1e-9)  # degrees per frame, reversing
        angle = np.cumsum(rate) - rate[0]
    else:
        raise ValueError(f"unknown law {law!r}; choose from {', '.join(CLASSES)}")
    return centre + offset, angle


def render_objects(law: str, rng: np.random.Generator, *, num_frames: int = 48, width: int = 192,
                   height: int = 128) -> list[np.ndarray]:
    """The frames (H, W, 3) uint8 of one video of class ``law``."""
    heading = rng.uniform(0, 2 * math.pi)
    drift = rng.uniform(0.2, 0.5) * np.array([math.cos(heading), math.sin(heading)])
    canvas = texture(rng, 2 * max(width, height))
    t = np.arange(num_frames, dtype=np.float64)
    objects = []
    for _ in range(int(rng.integers(2, 5))):
        r = int(rng.integers(10, 21))
        patch = texture(rng, 2 * r)
        mask = np.zeros((2 * r, 2 * r), np.float32)
        if rng.random() < 0.5:
            cv2.circle(mask, (r, r), r - 1, 1.0, -1)
        else:
            mask[1:-1, 1:-1] = 1.0
        centre = np.array([rng.uniform(0.2, 0.8) * width, rng.uniform(0.25, 0.75) * height])
        positions, angles = trajectory(law, t, rng, centre)
        # stop_go wanders off: wrap its path around the frame
        positions = np.mod(positions, [width, height]) if law == "stop_go" else positions
        objects.append((patch, mask, r, positions, angles))
    frames = []
    for k in range(num_frames):
        m = np.float32([[1, 0, -(canvas.shape[1] - width) / 2 - drift[0] * k],
                        [0, 1, -(canvas.shape[0] - height) / 2 - drift[1] * k]])
        frame = cv2.warpAffine(canvas, m, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT).astype(np.float32)
        for patch, mask, r, positions, angles in objects:
            a = cv2.getRotationMatrix2D((r, r), float(angles[k]), 1.0)
            a[:, 2] += positions[k] - r
            warped = cv2.warpAffine(patch, a, (width, height), flags=cv2.INTER_LINEAR).astype(np.float32)
            alpha = cv2.warpAffine(mask, a, (width, height), flags=cv2.INTER_LINEAR)[..., None]
            frame = frame * (1 - alpha) + warped * alpha
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def make_object_dataset(out_dir: str | Path, *, videos: int = 128, seed: int = 0, num_frames: int = 48,
                        width: int = 192, height: int = 128) -> list[Path]:
    """Write ``videos`` H.264 clips (the encoding of ``mvtools synth``) as OUT/<class>/<class>_<i>.mp4."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(videos):
        law = CLASSES[i % len(CLASSES)]
        frames = render_objects(law, np.random.default_rng(rng.integers(2**63)), num_frames=num_frames,
                                width=width, height=height)
        paths.append(encode_video(Path(out_dir) / law / f"{law}_{i:04d}.mp4", frames))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--videos", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=48)
    args = parser.parse_args()
    print(f"{len(make_object_dataset(args.out_dir, videos=args.videos, seed=args.seed, num_frames=args.frames))} "
          f"videos in {args.out_dir}")


if __name__ == "__main__":
    main()

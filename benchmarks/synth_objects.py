"""A second synthetic set for ``motion_benefit.py``: objects moving independently over a textured, slightly
moving background, with motion that changes over time within a video.

What MCD's negatives (other times of the same video move differently), MCL's motion boundaries (object edges)
and FIMA's foreground cells (the objects) assume, and the camera-motion set of ``mvtools synth`` lacks. Each
video has 3-5 objects (discs or squares of their own random texture, radius 14-24 px at 192 x 128) over a
random texture that drifts 0.2-0.5 px per frame in a random direction. The class is the law the objects move
by; every object follows it with its own position, phase, period (16-28 frames) and peak speed, so objects move
independently and their speed rises and falls within a clip:

    left, right, up, down   translating that way, each object stopping and going on its own rhythm (objects
                            leaving the frame come back on the other side)
    orbit_cw, orbit_ccw     around a circle of their own, clockwise / counter-clockwise on screen
    spin_cw, spin_ccw       turning in place, clockwise / counter-clockwise, at a rising and falling rate

Appearance (textures, shapes, count, positions, drift) is drawn independently of the class."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mvtools.synth import encode_video, texture  # noqa: E402

CLASSES = ("left", "right", "up", "down", "orbit_cw", "orbit_ccw", "spin_cw", "spin_ccw")
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
#: ranges drawn per video or object (pixels at 192 x 128, frames, degrees)
COUNT, SIZE = (3, 5), (14, 24)  # objects per video, their radius
PERIOD = (16, 28)  # of the speed's ups and downs, of an orbit
SPEED, ORBIT, SPIN = (2.5, 4.5), (14, 24), (6, 12)  # peak px / frame, orbit radius px, peak degrees / frame


def trajectory(law: str, t: np.ndarray, rng: np.random.Generator, centre: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """(positions (T, 2) in pixels, rotation angles (T,) in degrees) of one object moving by ``law``."""
    w = 2 * math.pi / rng.uniform(*PERIOD)
    phase = rng.uniform(0, 2 * math.pi)
    pulse = np.abs(np.sin(w * t / 2 + phase))  # 0..1, the object's own stop-and-go
    angle = np.zeros(len(t))
    offset = np.zeros((len(t), 2))
    if law in DIRECTIONS:
        speed = rng.uniform(*SPEED) * pulse
        offset = (np.cumsum(speed) - speed[0])[:, None] * np.array(DIRECTIONS[law])
    elif law in ("orbit_cw", "orbit_ccw"):
        sense = 1.0 if law == "orbit_cw" else -1.0  # image y points down: +angle in x, y is clockwise on screen
        radius = rng.uniform(*ORBIT)
        offset = radius * np.stack([np.cos(sense * w * t + phase), np.sin(sense * w * t + phase)], 1)
    elif law in ("spin_cw", "spin_ccw"):
        rate = rng.uniform(*SPIN) * (0.25 + 0.75 * pulse) * (-1.0 if law == "spin_cw" else 1.0)  # cv2: + is ccw
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
    for _ in range(int(rng.integers(COUNT[0], COUNT[1] + 1))):
        r = int(rng.integers(SIZE[0], SIZE[1] + 1))
        patch = texture(rng, 2 * r)
        mask = np.zeros((2 * r, 2 * r), np.float32)
        if rng.random() < 0.5:
            cv2.circle(mask, (r, r), r - 1, 1.0, -1)
        else:
            mask[1:-1, 1:-1] = 1.0
        centre = np.array([rng.uniform(0.2, 0.8) * width, rng.uniform(0.25, 0.75) * height])
        positions, angles = trajectory(law, t, rng, centre)
        positions = np.mod(positions, [width, height])  # translations leave on one side, come back on the other
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

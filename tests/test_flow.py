import importlib.util
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from mvtools import flow, motion, open_store, synth
from mvtools.decode import iter_motion
from mvtools.errors import MvtoolsError, StoreError
from mvtools.extract import ExtractConfig, extract
from mvtools.store import array_specs, create_store


def _raft_reason() -> str | None:
    try:
        flow.check_raft_available()
    except MvtoolsError as e:
        return str(e)
    return None


RAFT_MISSING = _raft_reason()
gpu = pytest.mark.gpu
needs_raft = pytest.mark.skipif(RAFT_MISSING is not None, reason=f"RAFT cannot run here: {RAFT_MISSING}")
needs_torchvision = pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="no torchvision")


def shifted_pair(dx: float, dy: float, size: int = 160) -> tuple[np.ndarray, np.ndarray]:
    image = synth.texture(np.random.default_rng(3), 2 * size)
    crop = np.float64([[1, 0, -size / 2], [0, 1, -size / 2]])
    moved = crop + [[0, 0, dx], [0, 0, dy]]
    warp = lambda m: cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR)  # noqa: E731
    return warp(crop), warp(moved)


@pytest.mark.parametrize("dx, dy", [(3.0, -2.0), (1.5, 0.5)])
@pytest.mark.parametrize("method", ["dis:ultrafast", "dis:medium", "farneback"])
def test_opencv_flows_recover_a_translation(method, dx, dy):
    prev, nxt = shifted_pair(dx, dy)
    name, _, preset = method.partition(":")
    est = flow.dis_flow(prev, nxt, preset) if name == "dis" else flow.farneback_flow(prev, nxt)
    assert est.shape == (160, 160, 2) and est.dtype == np.float32
    truth = np.broadcast_to(np.float32([dx, dy]), est.shape)
    assert flow.endpoint_error(est, truth, margin=16) < 0.25


def test_affine_flow_and_endpoint_error_by_hand():
    shift = np.float64([[1, 0, 2], [0, 1, -1]])
    identity = np.float64([[1, 0, 0], [0, 1, 0]])
    f = flow.affine_flow(identity, shift, 4, 5)
    assert f.shape == (4, 5, 2) and np.allclose(f, [2, -1])
    quarter = np.float64([[0, -1, 0], [1, 0, 0]])  # (x, y) -> (-y, x)
    f = flow.affine_flow(identity, quarter, 3, 3)
    assert np.allclose(f[2, 1], [-2 - 1, 1 - 2])
    est, truth = np.zeros((4, 4, 2)), np.zeros((4, 4, 2))
    est[..., 0] = 3.0
    est[..., 1] = 4.0
    assert flow.endpoint_error(est, truth) == 5.0
    mask = np.zeros((4, 4), bool)
    est[1:3, 1:3] = 0
    assert flow.endpoint_error(est, truth, margin=1) == 0.0
    assert np.isnan(flow.endpoint_error(est, truth, mask))


@pytest.mark.parametrize("batch", [1, 2, 3, 10])
def test_with_flow_pairs_each_frame_with_the_next_and_ends_with_zeros(batch):
    frames = [np.full((2, 3, 3), t, np.uint8) for t in range(5)]
    calls = []

    def estimate(prev, nxt):  # "flow" = next value - prev value, so pairs can be checked
        calls.append(len(prev))
        return (nxt[..., :2].astype(np.float32) - prev[..., :2]) * 10 + prev[..., :2]

    out = list(flow.with_flow(enumerate(frames), estimate, frame=lambda item: item[1], batch=batch))
    assert [i for (i, _), _ in out] == [0, 1, 2, 3, 4]
    for (t, _), f in out[:-1]:
        assert f.shape == (2, 3, 2) and np.all(f == 10 + t)
    assert np.all(out[-1][1] == 0) and out[-1][1].shape == (2, 3, 2)
    assert sum(calls) == 4 and max(calls) <= batch
    assert list(flow.iter_flow([], estimate)) == []


def test_motion_vector_field_is_within_1px_of_the_truth_on_translations(tmp_path):
    """The benchmark's measure (benchmarks/motion_quality.py) on a small clip: H.264 vectors of a P-frame
    t+1 (one reference: frame t) against the exact backward flow t+1 -> t, on cells that carry one."""
    w, h, frames = 160, 128, 10
    canvas = synth.texture(np.random.default_rng(5), 384)
    for shift in [(2.0, 1.0), (1.5, -0.5)]:
        views = synth.camera_matrices(384, w, h, frames, shift=shift)
        path = synth.encode_video(tmp_path / f"{shift}.mp4", synth.render_views(canvas, views, w, h),
                                  bframes=0, refs=1, gop=250)
        errors, coverage = [], []
        for rec in iter_motion(path, decode_frames=False):
            if rec.index == 0:
                continue
            est, mask = flow.mv_as_flow(*motion.dense_field(rec.motion_vectors, h, w), h, w)
            truth = flow.affine_flow(views[rec.index], views[rec.index - 1], h, w)
            errors.append(flow.endpoint_error(est, truth, mask, margin=16))
            coverage.append(mask[16:-16, 16:-16].mean())
        assert np.mean(errors) < 1.0, (shift, errors)
        assert np.mean(coverage) > 0.8


@pytest.fixture(scope="module")
def dis_store(synth_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("flow") / "dis.zarr"
    config = ExtractConfig(modalities=("frames", "mv"), lossless=True, flow="dis", flow_preset="fast")
    report = extract(synth_dir, path, config, include=["left/*"], progress=False)
    assert len(report.extracted) == 2 and not report.failed
    return path


def test_extract_with_dis_writes_flow_of_the_stored_frames(dis_store):
    store = open_store(dis_store)
    assert store.settings["flow"] == "dis" and store.settings["flow_preset"] == "fast"
    video = store[store.keys()[0]]
    frames, f = video.frames[:], video.flow[:]
    h, w = video.attrs["stored_height"], video.attrs["stored_width"]
    assert f.shape == (len(video), h, w, 2) and f.dtype == np.float16
    assert np.all(f[-1] == 0)
    expected = flow.dis_flow(frames[3], frames[4], "fast")  # lossless frames: exactly what the task saw
    assert np.array_equal(f[3], expected.astype(np.float16))
    assert f[:-1, 16:-16, 16:-16, 0].mean() > 0.5  # the camera pans left: the scene moves right


def test_flow_without_frames_still_decodes_pixels(synth_dir, tmp_path):
    config = ExtractConfig(modalities=("mv",), flow="farneback")
    extract(synth_dir, tmp_path / "mv.zarr", config, include=["left/left_0000.mp4"], progress=False)
    video = open_store(tmp_path / "mv.zarr")["left__left_0000"]
    assert video.arrays() == ["flow", "frame_type", "mv", "mv_mask", "pts"]
    assert video.flow.shape == (40, 128, 192, 2) and np.abs(video.flow[:-1]).max() > 1


def test_flow_settings_are_recorded_and_a_rerun_with_others_is_refused(dis_store, tmp_path):
    base = ExtractConfig(modalities=("frames", "mv"), lossless=True)
    for other in [base, replace(base, flow="dis", flow_preset="medium"),
                  replace(base, flow="farneback")]:
        with pytest.raises(StoreError, match="other settings"):
            create_store(dis_store, other.settings())
    same = replace(base, flow="dis", flow_preset="fast", raft_model="raft_large")
    create_store(dis_store, same.settings())  # RAFT options do not matter to a DIS store
    # A store written before flow existed (no flow key) opens, has no flow, and matches flow=none.
    old = ExtractConfig().settings()
    assert "flow" not in old and "flow" not in array_specs(old)
    assert array_specs({**old, "flow": "raft"})["flow"].dtype == "float16"
    create_store(tmp_path / "old.zarr", old)
    create_store(tmp_path / "old.zarr", ExtractConfig(flow="none").settings())


def test_config_rejects_unknown_flow_options():
    with pytest.raises(ValueError, match="--flow must be"):
        ExtractConfig(flow="tvl1")
    with pytest.raises(ValueError, match="--flow-preset"):
        ExtractConfig(flow="dis", flow_preset="slow")
    with pytest.raises(ValueError, match="--raft-model"):
        ExtractConfig(flow="raft", raft_model="raft_huge")
    settings = ExtractConfig(flow="raft").settings()
    assert settings["raft_model"] == "raft_small" and settings["raft_weights"] == "DEFAULT"
    assert "flow_preset" not in settings


@pytest.mark.skipif(RAFT_MISSING is None, reason="RAFT can run here: nothing to refuse")
@pytest.mark.parametrize("workers", ["0", "2"])
def test_flow_raft_fails_at_once_without_gpu_or_torchvision(synth_dir, tmp_path, workers):
    mvtools = str(Path(sys.executable).with_name("mvtools"))
    out = subprocess.run([mvtools, "extract", str(synth_dir), "-o", str(tmp_path / "r.zarr"), "--flow", "raft",
                          "--workers", workers, "--quiet"], capture_output=True, text=True, env={**os.environ})
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "--flow raft needs" in out.stderr
    assert "torchvision" in out.stderr or "GPU" in out.stderr
    assert not (tmp_path / "r.zarr").exists()  # nothing decoded, nothing written
    with pytest.raises(MvtoolsError, match="--flow raft needs"):
        extract(synth_dir, tmp_path / "r2.zarr", ExtractConfig(flow="raft"), progress=False)
    assert not (tmp_path / "r2.zarr").exists()


@needs_torchvision
def test_raft_pads_crops_and_batches_on_cpu():
    """Random weights: shapes, padding to multiples of 8 and batching only (no accuracy)."""
    raft = flow.RaftFlow("raft_small", None, device="cpu", batch=2, updates=2)
    rng = np.random.default_rng(0)
    prev = rng.integers(0, 255, (3, 75, 98, 3), dtype=np.uint8)
    nxt = np.roll(prev, 2, axis=2)
    out = raft(prev, nxt)
    assert out.shape == (3, 75, 98, 2) and out.dtype == np.float32 and np.isfinite(out).all()
    one = raft(prev[2:], nxt[2:])
    assert np.allclose(out[2], one[0], atol=1e-4)  # batching does not change a pair's flow


@gpu
@needs_raft
def test_raft_recovers_a_translation_on_gpu():
    prev, nxt = shifted_pair(3.0, -2.0, size=128)
    est = flow.RaftFlow("raft_small", "DEFAULT", device="cuda")(prev[None], nxt[None])[0]
    truth = np.broadcast_to(np.float32([3.0, -2.0]), est.shape)
    assert flow.endpoint_error(est, truth, margin=16) < 0.25


@gpu
@needs_raft
@pytest.mark.parametrize("workers", [0, 2])
def test_extract_with_raft_in_process_and_on_ray(synth_dir, tmp_path, workers):
    from mvtools.pipeline import extract_parallel

    config = ExtractConfig(modalities=("mv",), flow="raft")
    run = extract if workers == 0 else lambda *a, **k: extract_parallel(*a, workers=workers, **k)
    report = run(synth_dir, tmp_path / "raft.zarr", config, include=["left/*"], progress=False)
    assert len(report.extracted) == 2 and not report.failed
    video = open_store(tmp_path / "raft.zarr")["left__left_0000"]
    f = video.flow[:]
    assert f.shape == (40, 128, 192, 2) and np.all(f[-1] == 0) and f[:-1, 16:-16, 16:-16, 0].mean() > 0.5


@needs_torchvision
def test_raft_actor_path_on_cpu(synth_dir, tmp_path):
    """The Ray wiring of --flow raft with random weights: a decoding task on CPU sends frame batches to a
    RaftActor (here on CPU, holding a declared GPU) and writes what it returns."""
    import ray

    from mvtools.extract import Job, run_job
    from mvtools.pipeline import ActorFlow, RaftActor

    config = ExtractConfig(modalities=("mv",), flow="raft")
    create_store(tmp_path / "r.zarr", config.settings())
    ray.init(num_cpus=1, num_gpus=1, include_dashboard=False)
    try:
        actor = ray.remote(num_gpus=1, num_cpus=0)(RaftActor).remote("raft_small", None, device="cpu")
        job = Job(rel="left/left_0000.mp4", key="v", path=str(synth_dir / "left" / "left_0000.mp4"))
        outcome = ray.get(ray.remote(run_job).remote(job, str(tmp_path / "r.zarr"), config, "auto", ActorFlow(actor)))
    finally:
        ray.shutdown()
    assert outcome.error is None and outcome.frames == 40
    f = open_store(tmp_path / "r.zarr")["v"].flow[:]
    assert f.shape == (40, 128, 192, 2) and np.all(f[-1] == 0) and np.isfinite(f).all()

"""Optional dense optical flow: DIS and Farneback (OpenCV, CPU) and RAFT (torchvision, GPU).

Conventions: a flow is (h, w, 2) float32 in pixels, frame t -> t+1: pixel p of frame t moves to
p + flow(p) in frame t+1. (Motion vectors use FFmpeg's opposite sense, see ``mvtools.motion``.)
A video's last frame has no t+1; its flow is zeros.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import cv2
import numpy as np

from . import motion
from .config import DIS_PRESET_NAMES, FLOW_METHODS, RAFT_MODELS
from .errors import MvtoolsError

DIS_PRESETS = dict(zip(DIS_PRESET_NAMES, (
    cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, cv2.DISOPTICAL_FLOW_PRESET_FAST, cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)))
RAFT_MIN_SIDE = 128  # px: torchvision's RAFT needs feature maps of at least 16 cells at 1/8 scale

#: (prev (N, h, w, 3) uint8, next (N, h, w, 3) uint8) -> (N, h, w, 2) float32 flows prev -> next.
Estimator = Callable[[np.ndarray, np.ndarray], np.ndarray]
T = TypeVar("T")


def _gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


_DIS: dict[str, cv2.DISOpticalFlow] = {}


def dis_flow(prev_rgb: np.ndarray, next_rgb: np.ndarray, preset: str = "medium") -> np.ndarray:
    """DIS optical flow (Kroeger et al. 2016) on grayscale, prev -> next, (h, w, 2) float32 px."""
    if preset not in DIS_PRESETS:
        raise ValueError(f"unknown DIS preset {preset!r}; choose from {', '.join(DIS_PRESETS)}")
    if preset not in _DIS:  # stateless between calls: one instance per preset and process
        _DIS[preset] = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])
    return _DIS[preset].calc(_gray(prev_rgb), _gray(next_rgb), None)


def farneback_flow(prev_rgb: np.ndarray, next_rgb: np.ndarray) -> np.ndarray:
    """Farneback polynomial-expansion flow (OpenCV's usual settings), prev -> next, (h, w, 2) float32 px."""
    return cv2.calcOpticalFlowFarneback(_gray(prev_rgb), _gray(next_rgb), None, pyr_scale=0.5, levels=3,
                                        winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)


def pairwise(flow: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Estimator:
    """A batch estimator from a one-pair flow function."""
    return lambda prev, nxt: np.stack([flow(p, n) for p, n in zip(prev, nxt)])


def with_flow(
    items: Iterable[T], estimate: Estimator, *, frame: Callable[[T], np.ndarray] = lambda x: x, batch: int = 1,
) -> Iterator[tuple[T, np.ndarray]]:
    """(item_t, flow t -> t+1) for each item, in order, the last with a zero flow.

    ``frame(item)`` is its (h, w, 3) uint8 image. Items come out up to ``batch`` + 1 items late: pairs are
    estimated ``batch`` at a time, so only that many frames are held.
    """
    held: list[T] = []
    images: list[np.ndarray] = []
    for item in items:
        held.append(item)
        images.append(frame(item))
        if len(images) == batch + 1:
            yield from zip(held[:-1], estimate(np.stack(images[:-1]), np.stack(images[1:])))
            held, images = held[-1:], images[-1:]
    if len(images) > 1:
        yield from zip(held[:-1], estimate(np.stack(images[:-1]), np.stack(images[1:])))
    if held:
        yield held[-1], np.zeros((*images[-1].shape[:2], 2), np.float32)


def iter_flow(frames: Iterable[np.ndarray], estimate: Estimator, batch: int = 1) -> Iterator[np.ndarray]:
    """Flow t -> t+1 for each frame of a stream (zeros for the last)."""
    return (flow for _, flow in with_flow(frames, estimate, batch=batch))


def estimator(method: str, preset: str = "medium", raft_model: str = "raft_small",
              raft_weights: str | None = "DEFAULT", device: str = "cuda") -> Estimator:
    """The batch estimator of a ``--flow`` method (not "none")."""
    if method == "dis":
        return pairwise(lambda p, n: dis_flow(p, n, preset))
    if method == "farneback":
        return pairwise(farneback_flow)
    if method == "raft":
        return RaftFlow(raft_model, raft_weights, device=device)
    raise ValueError(f"unknown flow method {method!r}; choose from {', '.join(FLOW_METHODS[1:])}")


# Ground truth and error -------------------------------------------------------------------------------
def affine_flow(m_from: np.ndarray, m_to: np.ndarray, height: int, width: int) -> np.ndarray:
    """Exact flow between two views of one scene, each a 2x3 affine map scene -> image (as given to
    cv2.warpAffine): p -> A_to A_from^-1 p, so flow(p) = A_to A_from^-1 p - p. (height, width, 2) float32."""
    a_from = np.vstack([m_from, [0, 0, 1]])
    a_to = np.vstack([m_to, [0, 0, 1]])
    rel = (a_to @ np.linalg.inv(a_from))[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    moved = np.stack([rel[0, 0] * xs + rel[0, 1] * ys + rel[0, 2], rel[1, 0] * xs + rel[1, 1] * ys + rel[1, 2]], -1)
    return (moved - np.stack([xs, ys], -1)).astype(np.float32)


def endpoint_error(estimate: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None,
                   margin: int = 0) -> float:
    """EPE = mean ||estimate - truth||_2 over pixels in ``mask`` (all when None) at least ``margin`` px
    from the border; NaN when none is left."""
    h, w = truth.shape[:2]
    keep = np.zeros((h, w), bool)
    keep[margin:h - margin, margin:w - margin] = True
    if mask is not None:
        keep &= mask
    if not keep.any():
        return float("nan")
    return float(np.linalg.norm((estimate - truth)[keep], axis=-1).mean())


def mv_as_flow(field: np.ndarray, mask: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A dense motion-vector field's past direction (``mvtools.motion`` layout, per 4x4 cell) as a per-pixel
    (height, width, 2) flow and its (height, width) mask. It keeps FFmpeg's sign (reference position -
    current position): for a P-frame t+1 referencing frame t it estimates the backward flow t+1 -> t."""
    return motion.pixel_field(field[..., 0:2], height, width), motion.pixel_field(mask[..., 0:1], height, width)[..., 0]


# RAFT -------------------------------------------------------------------------------------------------
def check_raft_available(require_cuda: bool = True) -> None:
    """Raise ``MvtoolsError`` with a one-line reason unless torchvision's RAFT (and a CUDA GPU) can run."""
    try:
        from torchvision.models import optical_flow  # noqa: F401
    except Exception as e:  # ImportError, or a torchvision built for another torch (RuntimeError...)
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MvtoolsError(f"--flow raft needs torchvision (pip install 'mvtools[flow]' with a torchvision "
                           f"matching torch): cannot import it ({detail})") from None
    import torch

    if require_cuda and not torch.cuda.is_available():
        raise MvtoolsError("--flow raft needs a CUDA GPU and torch.cuda.is_available() is False here; "
                           "use --flow dis or --flow farneback on CPU")


def _is_checkpoint(weights: str) -> bool:
    return os.sep in weights or "/" in weights or weights.endswith((".pt", ".pth")) or os.path.exists(weights)


class RaftFlow:
    """torchvision's RAFT as a batch estimator: (N, h, w, 3) uint8 pairs -> (N, h, w, 2) float32 px.

    weights: a name of torchvision's weights enum ("DEFAULT", "C_T_V2", ...), a local checkpoint (a state
    dict, read with ``torch.load(weights_only=True)``), or None for random weights (tests only).
    Inputs are scaled to [-1, 1] and replicate-padded on the right and bottom to multiples of 8, and to at
    least 128 px (RAFT's correlation pyramid needs 16 feature cells at 1/8 scale); the flow is cropped back.
    """

    def __init__(self, model: str = "raft_small", weights: str | None = "DEFAULT", *, device: str = "cuda",
                 batch: int = 16, updates: int = 12):
        import torch
        from torchvision.models import optical_flow

        if model not in RAFT_MODELS:
            raise ValueError(f"unknown RAFT model {model!r}; choose from {', '.join(RAFT_MODELS)}")
        build = getattr(optical_flow, model)
        enum = optical_flow.Raft_Small_Weights if model == "raft_small" else optical_flow.Raft_Large_Weights
        if weights is None:
            net = build(weights=None)
        elif _is_checkpoint(weights):
            if not os.path.isfile(weights):
                raise MvtoolsError(f"{weights}: RAFT checkpoint not found")
            net = build(weights=None)
            state = torch.load(weights, map_location="cpu", weights_only=True)
            net.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        else:
            if weights not in enum.__members__:
                raise MvtoolsError(f"unknown {model} weights {weights!r}; choose from {', '.join(enum.__members__)} "
                                   "or give a checkpoint path")
            net = build(weights=enum[weights])
        self.torch = torch
        self.device = torch.device(device)
        self.net = net.eval().to(self.device)
        self.batch = batch
        self.updates = updates

    def _prepare(self, images: np.ndarray):
        torch = self.torch
        x = torch.from_numpy(np.require(images, requirements=["C", "W"]))  # Ray hands read-only arrays
        x = x.to(self.device).permute(0, 3, 1, 2).float()
        x = x / 127.5 - 1.0
        h, w = x.shape[-2:]
        ph, pw = max(h + -h % 8, RAFT_MIN_SIDE) - h, max(w + -w % 8, RAFT_MIN_SIDE) - w
        return torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")

    def __call__(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        h, w = prev.shape[1:3]
        out = []
        with self.torch.inference_mode():
            for i in range(0, len(prev), self.batch):
                flows = self.net(self._prepare(prev[i:i + self.batch]), self._prepare(nxt[i:i + self.batch]),
                                 num_flow_updates=self.updates)
                out.append(flows[-1][:, :, :h, :w].permute(0, 2, 3, 1).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, h, w, 2), np.float32)

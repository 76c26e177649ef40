"""What an extraction extracts and how it stores it: ``ExtractConfig``, filled from a YAML recipe and CLI flags.

Light on purpose (no PyAV, zarr or OpenCV): the CLI builds its parser from these names.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

MODALITIES = ("frames", "mv", "residual", "keyframes", "accumulated")
DEFAULT_MODALITIES = ("frames", "mv", "residual", "keyframes")
FLOW_METHODS = ("none", "dis", "farneback", "raft")
DIS_PRESET_NAMES = ("ultrafast", "fast", "medium")
RAFT_MODELS = ("raft_small", "raft_large")
REENCODE = ("none", "h264", "mpeg4")


@dataclass(frozen=True)
class ExtractConfig:
    """What to extract and how to store it. Everything but ``labels`` is recorded in the store."""

    size: int = 128  # short side of stored frames, pixels
    modalities: tuple[str, ...] = DEFAULT_MODALITIES
    labels: str = "folder"  # "folder": parent folder name; "none"
    frame_quality: int = 90  # JPEG quality of frames and keyframes
    residual_quality: int = 95  # JPEG quality of residuals
    lossless: bool = False  # zstd frames and int16 residuals instead of JPEG
    chunk_frames: int = 16
    shard_frames: int = 128
    flow: str = "none"  # optical flow: none, dis, farneback (CPU, in the decoding task) or raft (GPU)
    flow_preset: str = "medium"  # DIS preset: ultrafast, fast, medium
    raft_model: str = "raft_small"  # raft_small or raft_large
    raft_weights: str | None = None  # torchvision weights name (default "DEFAULT") or a checkpoint path
    reencode: str = "none"  # none, h264 or mpeg4: every video re-encoded first (the papers' preprocessing)
    gop: int = 0  # with reencode: an I-frame every gop frames (0: the encoder's default)
    bframes: int = -1  # with reencode: at most this many consecutive B-frames (-1: the encoder's default)

    def __post_init__(self):
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; choose from {', '.join(MODALITIES)}")
        if self.size < 8 or self.size % 2:
            raise ValueError(f"--size must be an even number >= 8, got {self.size}")
        if self.labels not in ("folder", "none"):
            raise ValueError(f"--labels must be 'folder' or 'none', got {self.labels!r}")
        if self.shard_frames % self.chunk_frames:
            raise ValueError("shard_frames must be a multiple of chunk_frames")
        if self.flow not in FLOW_METHODS:
            raise ValueError(f"--flow must be one of {', '.join(FLOW_METHODS)}, got {self.flow!r}")
        if self.flow_preset not in DIS_PRESET_NAMES:
            raise ValueError(f"--flow-preset must be one of {', '.join(DIS_PRESET_NAMES)}, got {self.flow_preset!r}")
        if self.reencode not in REENCODE:
            raise ValueError(f"--reencode must be one of {', '.join(REENCODE)}, got {self.reencode!r}")
        if self.gop < 0 or self.bframes < -1:
            raise ValueError("--gop must be >= 0 and --bframes >= -1")
        if self.reencode == "none" and (self.gop or self.bframes != -1):
            raise ValueError("--gop and --bframes apply to --reencode h264|mpeg4")
        if self.raft_model not in RAFT_MODELS:
            raise ValueError(f"--raft-model must be one of {', '.join(RAFT_MODELS)}, got {self.raft_model!r}")

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, **overrides) -> ExtractConfig:
        """A recipe from pipelines/ (YAML keys = field names; ``recipe``/``split`` are the CLI's), with
        explicit overrides on top."""
        recipe = {k: v for k, v in read_yaml(path).items() if k not in ("recipe", "split")}
        unknown = set(recipe) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
        merged = {**recipe, **{k: v for k, v in overrides.items() if v is not None}}
        if "modalities" in merged:
            merged["modalities"] = tuple(merged["modalities"])
        return cls(**merged)

    def settings(self) -> dict:
        """What the store records (and a rerun must match). Flow and re-encoding keys appear only when used,
        and only those that change the result, so stores written without them still match."""
        s = asdict(self)
        for name in ("labels", "flow", "flow_preset", "raft_model", "raft_weights", "reencode", "gop", "bframes"):
            s.pop(name)
        s["modalities"] = sorted(self.modalities)
        if self.flow != "none":
            s["flow"] = self.flow
        if self.flow == "dis":
            s["flow_preset"] = self.flow_preset
        if self.flow == "raft":
            s["raft_model"], s["raft_weights"] = self.raft_model, self.raft_weights or "DEFAULT"
        if self.reencode != "none":
            s["reencode"] = {"codec": self.reencode, "gop": self.gop, "bframes": self.bframes}
        return s

    def flow_estimator(self, device: str = "cuda"):
        """The batch estimator of ``flow`` (RAFT loads its model here)."""
        from .flow import estimator

        return estimator(self.flow, self.flow_preset, self.raft_model, self.raft_weights or "DEFAULT", device)


def read_yaml(path: str | os.PathLike) -> dict:
    import yaml

    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of settings")
    return data

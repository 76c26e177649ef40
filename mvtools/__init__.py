"""mvtools: compressed-domain motion (motion vectors, residuals, keyframes) from videos into zarr.

The public names load on first use (PEP 562), so ``mvtools --help`` and ``import mvtools.errors`` do not pay
for PyAV, zarr and OpenCV.
"""

from __future__ import annotations

from importlib import import_module

__version__ = "0.2.0"

_EXPORTS = {
    "MotionRecord": "decode", "VideoInfo": "decode", "iter_motion": "decode", "probe": "decode",
    "MvtoolsError": "errors", "StoreError": "errors", "VideoError": "errors",
    "Store": "store", "VideoView": "store", "open_store": "store",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mvtools' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

"""mvtools: compressed-domain motion (motion vectors, residuals, keyframes) from videos into zarr."""

from .decode import MotionRecord, VideoInfo, iter_motion, probe
from .errors import MvtoolsError, StoreError, VideoError
from .store import Store, VideoView, open_store

__all__ = [
    "MotionRecord", "MvtoolsError", "Store", "StoreError", "VideoError", "VideoInfo", "VideoView",
    "iter_motion", "open_store", "probe",
]
__version__ = "0.1.0"

"""mvtools: compressed-domain motion (motion vectors, residuals, keyframes) from videos into zarr."""

from .decode import MotionRecord, VideoInfo, iter_motion, probe
from .errors import MvtoolsError, StoreError, VideoError

__all__ = ["MotionRecord", "MvtoolsError", "StoreError", "VideoError", "VideoInfo", "iter_motion", "probe"]
__version__ = "0.1.0"

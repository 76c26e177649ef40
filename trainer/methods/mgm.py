"""MGM, motion-guided masking (Fan et al., ICCV 2023, arXiv 2308.12962): VideoMAE whose mask follows the codec's
motion vectors.

The loss and networks are ``videomae``'s; the mask is ``mvtools.masking.mgm_mask``: at every tubelet step the hidden
tokens are a region of k = ratio x (S/16)^2 tokens placed where the clip's motion vectors (``mv``, read from the
store, under the view's crop and flip) hold the most energy, so the hidden volume follows the moving objects through
the clip and the visible tokens are mostly the static context. MGM takes its vectors from the compressed stream,
as mvtools stores them; its ratio is 75% (lower than VideoMAE's 90%: masking the moving region is already hard;
as we read the paper, which ``../shared/papers`` does not hold). The shape of the region (a disc of the k tokens
nearest its centre), the tie-breaking and the steps without vectors are our choices (``mvtools.masking``).
``motion: flow`` (or ``auto``: flow when the store has it) guides the mask with stored optical flow instead.
"""

from __future__ import annotations

from .base import register
from .videomae import VideoMAE


@register
class MGM(VideoMAE):
    name = "mgm"
    modalities = ("rgb", "mv")
    default_mask = "mgm"

"""Dataset readers: every source becomes a list of :class:`Clip` records."""

from sonalign.data.clips import Clip
from sonalign.data.readers import load_clips

__all__ = ["Clip", "load_clips"]

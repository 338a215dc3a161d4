"""The media package's error: raised where ffmpeg, Pillow or a speech engine refuses an input."""

from __future__ import annotations

from rongmei.core.errors import RongmeiError

__all__ = ["MediaError"]


class MediaError(RongmeiError):
    """Raised when a media input cannot be rendered (corrupt, too large, missing tool); the message is for editors."""

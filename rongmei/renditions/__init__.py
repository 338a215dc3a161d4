"""Media renditions (issue 5): covers, headline cards, video transcodes, loudspeaker audio, spoken articles.

The review flow calls `produce_renditions` before the first human stage and signs `manifest_hash` of the
result; ingest pre-checks call `probe.media_problems` for each media file of a drop.
"""

from __future__ import annotations

from rongmei.core.media_settings import RECIPE_VERSION, MediaSettings
from rongmei.renditions.errors import MediaError
from rongmei.renditions.ffmpeg import ffmpeg_run_count
from rongmei.renditions.pipeline import RECIPES, manifest_hash, needed_renditions, produce_renditions
from rongmei.renditions.probe import MediaInfo, media_problems, probe

__all__ = [
    "RECIPES", "RECIPE_VERSION", "MediaError", "MediaInfo", "MediaSettings", "audio", "cache", "cards",
    "errors", "ffmpeg", "ffmpeg_run_count", "fonts", "images", "manifest_hash", "media_problems", "mongolian",
    "needed_renditions", "pipeline", "probe", "produce_renditions", "textlayout", "textnorm", "tts", "video"
]

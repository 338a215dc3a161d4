"""The vendored fonts (assets/fonts, OFL): a pip install alone renders Chinese and Mongolian."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from PIL import ImageFont

__all__ = ["FONT_DIR", "MONGOLIAN", "SC_BOLD", "SC_FAMILY", "SC_REGULAR", "font"]

FONT_DIR = Path(__file__).resolve().parents[2] / "assets" / "fonts"
SC_REGULAR = FONT_DIR / "NotoSansSC-Regular.otf"
SC_BOLD = FONT_DIR / "NotoSansSC-Bold.otf"
MONGOLIAN = FONT_DIR / "NotoSansMongolian-Regular.ttf"
SC_FAMILY = "Noto Sans CJK SC"  # family name inside the SC files, used by libass for burned-in subtitles


@cache
def font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    # raqm layout: shaping (needed for Mongolian joining) and correct advance widths for measuring lines.
    return ImageFont.truetype(str(path), size, layout_engine=ImageFont.Layout.RAQM)

"""Chinese line breaking by measured width, with kinsoku rules, and title auto-fit.

Kinsoku (禁则): closing punctuation never starts a line, opening punctuation never ends one, and numbers
with their unit (12.5万, 8.3%, 2026年) or a Latin word stay on one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from PIL import ImageFont

__all__ = ["NO_LINE_END", "NO_LINE_START", "FittedText", "fit", "tokens", "wrap"]

NO_LINE_START = set("，。、；：？！）》」』】〕〉”’…—·%‰．,.;:?!)]}｝～·ー") | {"\u2014", "\u2026"}
NO_LINE_END = set("（《「『【〔〈“‘([{｛")
# Unbreakable runs: a number with separators, decimals and a following unit/percent; or a Latin word.
_TOKEN = re.compile(
    r"[+\-−]?\d+(?:[,，.．:：]\d+)*(?:%|‰|℃|[万亿千百]+|[年月日号时点分秒]|[A-Za-z]+)?"
    r"|[A-Za-z][A-Za-z'’\-]*"
    r"|\s+"
    r"|.",
    re.S,
)


def tokens(text: str) -> list[str]:
    """Split into units that may not be broken, then glue kinsoku punctuation to its neighbour."""
    units = [m.group(0) for m in _TOKEN.finditer(text)]
    glued: list[str] = []
    pending_open = ""
    for unit in units:
        if unit in NO_LINE_END or (len(unit) == 1 and unit in NO_LINE_END):
            pending_open += unit
            continue
        unit = pending_open + unit
        pending_open = ""
        if glued and (unit[0] in NO_LINE_START) and not unit.isspace():
            glued[-1] += unit
        else:
            glued.append(unit)
    if pending_open:
        if glued:
            glued[-1] += pending_open
        else:
            glued.append(pending_open)
    return glued


def wrap(text: str, font: ImageFont.FreeTypeFont, max_width: float) -> list[str]:
    """Greedy line filling by the shaped width of each candidate line (raqm gives true advances)."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        rows: list[list[str]] = [[]]
        for unit in tokens(paragraph):
            row = rows[-1]
            if not row or font.getlength("".join(row) + unit) <= max_width:
                row.append(unit)
            elif not unit.isspace():
                rows.append([unit])
        # No widow: a lone character on the last line takes one unit from the line above with it.
        if len(rows) >= 2 and len(rows[-1]) == 1 and len(rows[-2]) >= 4:
            rows[-1].insert(0, rows[-2].pop())
        lines += ["".join(row).strip() for row in rows]
    return lines


@dataclass(frozen=True)
class FittedText:
    lines: list[str]
    size: int
    line_height: int
    truncated: bool

    @property
    def height(self) -> int:
        return self.line_height * len(self.lines)


def fit(text: str, font_path: object, box_width: int, box_height: int, *, max_size: int, min_size: int,
        max_lines: int, line_spacing: float = 1.3) -> FittedText:
    """The largest font size at which `text` fits the box in at most `max_lines` lines.

    If even `min_size` does not fit, the last line is cut and ends with an ellipsis, still inside the box.
    """
    from rongmei.renditions.fonts import font as load_font

    size = max_size
    while True:
        face = load_font(font_path, size)  # type: ignore[arg-type]
        line_height = int(size * line_spacing)
        lines = wrap(text, face, box_width)
        fits_lines = len(lines) <= max_lines and line_height * len(lines) <= box_height
        widest = max((face.getlength(line) for line in lines), default=0)
        if fits_lines and widest <= box_width:
            return FittedText(lines, size, line_height, truncated=False)
        if size <= min_size:
            keep = max(1, min(max_lines, box_height // line_height))
            kept = lines[:keep]
            last = kept[-1]
            while last and face.getlength(last + "…") > box_width:
                last = last[:-1]
            kept[-1] = last + "…"
            return FittedText(kept, size, line_height, truncated=True)
        size = max(min_size, int(size * 0.92))

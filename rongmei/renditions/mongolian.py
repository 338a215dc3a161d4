"""Traditional Mongolian set vertically (issue 6 item 4).

Pillow's `direction="ttb"` does not shape Mongolian correctly, so each column is shaped horizontally with
raqm (which joins the letters), drawn into its own strip and rotated 90° clockwise; Mongolian columns run
top to bottom and follow each other left to right.
"""

from __future__ import annotations

from PIL import Image, ImageDraw

from rongmei.renditions.fonts import MONGOLIAN, font

__all__ = ["MONGOLIAN_ELLIPSIS", "columns", "draw_vertical", "isolated_width", "shaped_width"]

MONGOLIAN_ELLIPSIS = "\u1801"  # ᠁


def shaped_width(text: str, size: int) -> float:
    """Advance of the shaped (joined) text; differs from the sum of isolated letters when joining works."""
    return font(MONGOLIAN, size).getlength(text)


def isolated_width(text: str, size: int) -> float:
    face = font(MONGOLIAN, size)
    return sum(face.getlength(char) for char in text if not char.isspace()) + sum(
        face.getlength(" ") for char in text if char.isspace())


def columns(text: str, size: int, column_length: int) -> list[str]:
    """Break at spaces so each column's shaped length fits `column_length` (a long word is cut)."""
    face = font(MONGOLIAN, size)
    out: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if face.getlength(candidate) <= column_length:
            line = candidate
            continue
        if line:
            out.append(line)
        while face.getlength(word) > column_length:  # one word longer than a column: cut it
            cut = len(word)
            while cut > 1 and face.getlength(word[:cut]) > column_length:
                cut -= 1
            out.append(word[:cut])
            word = word[cut:]
        line = word
    if line:
        out.append(line)
    return out


def draw_vertical(canvas: Image.Image, text: str, box: tuple[int, int, int, int], *, size: int,
                  fill: tuple[int, int, int] = (255, 255, 255), line_spacing: float = 1.6) -> list[tuple[int, int, int, int]]:
    """Set `text` in vertical columns inside `box` (left, top, right, bottom); returns each column's ink box.

    Columns that do not fit the box's width are dropped and the last kept one ends with ᠁.
    """
    left, top, right, bottom = box
    face = font(MONGOLIAN, size)
    cols = columns(text, size, bottom - top)
    ink_height = face.getbbox("ᠮᠣᠩᠭᠣᠯ")[3] - face.getbbox("ᠮᠣᠩᠭᠣᠯ")[1]
    pitch = round((ink_height + 2) * line_spacing)
    room = max(1, (right - left - ink_height) // pitch + 1)
    if len(cols) > room:
        cols = cols[:room]
        last = cols[-1]
        while last and face.getlength(last + MONGOLIAN_ELLIPSIS) > bottom - top:
            last = last[:-1]
        cols[-1] = last + MONGOLIAN_ELLIPSIS
    # The font's ascent/descent are far larger than the ink, so strips are cut to the ink band of the text.
    bands = [face.getbbox(column) for column in cols]
    band_top = min((b[1] for b in bands), default=0)
    band_height = max((b[3] for b in bands), default=size) - band_top + 2
    boxes = []
    x = left
    for column in cols:
        length = int(face.getlength(column)) + 2
        strip = Image.new("L", (length, band_height), 0)
        ImageDraw.Draw(strip).text((0, 1 - band_top), column, font=face, fill=255)
        ink = strip.getbbox()
        strip = strip.transpose(Image.Transpose.ROTATE_270)  # 90° clockwise: line start at the top
        canvas.paste(Image.new("RGB", strip.size, fill), (x, top), mask=strip)
        if ink is not None:
            x0, y0, x1, y1 = ink
            # Turning clockwise maps strip (x, y) to (height - y, x): rows become columns.
            boxes.append((x + band_height - y1, top + x0, x + band_height - y0, top + x1))
        x += round(band_height * line_spacing)
    return boxes

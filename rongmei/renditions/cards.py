"""Headline cards: the screen card (1920×1080, portrait 1080×1920), the web share image and text-only covers.

One layout, proportional to the canvas: background (the item's picture under a dark veil, or the
house gradient), a label, the auto-fitted headline, the summary and a footer line. Everything drawn stays
inside a safe margin, so a screen's overscan or a chat app's rounded crop never cuts text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFilter

from rongmei.renditions.fonts import SC_BOLD, SC_REGULAR, font
from rongmei.renditions.images import crop_to
from rongmei.renditions.textlayout import fit

__all__ = [
    "ACCENTS", "HOUSE_BOTTOM", "HOUSE_TOP", "SOFT_WHITE", "WHITE", "CardLayout", "CardText", "background",
    "render_card"
]

HOUSE_TOP = (12, 52, 110)
HOUSE_BOTTOM = (6, 22, 52)
ACCENTS = {"normal": (230, 176, 40), "urgent": (240, 120, 20), "emergency": (214, 30, 36)}
WHITE = (255, 255, 255)
SOFT_WHITE = (222, 230, 240)


@dataclass
class CardText:
    title: str
    summary: str = ""
    label: str = ""  # e.g. 通知 / 紧急通知
    footer: str = ""  # e.g. center name · date
    priority: str = "normal"


@dataclass
class CardLayout:
    """Where text went (for tests and for the bilingual card, which puts Mongolian beside it)."""

    size: tuple[int, int]
    text_boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    title_size: int = 0
    truncated: bool = False


def background(size: tuple[int, int], picture: Image.Image | None) -> Image.Image:
    width, height = size
    if picture is not None:
        base = crop_to(picture, size).filter(ImageFilter.GaussianBlur(radius=max(2, width // 400)))
        veil = Image.new("RGB", size, (0, 0, 0))
        return Image.blend(base, veil, 0.58)
    # Vertical gradient drawn as a 1-pixel column then stretched: cheap at any size.
    column = Image.new("RGB", (1, 256))
    for y in range(256):
        t = y / 255
        column.putpixel((0, y), tuple(round(a + (b - a) * t) for a, b in zip(HOUSE_TOP, HOUSE_BOTTOM, strict=True)))
    return column.resize((width, height), Image.Resampling.BILINEAR)


def render_card(size: tuple[int, int], text: CardText, picture: Image.Image | None = None,
                text_width_share: float = 1.0) -> tuple[Image.Image, CardLayout]:
    """Draw a headline card; `text_width_share` < 1 leaves the right part free (bilingual cards)."""
    width, height = size
    unit = min(width, height)
    margin = round(unit * 0.09)
    image = background(size, picture)
    draw = ImageDraw.Draw(image)
    layout = CardLayout(size=size)
    accent = ACCENTS.get(text.priority, ACCENTS["normal"])
    right = margin + round((width - 2 * margin) * text_width_share)

    y = margin
    if text.label:
        label_font = font(SC_BOLD, max(14, round(unit * 0.045)))
        box = draw.textbbox((margin, y), text.label, font=label_font)
        pad = round(unit * 0.012)
        draw.rectangle((box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad), fill=accent)
        draw.text((margin, y), text.label, font=label_font, fill=WHITE)
        layout.text_boxes.append((box[0] - pad, box[1] - pad, box[2] + pad, box[3] + pad))
        y = box[3] + pad + round(unit * 0.05)
    else:
        draw.rectangle((margin, y, margin + round(unit * 0.09), y + max(4, unit // 120)), fill=accent)
        y += round(unit * 0.05)

    footer_font = font(SC_REGULAR, max(12, round(unit * 0.032)))
    footer_top = height - margin - round(unit * 0.032 * 1.3)
    summary_font_size = max(12, round(unit * 0.042))
    summary_lines = 2 if text.summary else 0
    summary_block = round(summary_font_size * 1.45) * summary_lines + (round(unit * 0.04) if summary_lines else 0)
    title_box_height = footer_top - round(unit * 0.05) - y - summary_block
    portrait = height > width
    fitted = fit(text.title, SC_BOLD, right - margin, title_box_height,
                 max_size=round(unit * (0.085 if portrait else 0.1)), min_size=max(12, round(unit * 0.045)),
                 max_lines=5 if portrait else 3, line_spacing=1.25)
    layout.title_size, layout.truncated = fitted.size, fitted.truncated
    title_font = font(SC_BOLD, fitted.size)
    for line in fitted.lines:
        draw.text((margin, y), line, font=title_font, fill=WHITE)
        layout.text_boxes.append(draw.textbbox((margin, y), line, font=title_font))
        y += fitted.line_height

    if text.summary:
        y += round(unit * 0.04)
        room = footer_top - round(unit * 0.03) - y
        summary = fit(text.summary, SC_REGULAR, right - margin, room, max_size=summary_font_size,
                      min_size=summary_font_size, max_lines=2, line_spacing=1.45)
        summary_font = font(SC_REGULAR, summary.size)
        for line in summary.lines if room >= summary.line_height else []:
            draw.text((margin, y), line, font=summary_font, fill=SOFT_WHITE)
            layout.text_boxes.append(draw.textbbox((margin, y), line, font=summary_font))
            y += summary.line_height

    if text.footer:
        footer = fit(text.footer, SC_REGULAR, width - 2 * margin, height - footer_top,
                     max_size=footer_font.size, min_size=footer_font.size, max_lines=1)
        draw.text((margin, footer_top), footer.lines[0], font=footer_font, fill=SOFT_WHITE)
        layout.text_boxes.append(draw.textbbox((margin, footer_top), footer.lines[0], font=footer_font))
    return image, layout

"""Pictures for WeChat: images it accepts (JPEG/PNG under 1 MB), the cover, and the body's images uploaded.

Kept apart from the HTML: `wechat_html` only asks for a URL per image source; which file that is, how it is
shrunk and where it goes up is decided here.
"""

from __future__ import annotations

import io
import logging
import posixpath
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import unquote

from PIL import Image, ImageDraw, ImageFont

from publishers.base import Release
from publishers.wechat.client import WeChatClient, WeChatMediaError
from publishers.wechat.formatting import is_external

__all__ = [
    "CJK_FONTS", "COVER_NAMES", "COVER_SIZE", "IMAGE_LIMIT", "IMAGE_SUFFIXES", "MAX_WIDTH", "BodyImages",
    "choose_cover", "local_path", "markdown_images", "plain_cover", "prepare_image"
]
log = logging.getLogger(__name__)

IMAGE_LIMIT = 1024 * 1024 - 1  # media/uploadimg: JPG/PNG under 1 MB
MAX_WIDTH = 1280  # WeChat shows articles ~680 px wide; wider only costs bytes
COVER_SIZE = (900, 383)
COVER_NAMES = ("cover.jpg", "cover.jpeg", "cover.png", "cover.webp")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
CJK_FONTS = ("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc", "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")


def prepare_image(data: bytes, *, limit: int = IMAGE_LIMIT) -> tuple[bytes, str, str]:
    """An image WeChat accepts: JPEG or PNG under `limit` bytes (WebP, GIF, BMP converted) -> (bytes, ext, mime)."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, Image.DecompressionBombError) as exc:
        raise WeChatMediaError(f"图片无法读取（{exc}），请换一张 JPG/PNG 图片") from exc
    if image.format in ("JPEG", "PNG") and len(data) <= limit and image.width <= MAX_WIDTH:
        return data, ("jpg" if image.format == "JPEG" else "png"), Image.MIME[image.format]
    if image.width > MAX_WIDTH:
        image = image.resize((MAX_WIDTH, round(image.height * MAX_WIDTH / image.width)), Image.Resampling.LANCZOS)
    if image.format == "PNG" and image.mode in ("RGBA", "LA", "P"):
        out = io.BytesIO()
        image.save(out, "PNG", optimize=True)
        if out.tell() <= limit:
            return out.getvalue(), "png", "image/png"
    image = image.convert("RGB")  # JPEG from here on: transparency goes, size comes down
    for quality in (88, 80, 70, 60, 50):
        out = io.BytesIO()
        image.save(out, "JPEG", quality=quality, optimize=True, progressive=True)
        if out.tell() <= limit:
            return out.getvalue(), "jpg", "image/jpeg"
        image = image.resize((int(image.width * 0.8), int(image.height * 0.8)), Image.Resampling.LANCZOS)
    raise WeChatMediaError("图片压缩后仍超过 1 MB，请换一张较小的图片")


def plain_cover(title: str, center: str = "") -> bytes:
    """A plain 900×383 cover (title on a calm colour) for articles without any picture."""
    image = Image.new("RGB", COVER_SIZE, (176, 42, 48))
    draw = ImageDraw.Draw(image)
    font_path = next((p for p in CJK_FONTS if Path(p).exists()), None)
    if font_path:
        font = ImageFont.truetype(font_path, 44)
        small = ImageFont.truetype(font_path, 24)
        lines = [title[i:i + 16] for i in range(0, min(len(title), 32), 16)]
        for row, line in enumerate(lines):
            draw.text((60, 120 + row * 64), line, font=font, fill=(255, 255, 255))
        if center:
            draw.text((60, 300), center, font=small, fill=(255, 225, 225))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=88)
    return out.getvalue()


def markdown_images(body: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", body)


def local_path(src: str) -> str:
    """An image source as the drop-relative path it names (no query, fragment, `./` or leading `/`)."""
    return posixpath.normpath(unquote(src.split("#")[0].split("?")[0])).lstrip("/").removeprefix("./")


def choose_cover(release: Release, center_name: str) -> tuple[bytes, str]:
    """The 900×383 rendition, else the drop's cover, else its first image, else a plain generated one."""
    rendition = release.renditions.get("cover_900x383")
    if rendition:
        return release.blob_path(str(rendition["sha256"])).read_bytes(), "cover_900x383"
    for name in COVER_NAMES:
        if name in release.files:
            return release.file_path(name).read_bytes(), name
    referenced = [local_path(s) for s in markdown_images(release.body) if not is_external(s)]
    images = [p for p in referenced if p in release.files]
    images += sorted(p for p in release.files if p.lower().endswith(IMAGE_SUFFIXES))
    if images:
        return release.file_path(images[0]).read_bytes(), images[0]
    return plain_cover(release.meta.title, center_name), "generated"


class BodyImages:
    """`wechat_html`'s `image_url` for one release: each of the drop's images goes up once with media/uploadimg
    and is shown by its mmbiz URL; external images and ones not in the drop are left out (WeChat strips them)."""

    def __init__(self, client: WeChatClient, release: Release, *, known: Mapping[str, str] | None = None,
                 on_upload: Callable[[dict[str, str]], None] | None = None) -> None:
        self.client = client
        self.release = release
        # drop-relative path -> mmbiz URL; `known` holds what an interrupted attempt uploaded already
        self.uploaded: dict[str, str] = dict(known or {})
        self.on_upload = on_upload  # told after each upload (the channel writes it ahead)

    def __call__(self, src: str) -> str:
        path = local_path(src)
        if is_external(src) or path not in self.release.files:
            log.warning("wechat: leaving out image %s of %s (external or not in the drop)", src,
                        self.release.meta.id)
            return ""
        if path not in self.uploaded:
            data, ext, mime = prepare_image(self.release.file_path(path).read_bytes())
            self.uploaded[path] = self.client.upload_image(data, f"{Path(path).stem}.{ext}", mime)
            if self.on_upload is not None:
                self.on_upload(dict(self.uploaded))
        return self.uploaded[path]

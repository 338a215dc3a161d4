"""Safe image loading and the plain image renditions (covers and crops).

Every input goes through `open_image`: size checked before decoding (decompression bombs), EXIF
orientation applied, huge images downscaled early, any mode (CMYK, palette, alpha, WebP) made RGB.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from rongmei.core.media_settings import MediaSettings
from rongmei.renditions.errors import MediaError

__all__ = ["JPEG_QUALITY", "crop_to", "open_image", "save_jpeg", "save_png", "to_rgb"]

JPEG_QUALITY = 86


def open_image(path: Path, config: MediaSettings | None = None) -> Image.Image:
    """Open, check and normalise an image to RGB; raises MediaError with the reason in Chinese."""
    config = config or MediaSettings()
    name = path.name
    try:
        with warnings.catch_warnings():
            # We check the pixel count ourselves below with our own limit and message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
            width, height = image.size
            if width * height > config.max_image_pixels:
                image.close()
                raise MediaError(
                    f"图片 {name} 有 {width}×{height}（{width * height // 1_000_000} 百万）像素，超过上限 {config.max_image_pixels // 1_000_000} 百万像素，"
                    "可能是恶意构造的“解压炸弹”文件。"
                )
            if image.format == "JPEG":
                # Decode a JPEG at a reduced scale straight away: far less memory and time for 50 MP photos.
                image.draft("RGB", (config.max_working_side, config.max_working_side))
            image.load()
    except MediaError:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow refuses extreme sizes inside open(), before our own check: same message either way.
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        count = f" {int(pixels[1]) // 1_000_000} 百万" if pixels else "极多"
        raise MediaError(
            f"图片 {name} 有{count}像素，超过上限 {config.max_image_pixels // 1_000_000} 百万像素，"
            "可能是恶意构造的“解压炸弹”文件。"
        ) from exc
    except UnidentifiedImageError as exc:
        hint = "（HEIC 等格式请先在手机或电脑上导出为 JPG）" if path.suffix.lower() in {".heic", ".heif"} else ""
        raise MediaError(f"图片 {name} 无法识别，可能已损坏或不是图片文件{hint}。") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise MediaError(f"图片 {name} 已损坏或不完整（{exc}）。") from exc
    image = ImageOps.exif_transpose(image) or image
    image = to_rgb(image)
    if max(image.size) > config.max_working_side:
        image.thumbnail((config.max_working_side, config.max_working_side), Image.Resampling.LANCZOS)
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB on white: transparent PNG/WebP logos and palette images must not turn black."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def crop_to(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Fill `size` exactly, cropping the overflow; a little above centre, where faces and subjects sit."""
    return ImageOps.fit(image, size, Image.Resampling.LANCZOS, centering=(0.5, 0.42))


def save_jpeg(image: Image.Image, path: Path, quality: int = JPEG_QUALITY) -> Path:
    # No EXIF and fixed encoder options: the same input always gives the same bytes (cache and hashes).
    image.convert("RGB").save(path, "JPEG", quality=quality, optimize=True, progressive=True)
    return path


def save_png(image: Image.Image, path: Path) -> Path:
    image.save(path, "PNG", optimize=False, compress_level=6)
    return path

"""Covers, headline cards and bilingual Mongolian cards: rendered for real and checked in pixels."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageChops

from rongmei.core.media_settings import MediaSettings
from rongmei.core.model import ItemMeta
from rongmei.core.settings import Settings
from rongmei.renditions import MediaError, media_problems, produce_renditions
from rongmei.renditions.cards import CardText, render_card
from rongmei.renditions.fonts import SC_BOLD, font
from rongmei.renditions.images import open_image
from rongmei.renditions.mongolian import draw_vertical, isolated_width, shaped_width
from rongmei.renditions.textlayout import NO_LINE_END, NO_LINE_START, wrap
from rongmei.storage.store import Store
from tests.support.media import make_decompression_bomb, make_image

LONG_TITLE = ("关于做好2026年冬季森林草原防火工作的紧急通知：全旗各苏木镇、嘎查村要在11月26日前完成12.5万亩重点区域巡查，"
              "覆盖率达98.3%以上，确保不发生重大火情，同时做好“三北”防护林（第二期）管护工作并及时上报。") * 2
MONGOLIAN = "ᠠᠷᠠᠳ ᠤᠨ ᠰᠠᠶᠢᠨ ᠦᠢᠯᠡᠴᠢᠯᠡᠭᠡ ᠶᠢᠨ ᠲᠥᠪ ᠦᠨ ᠮᠡᠳᠡᠭᠡ ᠮᠣᠩᠭᠣᠯ ᠪᠢᠴᠢᠭ"


def test_line_breaking_keeps_figures_whole_and_follows_kinsoku() -> None:
    face = font(SC_BOLD, 48)
    for width in (300, 420, 555, 700):
        lines = wrap(LONG_TITLE, face, width)
        assert all(face.getlength(line) <= width for line in lines)
        assert not any(line[0] in NO_LINE_START for line in lines[1:])
        assert not any(line[-1] in NO_LINE_END for line in lines)
        joined = "\n".join(lines)
        for figure in ("12.5万", "98.3%", "2026年", "11月", "26日"):
            assert figure in joined, f"{figure} broken across lines at width {width}: {lines}"


@pytest.mark.parametrize("size", [(1920, 1080), (1080, 1920), (1200, 630), (900, 383)])
def test_long_headline_stays_inside_the_card(size: tuple[int, int]) -> None:
    text = CardText(title=LONG_TITLE, summary=LONG_TITLE, label="紧急通知", footer="示例旗融媒体中心 · 2026年11月26日",
                    priority="emergency")
    card, layout = render_card(size, text)
    empty, _ = render_card(size, CardText(title=""))
    ink = ImageChops.difference(card, empty).convert("L").point(lambda v: 255 if v > 40 else 0).getbbox()
    assert ink is not None
    margin = round(min(size) * 0.09) - round(min(size) * 0.012) - 2  # label box padding may sit in the margin
    assert ink[0] >= margin and ink[1] >= margin, (ink, size)
    assert ink[2] <= size[0] - margin and ink[3] <= size[1] - margin // 2, (ink, size)
    assert layout.truncated  # the headline is far too long for any card: cut with an ellipsis, not overflowed
    assert all(box[2] <= size[0] and box[3] <= size[1] for box in layout.text_boxes)


def test_exif_orientation_is_honoured(tmp_path: Path) -> None:
    # Stored landscape with the red half on the left; orientation 6 means "turn 90° clockwise to view".
    path = make_image(tmp_path / "phone.jpg", (800, 600), exif_orientation=6)
    image = open_image(path)
    assert image.size == (600, 800)
    red, blue = image.getpixel((300, 100)), image.getpixel((300, 700))
    assert red[0] > 180 and red[2] < 80, red
    assert blue[2] > 150 and blue[0] < 100, blue


def test_huge_images_are_downscaled_first(tmp_path: Path) -> None:
    path = make_image(tmp_path / "big.png", (2400, 1200))
    assert open_image(path, MediaSettings(max_working_side=1000)).size == (1000, 500)


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    bomb = make_decompression_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 2000
    problems = media_problems(bomb, "image", Settings(data_dir=tmp_path))
    assert [p.code for p in problems] == ["image.bomb"]
    assert problems[0].blocking and "900 百万像素" in problems[0].message and "解压炸弹" in problems[0].message
    assert "pixels" not in problems[0].message  # Pillow's English text does not reach editors
    # Below Pillow's own hard limit, our configured limit refuses it with the exact size.
    medium = make_decompression_bomb(tmp_path / "medium.png", side=10000)
    problems = media_problems(medium, "image", Settings(data_dir=tmp_path))
    assert [p.code for p in problems] == ["image.bomb"] and "10000×10000" in problems[0].message
    with pytest.raises(MediaError, match="像素"):
        open_image(bomb)


def test_corrupt_and_truncated_images_are_refused_in_chinese(tmp_path: Path) -> None:
    good = make_image(tmp_path / "good.jpg", (640, 480)).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(good[: len(good) // 3])
    (tmp_path / "junk.png").write_bytes(b"this is not a picture at all")
    for name in ("cut.jpg", "junk.png"):
        problems = media_problems(tmp_path / name, "image", Settings(data_dir=tmp_path))
        assert len(problems) == 1 and problems[0].blocking and problems[0].code == "image.broken"
        assert name in problems[0].message and ("损坏" in problems[0].message or "无法识别" in problems[0].message)
    assert media_problems(tmp_path / "good.jpg", "image", Settings(data_dir=tmp_path)) == []


def test_mongolian_is_shaped_joined_and_set_in_columns_inside_the_box() -> None:
    word = "ᠮᠣᠩᠭᠣᠯ"
    assert abs(shaped_width(word, 60) - isolated_width(word, 60)) > 20  # joined forms, not isolated letters
    canvas = Image.new("RGB", (700, 500), (0, 0, 0))
    box = (100, 50, 600, 450)
    columns = draw_vertical(canvas, " ".join([MONGOLIAN] * 6), box, size=40)
    assert len(columns) >= 3
    assert [c[0] for c in columns] == sorted(c[0] for c in columns)  # columns run left to right
    ink = canvas.getbbox()
    assert ink is not None and box[0] <= ink[0] and box[1] <= ink[1] and ink[2] <= box[2] and ink[3] <= box[3]
    for left, top, right, bottom in columns:
        assert bottom - top > 3 * (right - left)  # tall, narrow columns: the text was turned upright


def _put(store: Store, tmp_path: Path, rel: str, path: Path) -> dict[str, dict[str, object]]:
    sha, size = store.put_file(path)
    return {rel: {"sha256": sha, "bytes": size}}


def test_pictures_become_covers_cards_and_bilingual_card(tmp_path: Path, settings: Settings, store: Store) -> None:
    store.create_schema()
    webp = make_image(tmp_path / "photo.webp", (1000, 700), fmt="WEBP")
    files = _put(store, tmp_path, "images/photo.webp", webp)
    meta = ItemMeta(id="notice-1", title="关于冬季防火的通知", author="应急局", kind="notice", summary="严禁野外用火。",
                    language="zh+mn", title_mn=MONGOLIAN, summary_mn=MONGOLIAN)
    manifest = produce_renditions(meta=meta, body="正文", files=files, blob_path=store.blob_path,
                                  put_file=store.put_file, settings=settings,
                                  channels=["web", "wechat", "screens"], work_dir=tmp_path / "work")
    expected = {"cover_900x383": (900, 383), "cover_1x1": (600, 600), "share_image": (1200, 630),
                "screen_card": (1920, 1080), "screen_card_mn": (1920, 1080)}
    assert set(manifest) == set(expected)
    for key, size in expected.items():
        with Image.open(store.blob_path(manifest[key]["sha256"])) as image:
            assert image.format == "JPEG" and image.size == size, key
        assert manifest[key]["mime"] == "image/jpeg" and manifest[key]["bytes"] > 1000
    # The bilingual card carries the Mongolian columns on its right third; the Chinese card does not.
    with Image.open(store.blob_path(manifest["screen_card"]["sha256"])) as zh, \
            Image.open(store.blob_path(manifest["screen_card_mn"]["sha256"])) as mn:
        right = (1320, 100, 1820, 980)
        diff = ImageChops.difference(zh.crop(right), mn.crop(right)).convert("L").point(lambda v: 255 if v > 60 else 0)
        assert diff.getbbox() is not None

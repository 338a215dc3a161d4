"""Rebuild the vendored fonts from Debian's Noto packages (fonts-noto-cjk, fonts-noto-core).

Noto Sans CJK ships as a TrueType collection whose face 2 is Simplified Chinese (SC); Pillow and libass
need a standalone file, and the full face is ~16 MB, so we keep the SC face subset to GB2312 plus the
punctuation, Latin and symbols news copy uses. Run: `.venv/bin/python assets/fonts/build_fonts.py`.
All fonts are under the SIL Open Font License 1.1 (OFL.txt).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from fontTools.subset import Options, Subsetter
from fontTools.ttLib import TTCollection

HERE = Path(__file__).resolve().parent
CJK = Path("/usr/share/fonts/opentype/noto")
SC_FACE = 2  # face order in NotoSansCJK-*.ttc: JP, KR, SC, TC, HK


def gb2312_characters() -> set[str]:
    chars = set()
    for high in range(0xA1, 0xF8):
        for low in range(0xA1, 0xFF):
            try:
                chars.add(bytes([high, low]).decode("gb2312"))
            except UnicodeDecodeError:
                continue
    return chars


def wanted_codepoints() -> set[int]:
    points = {ord(c) for c in gb2312_characters()}
    ranges = [
        (0x20, 0x7E), (0xA0, 0x17F),  # ASCII, Latin-1, Latin Extended-A (pinyin tone marks)
        (0x01CD, 0x01DC),  # pinyin with caron
        (0x2000, 0x206F), (0x2100, 0x218F), (0x2190, 0x21FF),  # punctuation, letterlike, arrows
        (0x2460, 0x24FF), (0x25A0, 0x25FF), (0x2600, 0x26FF),  # enclosed numbers, shapes, symbols
        (0x3000, 0x303F), (0x3200, 0x33FF),  # CJK punctuation, enclosed CJK, units (㎡ ㎏)
        (0xFE10, 0xFE1F), (0xFE30, 0xFE4F), (0xFF00, 0xFFEF),  # vertical forms, fullwidth forms
    ]
    for start, end in ranges:
        points.update(range(start, end + 1))
    # Characters of local place names and common words outside GB2312 (e.g. 旗 is in it, 嘎 too;
    # these are not): keep this list short and add to it when an editor meets a missing glyph.
    points.update(ord(c) for c in "堃喆昇珺玥炜晧淏赟镕")
    return points


def build(weight: str) -> Path:
    collection = TTCollection(str(CJK / f"NotoSansCJK-{weight}.ttc"))
    font = collection.fonts[SC_FACE]
    options = Options()
    options.layout_features = ["*"]  # keep vert/vrt2, kern, locl for punctuation variants
    options.name_IDs = ["*"]
    options.name_languages = ["*"]
    options.notdef_outline = True
    subsetter = Subsetter(options)
    subsetter.populate(unicodes=wanted_codepoints())
    subsetter.subset(font)
    target = HERE / f"NotoSansSC-{weight}.otf"
    font.save(str(target))
    return target


if __name__ == "__main__":
    for weight in ("Regular", "Bold"):
        path = build(weight)
        print(path.name, path.stat().st_size)
    shutil.copy("/usr/share/fonts/truetype/noto/NotoSansMongolian-Regular.ttf", HERE)

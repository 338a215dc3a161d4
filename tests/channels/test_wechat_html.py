"""WeChat-flavoured HTML from tricky Markdown (issue 4): pure functions, no network."""

from __future__ import annotations

import io
import os
import re
import xml.etree.ElementTree as ET

from PIL import Image

from publishers.wechat.checks import wechat_checks
from publishers.wechat.formatting import link_footnotes, make_digest, wechat_html
from publishers.wechat.images import prepare_image
from rongmei.core.model import ItemMeta, Severity

UPLOADED = "http://mmbiz.qpic.cn/mmbiz_jpg/abc/0"


def render(text: str, **kwargs: str) -> str:
    return wechat_html(text, image_url=lambda src: "" if src.startswith("http") else f"{UPLOADED}?{src}", **kwargs)


def assert_wechat_safe(html: str) -> None:
    tags = re.findall(r"<([a-zA-Z][a-zA-Z0-9]*)([^>]*)>", html)  # real tags; escaped text cannot match
    assert tags and not {name for name, _ in tags} & {"style", "script", "div", "iframe"}
    assert not [attrs for _, attrs in tags if re.search(r"\b(class|id)=", attrs)]
    for src in re.findall(r'<img[^>]*src="([^"]+)"', html):
        assert src.startswith(UPLOADED)


def test_nested_lists_keep_their_structure_without_whitespace_between_tags():
    html = render("- 第一项\n    - 子项甲\n    - 子项乙\n        1. 更深\n- 第二项\n\n1. 一\n2. 二\n")
    assert_wechat_safe(html)
    assert re.search(r"<li[^>]*><section[^>]*>第一项</section><ul[^>]*><li[^>]*><section[^>]*>子项甲</section></li>", html)
    assert "<ol" in html and "更深" in html and "list-style-type: circle" in html
    assert not re.search(r">\s+<", html)  # the editor would turn whitespace into empty bullets


def test_tables_scroll_inside_a_section_with_inline_borders():
    html = render("| 作物 | 亩产（公斤） |\n|---|---:|\n| 玉米 | 780 |\n| 大豆 | 210 |\n")
    assert_wechat_safe(html)
    assert re.search(r'<section style="[^"]*overflow-x: auto[^"]*"><table', html)
    assert html.count("<td") == 4 and "border: 1px solid" in html


def test_code_blocks_keep_line_breaks_and_indentation():
    html = render("```python\ndef 收成(亩):\n    return 亩 * 780  # 公斤\n```\n")
    assert_wechat_safe(html)
    code = re.search(r"<pre[^>]*><code[^>]*>(.*?)</code></pre>", html).group(1)
    assert code == "def&nbsp;收成(亩):<br>&nbsp;&nbsp;&nbsp;&nbsp;return&nbsp;亩&nbsp;*&nbsp;780&nbsp;&nbsp;#&nbsp;公斤"


def test_links_become_numbered_notes_except_wechat_ones_and_fragments():
    html = render("见[农业农村部](https://www.moa.gov.cn/)、[上一期](https://mp.weixin.qq.com/s/abc)、"
                  "[下文](#tail)和[数据][^src]。\n\n[^src]: 来自[统计局](https://stats.example.cn)。\n")
    assert_wechat_safe(html)
    assert '<a href="https://mp.weixin.qq.com/s/abc"' in html and html.count("<a ") == 1
    assert "农业农村部<sup" in html and ">[1]</sup>" in html and "下文和" in html
    assert "[1] 农业农村部：https://www.moa.gov.cn/" in html
    assert "[2] 来自统计局（https://stats.example.cn）。" in html
    assert "#tail" not in html and "fnref" not in html and "↩" not in html


def test_repeated_footnote_reference_shares_one_number():
    html = render("甲[^a]，乙[^a]，丙[^b]。\n\n[^a]: 注一\n[^b]: 注二\n")
    assert html.count(">[1]</sup>") == 2 and ">[2]</sup>" in html and "[2] 注二" in html


def test_chinese_punctuation_and_emphasis_survive_untouched():
    text = "“今年雨水好，**收成比去年强多了**！”王建国说——产量达**12.5万吨**，同比增长8.3%。（完）"
    html = render(text)
    assert_wechat_safe(html)
    plain = re.sub(r"<[^>]+>", "", html)
    assert plain == text.replace("**", "")
    assert "<strong" in html and "&#" not in html and "\\u" not in html


def test_images_use_the_uploaded_url_external_ones_are_left_out_and_captions_come_from_alt():
    html = render("![巴彦镇的玉米地](images/field.jpg)\n\n![外链](https://evil.example/x.png)\n")
    assert_wechat_safe(html)
    assert f'src="{UPLOADED}?images/field.jpg"' in html and "evil.example" not in html
    assert re.search(r"<p[^>]*>巴彦镇的玉米地</p>", html)


def test_raw_html_in_the_drop_is_shown_as_text_never_executed():
    html = render('<script>alert(1)</script>\n\n<p class="x" style="color:red">段落</p>\n\n<img src="http://a/b.png">\n')
    assert_wechat_safe(html)
    assert "&lt;script&gt;" in html and "<img" not in html and "<script" not in html
    warnings = wechat_checks(ItemMeta(id="x", title="t", author="a"), "<b>粗</b>")
    assert [c.code for c in warnings] == ["wechat.raw_html"]


def test_reprint_source_is_named_first():
    html = render("正文。", source_line="转载自：新华社")
    assert re.match(r'<section[^>]*><section[^>]*>转载自：新华社</section><p', html)


def test_link_footnotes_on_a_bare_tree():
    root = ET.fromstring('<div><p>看<a href="https://a.cn">这里</a>和<a href="https://b.cn">https://b.cn</a></p></div>')
    notes: list[str] = []
    link_footnotes(root, notes)
    assert notes == ["这里：https://a.cn", "https://b.cn"]
    assert ET.tostring(root, encoding="unicode") == "<div><p>看这里<sup>[1]</sup>和https://b.cn<sup>[2]</sup></p></div>"


def test_digest_takes_the_summary_or_whole_first_sentences():
    assert make_digest("今年秋粮丰收。", "正文") == "今年秋粮丰收。"
    body = "## 小标题\n\n" + "第一句话说明情况。" * 20 + "\n\n后文。"
    assert make_digest("", body) == "第一句话说明情况。" * 13  # 117 characters: a 14th would pass 120
    assert make_digest("", "没有标点" * 50).endswith("…") and len(make_digest("", "没有标点" * 50)) == 120


def test_prepare_image_converts_webp_and_shrinks_big_images():
    webp = io.BytesIO()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(webp, "WEBP")
    data, ext, mime = prepare_image(webp.getvalue())
    assert (ext, mime) == ("jpg", "image/jpeg") and data.startswith(b"\xff\xd8")
    noisy = Image.frombytes("RGB", (1400, 1000), os.urandom(1400 * 1000 * 3))
    big = io.BytesIO()
    noisy.save(big, "PNG")
    assert len(big.getvalue()) > 1024 * 1024
    data, ext, _ = prepare_image(big.getvalue())
    assert len(data) < 1024 * 1024 and Image.open(io.BytesIO(data)).width <= 1280


def test_checks_block_long_titles_and_missing_images_and_warn_on_external_ones():
    meta = ItemMeta(id="x", title="标" * 33, author="张晓梅", summary="摘" * 130)
    body = "![a](images/missing.jpg)\n\n![b](https://x.example/b.png)\n"
    found = {c.code: c.severity for c in wechat_checks(meta, body, ["images/field.jpg"])}
    assert found == {"wechat.title_too_long": Severity.blocking, "wechat.summary_too_long": Severity.warning,
                     "wechat.missing_image": Severity.blocking, "wechat.external_image": Severity.warning}


def test_loose_list_items_carry_no_paragraph_margins():
    html = render("- 第一段\n\n    第二段\n\n- 第二项\n")
    assert_wechat_safe(html)
    items = re.findall(r"<li[^>]*>(.*?)</li>", html)
    assert len(items) == 2 and "<p" not in "".join(items) and "第二段" in items[0]

"""Text normalisation for Mandarin speech: figures read the Chinese way."""

from __future__ import annotations

import pytest

from rongmei.renditions.textnorm import cardinal, normalise
from rongmei.renditions.tts import spoken_text


@pytest.mark.parametrize(("number", "spoken"), [
    (0, "零"), (10, "十"), (15, "十五"), (105, "一百零五"), (1005, "一千零五"), (1100, "一千一百"),
    (12345, "一万二千三百四十五"), (120000, "十二万"), (100000000, "一亿"), (20000001, "二千万零一"),
])
def test_cardinal_numbers(number: int, spoken: str) -> None:
    assert cardinal(number) == spoken


@pytest.mark.parametrize(("text", "spoken"), [
    ("2026年11月26日", "二零二六年十一月二十六日"),
    ("2026-11-26", "二零二六年十一月二十六日"),
    ("同比增长8.3%", "同比增长百分之八点三"),
    ("达12.5万吨", "达十二点五万吨"),
    ("下降-0.5%", "下降负百分之零点五"),
    ("气温-5℃", "气温零下五摄氏度"),
    ("18:30开会", "十八点三十分开会"),
    ("07:05出发", "七点零五分出发"),
    ("有2个村", "有两个村"),
    ("第3期", "第三期"),
    ("3-5天", "三到五天"),
    ("1,234元", "一千二百三十四元"),
    ("拨打13912345678", "拨打一三九一二三四五六七八"),
    ("占地200㎡，时速60km/h", "占地二百平方米，时速六十公里每小时"),
])
def test_figures_are_spelled_out(text: str, spoken: str) -> None:
    assert normalise(text) == spoken


def test_spoken_text_drops_markdown_and_keeps_the_words() -> None:
    body = "## 小标题\n\n![现场](a.jpg)\n\n详见[公告](https://example.org)，**增长8.3%**。\n\n| a | b |\n|---|---|"
    text = spoken_text("粮食丰收", body)
    assert text.startswith("粮食丰收。")
    assert "小标题" in text and "公告" in text and "百分之八点三" in text
    for leftover in ("#", "!", "](", "**", "http", "a.jpg", "---"):
        assert leftover not in text, (leftover, text)

"""Text normalisation for Mandarin speech: digits, dates, times, percentages and units read the Chinese way.

espeak-ng reads Arabic numerals digit by digit or in English-like fashion; county news is full of
figures (2026年11月26日, 8.3%, 12.5万亩, 18:30, -5℃), so they are spelled out in characters first.
"""

from __future__ import annotations

import re

__all__ = [
    "BIG_UNITS", "DIGITS", "LIANG_BEFORE", "RULES", "SMALL_UNITS", "UNITS", "cardinal", "decimal",
    "digits_one_by_one", "normalise"
]

DIGITS = "零一二三四五六七八九"
SMALL_UNITS = ["", "十", "百", "千"]
BIG_UNITS = ["", "万", "亿", "万亿"]
UNITS = {
    "km/h": "公里每小时", "km²": "平方公里", "km2": "平方公里", "m²": "平方米", "m2": "平方米", "㎡": "平方米",
    "m³": "立方米", "m3": "立方米", "km": "公里", "kg": "公斤", "mm": "毫米", "cm": "厘米", "m": "米",
    "t": "吨", "g": "克", "kW": "千瓦", "kWh": "千瓦时", "MW": "兆瓦", "GB": "吉字节", "h": "小时", "min": "分钟",
    "℃": "摄氏度", "°C": "摄氏度", "°": "度", "L": "升", "ml": "毫升", "mL": "毫升",
}
# "2" reads 两 before these measure words (两个, 两名), but 二 in dates and ordinals (第二).
LIANG_BEFORE = set("个位名件次项台辆座张条头只户家所处天周年万亿千百")


def digits_one_by_one(text: str) -> str:
    return "".join(DIGITS[int(d)] for d in text if d.isdigit())


def _four(n: int) -> str:
    """0..9999 without the leading-zero rules of the bigger groups."""
    out = ""
    zero = False
    for power in range(3, -1, -1):
        digit = (n // 10**power) % 10
        if digit == 0:
            zero = bool(out)
            continue
        if zero:
            out += "零"
            zero = False
        out += DIGITS[digit] + SMALL_UNITS[power]
    return out


def cardinal(n: int) -> str:
    """Read an integer: 12345 → 一万二千三百四十五, 1005 → 一千零五, 10 → 十, 100000000 → 一亿."""
    if n == 0:
        return "零"
    if n < 0:
        return "负" + cardinal(-n)
    groups = []
    while n:
        groups.append(n % 10000)
        n //= 10000
    out = ""
    need_zero = False
    for index in range(len(groups) - 1, -1, -1):
        group = groups[index]
        if group == 0:
            need_zero = bool(out)
            continue
        if out and (need_zero or group < 1000):
            out += "零"
        out += _four(group) + BIG_UNITS[index]
        need_zero = False
    if out.startswith("一十"):
        out = out[1:]  # 十五, not 一十五
    return out


def decimal(text: str) -> str:
    whole, _, fraction = text.replace(",", "").partition(".")
    out = cardinal(int(whole or "0"))
    return out + ("点" + digits_one_by_one(fraction) if fraction else "")


def _date(match: re.Match[str]) -> str:
    year, month, day = match["y"], match["m"], match["d"]
    out = digits_one_by_one(year) + "年" if year else ""
    out += cardinal(int(month)) + "月" if month else ""
    out += cardinal(int(day)) + (match["suffix"] or "日") if day else ""
    return out


def _number_with_unit(match: re.Match[str]) -> str:
    sign, number, unit = match["sign"] or "", match["num"], match["unit"]
    spoken = decimal(number)
    prefix = ""
    if sign:
        prefix = "零下" if unit in ("℃", "°C") else "负"
    if unit in ("%", "％"):
        return prefix + "百分之" + spoken
    if unit == "‰":
        return prefix + "千分之" + spoken
    return prefix + spoken + UNITS[unit]


def _plain_number(match: re.Match[str]) -> str:
    number, after = match["num"], match["after"] or ""
    bare = number.replace(",", "")
    if "." not in bare and len(bare) >= 7 and "," not in number:
        return digits_one_by_one(bare) + after  # phone numbers, codes: digit by digit
    if bare == "2" and after[:1] in LIANG_BEFORE:
        return "两" + after
    return decimal(bare) + after


_UNIT_PATTERN = "|".join(re.escape(u) for u in sorted(UNITS, key=len, reverse=True))
RULES: list[tuple[re.Pattern[str], object]] = [
    # 2026-11-26, 2026/11/26, 2026年11月26日, 11月26日, 26号
    (re.compile(r"(?P<y>\d{4})[-/.](?P<m>\d{1,2})[-/.](?P<d>\d{1,2})(?P<suffix>)"), _date),
    (re.compile(r"(?:(?P<y>\d{4})年)?(?:(?P<m>\d{1,2})月)(?:(?P<d>\d{1,2})(?P<suffix>[日号]))?"), _date),
    (re.compile(r"(?P<y>\d{4})年(?P<m>)(?P<d>)(?P<suffix>)"), _date),
    (re.compile(r"(?P<y>)(?P<m>)(?P<d>\d{1,2})(?P<suffix>[日号])"), _date),
    # 18:30 → 十八点三十分, 07:05 → 七点零五分
    (re.compile(r"(?<!\d)(\d{1,2})[:：](\d{2})(?!\d)"),
     lambda m: cardinal(int(m[1])) + "点" + ("" if m[2] == "00" else
                                            ("零" if m[2][0] == "0" else "") + cardinal(int(m[2])) + "分")),
    # 3-5天, 3～5 → 三到五
    (re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)[~～\-—至](\d+(?:\.\d+)?)(?=[^\d])"),
     lambda m: decimal(m[1]) + "到" + decimal(m[2])),
    (re.compile(rf"(?P<sign>[-−])?(?P<num>\d[\d,]*(?:\.\d+)?)\s*(?P<unit>%|％|‰|{_UNIT_PATTERN})(?![A-Za-z])"),
     _number_with_unit),
    (re.compile(r"第(\d+)"), lambda m: "第" + cardinal(int(m[1]))),
    (re.compile(r"(?P<num>\d[\d,]*(?:\.\d+)?)(?P<after>.?)", re.S), _plain_number),
]


def normalise(text: str) -> str:
    """Spell out every figure in Chinese characters for a Mandarin speech engine."""
    for pattern, replace in RULES:
        text = pattern.sub(replace, text)  # type: ignore[arg-type]
    return text

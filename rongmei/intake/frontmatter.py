"""The editor's words about an item: front matter of a Markdown drop or a media drop's YAML sidecar, decoded,
parsed without YAML tricks and validated into `ItemMeta`, every problem told to the editor in Chinese.

What is found goes to a `Findings` (a `Bundle` is one): problems reject the drop, notes are warnings.
"""

from __future__ import annotations

from typing import Any, Protocol

import charset_normalizer
import frontmatter
import yaml
from pydantic import ValidationError

from publishers import load_publishers
from rongmei.core.model import ITEM_ID, ItemMeta
from rongmei.intake.drops import Limits
from rongmei.intake.names import ITEM_ID_CHARS, escape_name, name_bytes

__all__ = [
    "ALLOWED_VALUES_ZH", "FIELD_NAMES_ZH", "Findings", "allowed_values_zh", "decode_text", "parse_sidecar",
    "split_front_matter", "validate_meta"
]


class Findings(Protocol):
    """Where reading records what it found; `rongmei.intake.bundles.Bundle` is the one the ingest uses."""

    def problem(self, code: str, message: str, fix: str = "") -> None: ...

    def note(self, code: str, message: str, fix: str = "") -> None: ...


FIELD_NAMES_ZH = {
    "title": "标题（title）",
    "author": "作者（author）",
    "kind": "类型（kind）",
    "channels": "发布渠道（channels）",
    "priority": "优先级（priority）",
    "language": "语言（language）",
    "publish_at": "定时发布时间（publish_at）",
    "expires": "下线时间（expires）",
    "zones": "播出区域（zones）",
    "screens": "大屏分组（screens）",
    "tags": "标签（tags）",
    "id": "稿件编号（id）",
}
ALLOWED_VALUES_ZH = {
    "kind": "article、video、audio、notice",
    "priority": "normal、urgent、emergency",
    "language": "zh、mn、zh+mn",
}


def allowed_values_zh(field_name: str) -> str | None:
    """The values a field may take, as a field error's fix lists them; None for a field without a fixed set."""
    if field_name == "channels":
        # The installed channels, not a list of our own: a channel added as a plugin is as valid as a built-in.
        return "、".join(load_publishers().publishers) or None
    return ALLOWED_VALUES_ZH.get(field_name)


def decode_text(data: bytes, bundle: Findings, label: str) -> str | None:
    """UTF-8 (with or without BOM) as is; GBK/GB18030/Big5 from Windows editors converted, with a note."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    for encoding in ("gb18030",):  # a superset of GB2312 and GBK: the common case, decode strictly
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if _looks_like_text(text):
            bundle.note(
                "encoding.converted",
                f"{label} 不是 UTF-8 编码，已按 GB18030（GBK）自动转换。",
                "以后请在编辑器中选择“另存为 UTF-8”。",
            )
            return text
    best = charset_normalizer.from_bytes(data).best()
    if best is not None and best.encoding and _looks_like_text(str(best)):
        bundle.note(
            "encoding.converted",
            f"{label} 不是 UTF-8 编码，已按 {best.encoding} 自动转换。",
            "以后请在编辑器中选择“另存为 UTF-8”。",
        )
        return str(best)
    bundle.problem(
        "encoding.unknown",
        f"{label} 的文字编码无法识别（不是 UTF-8，也不是 GBK/GB18030）。",
        "请用记事本或 WPS 打开该文件，选择“另存为”，编码选 UTF-8 后重新放入。",
    )
    return None


def _looks_like_text(text: str) -> bool:
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\r\n\t")
    return controls == 0 and "\ufffd" not in text


class _AliasRefused(yaml.composer.ComposerError):
    """Raised for a YAML alias (`*name`): front matter never needs one, and aliases are what YAML bombs
    ("billion laughs") are built from."""


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 2 MB in under a second, not five


def _load_without_aliases(text: str) -> Any:
    # A first pass over the parser's events finds an alias before anything is built from it.
    for event in yaml.parse(text, Loader=_YAML_LOADER):
        if isinstance(event, yaml.AliasEvent):
            raise _AliasRefused(None, None, f"found alias *{event.anchor}", event.start_mark)
    return yaml.load(text, Loader=_YAML_LOADER)


def _parse_yaml(text: str, bundle: Findings, label: str, fix: str) -> tuple[bool, Any]:
    """(True, data), or (False, None) with the problem recorded."""
    try:
        return True, _load_without_aliases(text)
    except _AliasRefused:
        bundle.problem(
            "meta.yaml.alias",
            f"{label} 的稿件信息里有以 * 开头的值（YAML 引用），系统不接受这种写法。",
            "请把每一项的值直接写出来，不要用 & 和 * 引用；值本身以 * 开头时（如 *重要*），请给整个值加上引号。",
        )
    except RecursionError:
        bundle.problem("meta.yaml", f"{label} 的稿件信息嵌套层数太多。", "稿件信息只需要“键: 值”和简单的列表。")
    except yaml.YAMLError as exc:
        bundle.problem("meta.yaml", f"{label} 的格式有错误：{exc}", fix)
    return False, None


def parse_sidecar(text: str, bundle: Findings, label: str) -> dict[str, Any] | None:
    """The sidecar's fields; None when it could not be read (the problem is recorded)."""
    ok, data = _parse_yaml(text, bundle, label, "检查冒号后是否有空格、引号是否成对。")
    if not ok:
        return None
    if data is None:
        return {}
    if not isinstance(data, dict):
        bundle.problem("meta.yaml", f"{label} 应该是“键: 值”的列表。", "例如：title: 标题")
        return None
    return data


def split_front_matter(text: str, bundle: Findings, label: str) -> tuple[dict[str, Any] | None, str]:
    """(front matter, body); the front matter is None when it could not be read (the problem is recorded)."""
    if not text.lstrip().startswith("---"):
        bundle.problem(
            "meta.missing",
            f"{label} 开头没有稿件信息（front matter）。",
            "在文件第一行写 ---，接着写 title: 标题、author: 作者，再写一行 --- 后开始正文。",
        )
        return {}, text
    text = text.strip()
    try:
        _, fm, content = frontmatter.YAMLHandler.FM_BOUNDARY.split(text, 2)
    except ValueError:
        return {}, text  # no closing ---: no front matter, as python-frontmatter reads it
    ok, data = _parse_yaml(fm, bundle, label, "检查每行是否为“键: 值”（冒号后有空格），引号是否成对。")
    if not ok:
        return None, text
    return (dict(data) if isinstance(data, dict) else {}), content.strip()


def _shorten(value: Any, limit: int = 60) -> str:
    shown = escape_name(str(value))
    return shown if len(shown) <= limit else shown[:limit] + "…"


def validate_meta(raw: dict[str, Any], bundle: Findings, limits: Limits, *, id_from_name: bool = False) -> ItemMeta | None:
    item_id = str(raw.get("id", ""))
    if len(item_id) > ITEM_ID_CHARS or name_bytes(item_id) > limits.name_bytes:
        where = (
            "系统默认用稿件名作编号：请把稿件文件夹（或文件）名改短，或在稿件信息里加一行较短的 id，"
            if id_from_name
            else "请把 id 改短，"
        )
        bundle.problem(
            "meta.id.too_long",
            f"稿件编号（id）“{_shorten(item_id)}”太长：有 {len(item_id)} 个字符、{name_bytes(item_id)} 字节；"
            f"最多 {ITEM_ID_CHARS} 个字符且不超过 {limits.name_bytes} 字节（一个汉字占 3 字节，即最多约 "
            f"{min(ITEM_ID_CHARS, limits.name_bytes // 3)} 个汉字）。",
            where + "例如 id: 2026-xian-news-01。",
        )
    elif not ITEM_ID.match(item_id) or ".." in item_id:
        bundle.problem(
            "meta.id",
            f"稿件编号（id）“{_shorten(item_id)}”不合法：只能用字母、数字、汉字、-、_ 和 .，不能含 / 或 ..。",
            "删掉 id 这一行（系统会用文件夹名），或改成类似 2026-xian-news-01 的编号。",
        )
    try:
        meta = ItemMeta.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors():
            field_name = str(error["loc"][0]) if error["loc"] else "?"
            label = FIELD_NAMES_ZH.get(field_name, _shorten(field_name))
            if error["type"] == "missing":
                bundle.problem(
                    f"meta.{field_name}.missing",
                    f"缺少{label}。",
                    f"在开头的稿件信息里加一行 {field_name}: ……",
                )
            elif error["type"] == "extra_forbidden":
                bundle.problem(
                    f"meta.{_shorten(field_name, 40)}.unknown",
                    f"稿件信息里有无法识别的项目“{_shorten(field_name)}”。",
                    "检查拼写；可用的项目有 " + "、".join(ItemMeta.model_fields) + "。",
                )
            else:
                allowed = allowed_values_zh(field_name)
                fix = f"可选的值：{allowed}。" if allowed else "时间请写成 2026-11-26T08:00 这样的格式。"
                bundle.problem(
                    f"meta.{field_name}.invalid",
                    f"{label} 的值“{_shorten(error.get('input'))}”不正确。",
                    fix,
                )
        return None
    if not meta.title:
        bundle.problem("meta.title.missing", "缺少标题（title）。", "在开头的稿件信息里加一行 title: ……")
    if not meta.author:
        bundle.problem("meta.author.missing", "缺少作者（author）。", "在开头的稿件信息里加一行 author: ……")
    return None if bundle.problems else meta



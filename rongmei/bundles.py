"""Drops in the inbox, and reading one into a bundle (front matter, body, files).

A drop is one of (DESIGN.md):
- a folder `inbox/<name>/` with `index.md` and the item's files,
- a single Markdown file `inbox/<name>.md`,
- a lone video or audio file `inbox/<name>.mp4` with an optional `<name>.yaml` sidecar.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import charset_normalizer
import frontmatter
import yaml
from pydantic import ValidationError

from rongmei.model import ITEM_ID, CheckResult, ItemMeta, Kind, Severity

VIDEO_EXTENSIONS = {".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm"}
AUDIO_EXTENSIONS = {".mp3", ".m4a", ".aac", ".wav", ".flac", ".ogg", ".opus"}
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS | AUDIO_EXTENSIONS
SIDECAR_EXTENSIONS = (".yaml", ".yml")
# Names that copy tools and browsers give files they are still writing.
IN_PROGRESS = re.compile(r"(\.part|\.partial|\.crdownload|\.download|\.tmp|\.filepart|~)$|^~\$|^\.~lock", re.I)
IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini", "REJECTED.md", "REVIEW.md"}


@dataclass(frozen=True)
class Drop:
    """Something an editor put into the inbox, not yet read."""

    name: str
    path: Path  # the folder, the .md file, or the media file
    shape: str  # "folder" | "markdown" | "media"
    members: tuple[Path, ...]  # every path that belongs to the drop (moved together)

    def files(self) -> list[Path]:
        """All regular files and links inside the drop, sorted, hidden clutter left out."""
        if self.shape != "folder":
            return [m for m in self.members if m.name not in IGNORED_NAMES]
        found: list[Path] = []
        for root, dirs, names in os.walk(self.path, followlinks=False):
            dirs.sort()
            for name in sorted(names):
                if name in IGNORED_NAMES:
                    continue
                found.append(Path(root) / name)
            for name in dirs:
                if (Path(root) / name).is_symlink():
                    found.append(Path(root) / name)
        return found


def find_drops(inbox: Path) -> list[Drop]:
    """Every drop in the inbox, sorted by name. Hidden entries (work in progress of tools) are skipped."""
    if not inbox.is_dir():
        return []
    entries = sorted(p for p in inbox.iterdir() if not p.name.startswith("."))
    names = {p.name for p in entries}
    drops: list[Drop] = []
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            drops.append(Drop(entry.name, entry, "folder", (entry,)))
        elif entry.suffix.lower() == ".md":
            drops.append(Drop(entry.stem, entry, "markdown", (entry,)))
        elif entry.suffix.lower() in MEDIA_EXTENSIONS:
            members = [entry]
            members += [entry.with_suffix(ext) for ext in SIDECAR_EXTENSIONS if entry.stem + ext in names]
            drops.append(Drop(entry.stem, entry, "media", tuple(members)))
        elif entry.is_symlink() or entry.is_dir():
            drops.append(Drop(entry.name, entry, "folder", (entry,)))
    return drops


def is_settled(drop: Drop, now: float, settle_seconds: float) -> bool:
    """True once nothing in the drop has changed for `settle_seconds` and no file is still being copied."""
    newest = 0.0
    paths = [drop.path, *drop.files()] if drop.shape == "folder" else list(drop.members)
    for path in paths:
        if IN_PROGRESS.search(path.name):
            return False
        try:
            info = path.lstat()
        except FileNotFoundError:
            return False  # vanished while we looked: the copy is still in motion
        newest = max(newest, info.st_mtime)
        if path.is_dir() and not path.is_symlink():
            # A directory's mtime moves when files are added or renamed inside it.
            for root, dirs, _ in os.walk(path):
                for d in dirs:
                    newest = max(newest, (Path(root) / d).lstat().st_mtime)
    return now - newest >= settle_seconds


@dataclass
class Bundle:
    """A drop read and validated. `problems` are reasons to reject it; `notes` are warnings."""

    drop: Drop
    meta: ItemMeta | None = None
    body: str = ""
    raw_meta: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)  # drop-relative posix path -> file
    problems: list[CheckResult] = field(default_factory=list)
    notes: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.meta is not None and not self.problems

    def problem(self, code: str, message: str, fix: str = "") -> None:
        self.problems.append(CheckResult(code=code, severity=Severity.blocking, message=message, fix=fix))

    def note(self, code: str, message: str, fix: str = "") -> None:
        self.notes.append(CheckResult(code=code, severity=Severity.warning, message=message, fix=fix))


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
    "channels": "web、wechat、screens、loudspeakers",
    "priority": "normal、urgent、emergency",
    "language": "zh、mn、zh+mn",
}


def decode_text(data: bytes, bundle: Bundle, label: str) -> str | None:
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


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def collect_files(bundle: Bundle) -> None:
    drop = bundle.drop
    root = drop.path if drop.shape == "folder" else drop.path.parent
    for path in drop.files():
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            target = os.readlink(path)
            if drop.shape != "folder" or not _inside(path, drop.path):
                bundle.problem(
                    "path.symlink_outside",
                    f"文件 {rel} 是指向稿件文件夹之外（{target}）的快捷方式，出于安全原因不能接收。",
                    "请把真实文件复制进稿件文件夹，而不是放快捷方式。",
                )
                continue
            if not path.resolve().is_file():
                bundle.problem("path.symlink_broken", f"快捷方式 {rel} 指向的文件不存在。", "请放入真实文件。")
                continue
        bundle.files[rel] = path


def read_bundle(drop: Drop, *, max_file_bytes: int = 4 * 1024**3) -> Bundle:
    """Read a settled drop. Never raises for bad input: every problem is collected for REJECTED.md."""
    bundle = Bundle(drop=drop)
    if drop.path.is_symlink():
        bundle.problem(
            "path.symlink_outside",
            f"{drop.path.name} 是一个快捷方式（符号链接），不能作为稿件接收。",
            "请把真实的文件夹或文件放进 inbox。",
        )
        return bundle
    collect_files(bundle)
    for rel, path in bundle.files.items():
        size = path.stat().st_size
        if size > max_file_bytes:
            bundle.problem(
                "file.too_large",
                f"文件 {rel} 有 {size / 1024**3:.1f} GB，超过上限 {max_file_bytes / 1024**3:.1f} GB。",
                "请压缩或剪短后重新放入，或请技术人员调整 max_upload_bytes。",
            )

    raw: dict[str, Any] = {}
    body = ""
    if drop.shape == "media":
        sidecar = next((m for m in drop.members if m.suffix.lower() in SIDECAR_EXTENSIONS), None)
        if sidecar is not None:
            text = decode_text(sidecar.read_bytes(), bundle, sidecar.name)
            if text is not None:
                raw = _load_yaml(text, bundle, sidecar.name)
        media_kind = "video" if drop.path.suffix.lower() in VIDEO_EXTENSIONS else "audio"
        raw.setdefault("kind", media_kind)
        body = str(raw.pop("body", "") or "")
    else:
        index = drop.path / "index.md" if drop.shape == "folder" else drop.path
        if not index.is_file():
            bundle.problem(
                "bundle.no_index",
                f"稿件文件夹 {drop.name} 里没有 index.md。",
                "请在文件夹里放一个 index.md：开头用 --- 包住 title、author 等信息，下面写正文。",
            )
            return bundle
        text = decode_text(index.read_bytes(), bundle, index.name)
        if text is None:
            return bundle
        raw, body = _split_front_matter(text, bundle, index.name)

    if raw is None:
        return bundle
    raw.setdefault("id", drop.name)
    bundle.raw_meta = dict(raw)
    bundle.body = body
    bundle.meta = _validate_meta(raw, bundle)
    if bundle.meta is not None:
        _check_kind_has_media(bundle)
    return bundle


def _load_yaml(text: str, bundle: Bundle, label: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        bundle.problem("meta.yaml", f"{label} 的格式有错误：{exc}", "检查冒号后是否有空格、引号是否成对。")
        return {}
    if not isinstance(data, dict):
        bundle.problem("meta.yaml", f"{label} 应该是“键: 值”的列表。", "例如：title: 标题")
        return {}
    return data


def _split_front_matter(text: str, bundle: Bundle, label: str) -> tuple[dict[str, Any], str]:
    if not text.lstrip().startswith("---"):
        bundle.problem(
            "meta.missing",
            f"{label} 开头没有稿件信息（front matter）。",
            "在文件第一行写 ---，接着写 title: 标题、author: 作者，再写一行 --- 后开始正文。",
        )
        return {}, text
    try:
        post = frontmatter.loads(text)
    except yaml.YAMLError as exc:
        bundle.problem(
            "meta.yaml",
            f"{label} 开头的稿件信息格式有错误：{exc}",
            "检查每行是否为“键: 值”（冒号后有空格），引号是否成对。",
        )
        return {}, text
    return dict(post.metadata), post.content


def _validate_meta(raw: dict[str, Any], bundle: Bundle) -> ItemMeta | None:
    item_id = str(raw.get("id", ""))
    if not ITEM_ID.match(item_id) or ".." in item_id:
        bundle.problem(
            "meta.id",
            f"稿件编号（id）“{item_id}”不合法：只能用字母、数字、汉字、-、_ 和 .，不能含 / 或 ..。",
            "删掉 id 这一行（系统会用文件夹名），或改成类似 2026-xian-news-01 的编号。",
        )
    try:
        meta = ItemMeta.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors():
            field_name = str(error["loc"][0]) if error["loc"] else "?"
            label = FIELD_NAMES_ZH.get(field_name, field_name)
            if error["type"] == "missing":
                bundle.problem(
                    f"meta.{field_name}.missing",
                    f"缺少{label}。",
                    f"在开头的稿件信息里加一行 {field_name}: ……",
                )
            elif error["type"] == "extra_forbidden":
                bundle.problem(
                    f"meta.{field_name}.unknown",
                    f"稿件信息里有无法识别的项目“{field_name}”。",
                    "检查拼写；可用的项目有 " + "、".join(ItemMeta.model_fields) + "。",
                )
            else:
                allowed = ALLOWED_VALUES_ZH.get(field_name)
                fix = f"可选的值：{allowed}。" if allowed else "时间请写成 2026-11-26T08:00 这样的格式。"
                bundle.problem(
                    f"meta.{field_name}.invalid",
                    f"{label} 的值“{error.get('input')}”不正确。",
                    fix,
                )
        return None
    if not meta.title:
        bundle.problem("meta.title.missing", "缺少标题（title）。", "在开头的稿件信息里加一行 title: ……")
    if not meta.author:
        bundle.problem("meta.author.missing", "缺少作者（author）。", "在开头的稿件信息里加一行 author: ……")
    return None if bundle.problems else meta


def _check_kind_has_media(bundle: Bundle) -> None:
    assert bundle.meta is not None
    exts = {Path(rel).suffix.lower() for rel in bundle.files}
    if bundle.meta.kind is Kind.video and not exts & VIDEO_EXTENSIONS:
        bundle.problem("kind.video.no_file", "类型是视频（video），但稿件里没有视频文件。", "放入 video.mp4。")
    if bundle.meta.kind is Kind.audio and not exts & AUDIO_EXTENSIONS:
        bundle.problem("kind.audio.no_file", "类型是音频（audio），但稿件里没有音频文件。", "放入 audio.mp3。")

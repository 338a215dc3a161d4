"""Reading a settled drop into a `Bundle`: every file checked before it is read (the safe opening is
rongmei.intake.safe_open's), oversized Markdown and images refused, front matter or sidecar read
(rongmei.intake.frontmatter), and every reason to reject collected rather than raised, for REJECTED.md.

Links inside a folder drop that stay inside it are resolved first and then opened the same way as any file.
"""

from __future__ import annotations

import math
import os
import re
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from PIL import Image, UnidentifiedImageError

from rongmei.core.model import CheckResult, ItemMeta, Kind, Severity
from rongmei.intake.drops import (
    AUDIO_EXTENSIONS,
    IGNORED_NAMES,
    IMAGE_EXTENSIONS,
    SIDECAR_EXTENSIONS,
    VIDEO_EXTENSIONS,
    Drop,
    Limits,
)
from rongmei.intake.frontmatter import decode_text, parse_sidecar, split_front_matter, validate_meta
from rongmei.intake.names import DROP_NAME_CHARS, escape_name, unsafe_name
from rongmei.intake.safe_open import FileRef, UnsafeFile, file_identity, open_inside

__all__ = ["IMAGE_HEADER_ERRORS", "Bundle", "check_image_sizes", "collect_files", "read_bundle"]


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
    refs: dict[str, FileRef] = field(default_factory=dict)  # drop-relative posix path -> the file checked

    @property
    def ok(self) -> bool:
        return self.meta is not None and not self.problems

    def problem(self, code: str, message: str, fix: str = "") -> None:
        self.problems.append(CheckResult(code=code, severity=Severity.blocking, message=message, fix=fix))

    def note(self, code: str, message: str, fix: str = "") -> None:
        self.notes.append(CheckResult(code=code, severity=Severity.warning, message=message, fix=fix))

    def open(self, rel: str) -> BinaryIO:
        """One of the drop's files, opened the safe way, and the very file that was checked (raises UnsafeFile
        when it was replaced since): what gets stored is what was looked at."""
        ref = self.refs[rel]
        label = escape_name(rel)
        fd, info = open_inside(ref.inbox, ref.inner, label)
        if file_identity(info) != ref.identity:
            os.close(fd)
            raise UnsafeFile(
                "path.replaced",
                f"文件 {label} 在收稿过程中被改动或替换了。",
                "请等文件全部复制完成、不再改动后，再把稿件放入 inbox。",
            )
        return os.fdopen(fd, "rb")


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _meta_files(drop: Drop) -> set[str]:
    """The drop-relative names of the file the front matter comes from (index.md, the .md, the sidecar)."""
    if drop.shape == "folder":
        return {"index.md"}
    if drop.shape == "markdown":
        return {drop.path.name}
    return {m.name for m in drop.members if m.suffix.lower() in SIDECAR_EXTENSIONS}


def collect_files(bundle: Bundle, limits: Limits | None = None) -> None:
    """Check every file of the drop without reading it; those that may be read go into `files` and `refs`."""
    limits = limits or Limits()
    drop = bundle.drop
    inbox = drop.path.parent
    root = drop.path if drop.shape == "folder" else inbox
    real_inbox, real_drop = os.path.realpath(inbox), os.path.realpath(drop.path)
    meta_files = _meta_files(drop)
    for path in drop.files():
        rel = path.relative_to(root).as_posix()
        label = escape_name(rel)
        if unsafe_name(rel):
            bundle.problem(
                "path.control_chars",
                f"文件名 {label} 含有换行符或其他控制字符，不能接收。",
                "请重命名该文件，去掉名字里的换行、制表符等特殊字符后重新放入。",
            )
            continue
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            if rel in meta_files:
                bundle.problem(
                    "path.symlink_meta",
                    f"{label} 是一个快捷方式（符号链接），稿件信息必须放在真实文件里，系统没有读取它。",
                    f"请把真实的 {label} 文件放进来，而不是快捷方式。",
                )
                continue
            if path.name in IGNORED_NAMES:
                bundle.problem(
                    "path.symlink_reserved",
                    f"{label} 是一个快捷方式（符号链接）；这个文件名由系统使用，不能是快捷方式。",
                    f"请删掉 {label} 这个快捷方式后重新放入。",
                )
                continue
            target = escape_name(os.readlink(path))
            real = os.path.realpath(path)
            if drop.shape != "folder" or not _within(real, real_drop):
                bundle.problem(
                    "path.symlink_outside",
                    f"文件 {label} 是指向稿件文件夹之外（{target}）的快捷方式，出于安全原因不能接收。",
                    "请把真实文件复制进稿件文件夹，而不是放快捷方式。",
                )
                continue
            if not os.path.lexists(real):
                bundle.problem("path.symlink_broken", f"快捷方式 {label} 指向的文件不存在。", "请放入真实文件。")
                continue
            inner = os.path.relpath(real, real_inbox)
        elif stat.S_ISREG(info.st_mode):
            inner = os.path.relpath(path, inbox)
        else:
            bundle.problem(
                "path.not_a_file",
                f"{label} 不是普通文件（而是管道、设备等特殊文件），不能接收。",
                "请只放入普通的文件。",
            )
            continue
        try:
            fd, opened = open_inside(inbox, inner, label)
        except UnsafeFile as exc:
            bundle.problem(exc.code, exc.message, exc.fix)
            continue
        os.close(fd)
        if opened.st_size > limits.file_bytes:
            bundle.problem(
                "file.too_large",
                f"文件 {label} 有 {opened.st_size / 1024**3:.1f} GB，超过上限 {limits.file_bytes / 1024**3:.1f} GB。",
                "请压缩或剪短后重新放入，或请技术人员调整 max_upload_bytes。",
            )
            continue
        bundle.refs[rel] = FileRef(inbox, inner, file_identity(opened), opened.st_size)
        bundle.files[rel] = inbox / inner


def _size(n: int) -> str:
    if n >= 1024**2:
        return f"{n / 1024**2:.1f}".removesuffix(".0") + " MB"
    return f"{math.ceil(n / 1024)} KB"


def _read_meta_file(bundle: Bundle, rel: str, limits: Limits) -> bytes | None:
    """index.md, a single .md or a sidecar: its size is checked before a byte is read (a 50 MB Markdown file
    would tie up a worker), and at most the limit is read should it grow meanwhile."""
    label = escape_name(rel)
    size = bundle.refs[rel].size
    with bundle.open(rel) as source:
        data = source.read(limits.markdown_bytes + 1) if size <= limits.markdown_bytes else b""
    if size > limits.markdown_bytes or len(data) > limits.markdown_bytes:
        bundle.problem(
            "markdown.too_large",
            f"{label} 有 {_size(max(size, len(data)))}，超过文字稿件文件的上限 {_size(limits.markdown_bytes)}，"
            "系统没有读取它。",
            "Markdown 和说明文件里只放文字：图片、视频请作为单独的文件放进稿件文件夹，不要内嵌（如 base64 图片）；"
            "确实需要更大的文件，请技术人员调整 max_markdown_bytes。",
        )
        return None
    return data


IMAGE_HEADER_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError)


def check_image_sizes(bundle: Bundle, limits: Limits) -> None:
    """Refuse images with more pixels than the renditions accept, from the header alone (nothing decoded)."""

    for rel in list(bundle.refs):
        if PurePosixPath(rel).suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        label = escape_name(rel)
        try:
            with bundle.open(rel) as source, warnings.catch_warnings():
                # Our own limit and message below; Pillow's warning would only repeat it in the log.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(source) as image:
                    width, height = image.size
            pixels, shown = width * height, f"{width}×{height}（{width * height // 1_000_000} 百万）"
        except Image.DecompressionBombError as exc:
            # Pillow refuses extreme sizes inside open(), before we see the size: same message either way.
            found = re.search(r"\((\d+) pixels\)", str(exc))
            pixels = int(found[1]) if found else limits.image_pixels + 1
            shown = f" {pixels // 1_000_000} 百万" if found else "极多"
        except UnsafeFile as exc:
            bundle.problem(exc.code, exc.message, exc.fix)
            continue
        except IMAGE_HEADER_ERRORS:
            continue  # not a readable image: the pre-checks say so (image.broken)
        if pixels > limits.image_pixels:
            side = math.isqrt(limits.image_pixels)
            side = side // 1000 * 1000 if side >= 1000 else side
            bundle.problem(
                "image.too_large",
                f"图片 {label} 有 {shown}像素，超过上限 {limits.image_pixels // 1_000_000} 百万像素，"
                "可能是恶意构造的“解压炸弹”文件。",
                f"请把图片缩小到 {limits.image_pixels // 1_000_000} 百万像素以内（例如不超过 {side}×{side}）"
                "后重新放入；网页和大屏用的照片长边 4000 像素就足够清晰。",
            )


def read_bundle(drop: Drop, limits: Limits | None = None) -> Bundle:
    """Read a settled drop. Never raises for bad input: every problem is collected for REJECTED.md."""
    limits = limits or Limits()
    bundle = Bundle(drop=drop)
    _check_drop_name(bundle)
    if drop.path.is_symlink():
        bundle.problem(
            "path.symlink_outside",
            f"{drop.label} 是一个快捷方式（符号链接），不能作为稿件接收。",
            "请把真实的文件夹或文件放进 inbox。",
        )
        return bundle
    collect_files(bundle, limits)
    check_image_sizes(bundle, limits)

    raw: dict[str, Any] | None = {}
    body = ""
    meta_file = next(iter(sorted(_meta_files(drop))), None)
    if meta_file is not None and meta_file not in bundle.refs and os.path.lexists(_member(drop, meta_file)):
        return bundle  # present but refused (a link, too large …): the reason is already in the problems
    if drop.shape == "media":
        if meta_file is not None:
            data = _read_meta_file(bundle, meta_file, limits)
            if data is None:
                return bundle
            text = decode_text(data, bundle, escape_name(meta_file))
            raw = None if text is None else parse_sidecar(text, bundle, escape_name(meta_file))
            if raw is None:
                return bundle
        media_kind = "video" if drop.path.suffix.lower() in VIDEO_EXTENSIONS else "audio"
        raw.setdefault("kind", media_kind)
        body = str(raw.pop("body", "") or "")
    else:
        if meta_file not in bundle.refs:
            bundle.problem(
                "bundle.no_index",
                f"稿件文件夹 {drop.label} 里没有 index.md。",
                "请在文件夹里放一个 index.md：开头用 --- 包住 title、author 等信息，下面写正文。",
            )
            return bundle
        data = _read_meta_file(bundle, meta_file, limits)
        if data is None:
            return bundle
        text = decode_text(data, bundle, escape_name(meta_file))
        if text is None:
            return bundle
        raw, body = split_front_matter(text, bundle, escape_name(meta_file))
        if raw is None:
            return bundle

    id_from_name = "id" not in raw
    raw.setdefault("id", drop.name)
    bundle.raw_meta = dict(raw)
    bundle.body = body
    bundle.meta = validate_meta(raw, bundle, limits, id_from_name=id_from_name)
    if bundle.meta is not None:
        _check_kind_has_media(bundle)
    return bundle


def _member(drop: Drop, rel: str) -> Path:
    return drop.path / rel if drop.shape == "folder" else drop.path.parent / rel


def _check_drop_name(bundle: Bundle) -> None:
    drop = bundle.drop
    what = "稿件文件夹" if drop.shape == "folder" else "稿件文件"
    if unsafe_name(drop.name):
        bundle.problem(
            "name.control_chars",
            f"{what}名 {drop.label} 含有换行符或其他控制字符，不能接收。",
            f"请重命名{what}，去掉名字里的换行、制表符等特殊字符后重新放入。",
        )
    if len(drop.name) > DROP_NAME_CHARS:
        bundle.problem(
            "name.too_long",
            f"{what}名有 {len(drop.name)} 个字符，最多 {DROP_NAME_CHARS} 个字符。",
            f"请把{what}名改短后重新放入。",
        )


def _check_kind_has_media(bundle: Bundle) -> None:
    assert bundle.meta is not None
    exts = {Path(rel).suffix.lower() for rel in bundle.files}
    if bundle.meta.kind is Kind.video and not exts & VIDEO_EXTENSIONS:
        bundle.problem("kind.video.no_file", "类型是视频（video），但稿件里没有视频文件。", "放入 video.mp4。")
    if bundle.meta.kind is Kind.audio and not exts & AUDIO_EXTENSIONS:
        bundle.problem("kind.audio.no_file", "类型是音频（audio），但稿件里没有音频文件。", "放入 audio.mp3。")

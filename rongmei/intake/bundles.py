"""Drops in the inbox, and reading one into a bundle (front matter, body, files).

A drop is one of (DESIGN.md):
- a folder `inbox/<name>/` with `index.md` and the item's files,
- a single Markdown file `inbox/<name>.md`,
- a lone video or audio file `inbox/<name>.mp4` with an optional `<name>.yaml` sidecar.

Whoever can write into the inbox is not trusted with anything beyond their own drop ("Every door guarded"):
every file is opened below the inbox one path component at a time without following a link
(`open_inside`), must be a regular file with a single name, and is size-checked before it is read. Links
inside a folder drop that stay inside it are resolved first and then opened the same way.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import re
import stat
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import charset_normalizer
import frontmatter
import yaml
from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError

from rongmei.core.errors import DropError
from rongmei.core.model import ITEM_ID, CheckResult, ItemMeta, Kind, Severity

VIDEO_EXTENSIONS = {".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm"}
AUDIO_EXTENSIONS = {".mp3", ".m4a", ".aac", ".wav", ".flac", ".ogg", ".opus"}
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS | AUDIO_EXTENSIONS
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".heic", ".tif", ".tiff"}
SIDECAR_EXTENSIONS = (".yaml", ".yml")
# Names that copy tools and browsers give files they are still writing.
IN_PROGRESS = re.compile(r"(\.part|\.partial|\.crdownload|\.download|\.tmp|\.filepart|~)$|^~\$|^\.~lock", re.I)
IGNORED_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini", "REJECTED.md", "REVIEW.md"}
ITEM_ID_CHARS = 100  # the longest id ITEM_ID allows (the store's String(100) columns)
DROP_NAME_CHARS = 200  # the store keeps drop names in String(200) columns (PostgreSQL enforces it)


@dataclass(frozen=True)
class Limits:
    """What the door accepts, from the settings (`Limits.from_settings`); the defaults are the settings'."""

    file_bytes: int = 4 * 1024**3  # max_upload_bytes
    markdown_bytes: int = 2 * 1024**2  # max_markdown_bytes: index.md, a single .md drop, a .yaml sidecar
    image_pixels: int = 80_000_000  # media.max_image_pixels: renditions refuse larger images
    name_bytes: int = 255  # longest folder name the item id becomes (archive/<id>/), in bytes

    @classmethod
    def from_settings(cls, settings: Any, name_bytes: int = 255) -> Limits:
        return cls(
            file_bytes=settings.max_upload_bytes,
            markdown_bytes=settings.max_markdown_bytes,
            image_pixels=settings.media.max_image_pixels,
            name_bytes=name_bytes,
        )


# Names --------------------------------------------------------------------------------------------------
def _unsafe_char(ch: str) -> bool:
    # Cc: newlines, tabs and other controls; Zl/Zp: Unicode line breaks; Cs: bytes that are not UTF-8, which
    # Python hands over as lone surrogates. Format characters (Cf) stay: traditional Mongolian needs U+180E.
    return unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp")


def unsafe_name(name: str) -> bool:
    """True when a file or drop name has a line break, another control character or bytes that are not UTF-8."""
    return any(_unsafe_char(ch) for ch in name)


def escape_name(name: str) -> str:
    """The name with each unsafe character written out (`\\n`, `\\x07`, `\\u2028`): one line, nothing hidden."""
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    out = []
    for ch in name:
        if not _unsafe_char(ch):
            out.append(ch)
        elif ch in named:
            out.append(named[ch])
        elif 0xDC80 <= ord(ch) <= 0xDCFF:  # an undecodable byte, as surrogateescape keeps it
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return "".join(out)


def safe_name(name: str) -> str:
    """A name for a folder we create from the editor's name: unsafe characters replaced by `_`."""
    return "".join("_" if _unsafe_char(ch) else ch for ch in name)


def name_bytes(name: str) -> int:
    return len(name.encode("utf-8", "surrogateescape"))


@dataclass(frozen=True)
class Drop:
    """Something an editor put into the inbox, not yet read."""

    name: str
    path: Path  # the folder, the .md file, or the media file
    shape: str  # "folder" | "markdown" | "media"
    members: tuple[Path, ...]  # every path that belongs to the drop (moved together)

    @property
    def label(self) -> str:
        """The name as shown to people and in the ledger (unsafe characters escaped)."""
        return escape_name(self.name)

    def files(self) -> list[Path]:
        """All regular files and links inside the drop, sorted, hidden clutter left out.

        A link or anything else that is not a plain file under a name we ignore (REJECTED.md, REVIEW.md …) is
        listed all the same: we write files of those names later and must never write through a link."""
        if self.shape != "folder":
            return [m for m in self.members if m == self.path or not _ignored(m)]
        found: list[Path] = []
        for root, dirs, names in os.walk(self.path, followlinks=False):
            dirs.sort()
            for name in sorted(names):
                if not _ignored(Path(root) / name):
                    found.append(Path(root) / name)
            for name in dirs:
                if (Path(root) / name).is_symlink():
                    found.append(Path(root) / name)
        return found


def _ignored(path: Path) -> bool:
    if path.name not in IGNORED_NAMES:
        return False
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except FileNotFoundError:
        return True


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
    try:
        for path in paths:
            if IN_PROGRESS.search(path.name):
                return False
            info = path.lstat()
            newest = max(newest, info.st_mtime)
            if stat.S_ISDIR(info.st_mode):
                # A directory's mtime moves when files are added or renamed inside it.
                for root, dirs, _ in os.walk(path):
                    for d in dirs:
                        newest = max(newest, (Path(root) / d).lstat().st_mtime)
    except FileNotFoundError:
        return False  # vanished while we looked: the copy is still in motion
    return now - newest >= settle_seconds


def drop_state(drop: Drop) -> str:
    """What the drop looks like in the inbox right now (names, sizes, newest change), as a short key.

    Equal keys mean nothing was added, removed or written in between: a failure is reported once per state,
    and a drop whose state moved while it was being read is looked at again instead of being judged.
    Raises FileNotFoundError when the drop itself is gone."""
    entries: list[tuple[str, int, int]] = []

    def add(path: Path) -> None:
        try:
            info = path.lstat()
        except FileNotFoundError:
            return
        entries.append((os.fsencode(path).hex(), info.st_size, info.st_mtime_ns))

    drop.path.lstat()
    for member in drop.members:
        add(member)
    if drop.shape == "folder" and not drop.path.is_symlink():
        for root, dirs, names in os.walk(drop.path):
            for name in sorted(dirs) + sorted(names):
                add(Path(root) / name)
    return hashlib.sha256(repr((drop.shape, sorted(entries))).encode()).hexdigest()


# Opening files --------------------------------------------------------------------------------------------
class UnsafeFile(DropError):
    """Raised when a file of a drop may not be read: not a regular file, more than one name, or a link."""

    def __init__(self, code: str, message: str, fix: str) -> None:
        super().__init__(message)
        self.code, self.message, self.fix = code, message, fix


@dataclass(frozen=True)
class FileRef:
    """Where a checked file lies (`inner`, relative to the inbox, internal links resolved) and which file it was."""

    inbox: Path
    inner: str
    identity: tuple[int, int, int]  # device, inode, ctime: any write, rename or replacement changes it
    size: int


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, and the worker with it.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def open_inside(inbox: Path, inner: str, label: str) -> tuple[int, os.stat_result]:
    """Open `inbox/inner` for reading, every component below the inbox without following a link; the file
    must be a regular file with one name. Returns the descriptor and its `fstat`. Raises UnsafeFile."""
    parts = PurePosixPath(inner).parts
    dir_fd = os.open(inbox, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the inbox is the admin's
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, _DIR_FLAGS, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = next_fd
        fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeFile(
                "path.symlink",
                f"文件 {label} 在读取时变成了快捷方式（符号链接），或它所在的文件夹是快捷方式，出于安全原因不能接收。",
                "请放入真实的文件和文件夹，不要放快捷方式；放好后不要再改动。",
            ) from exc
        raise
    finally:
        os.close(dir_fd)
    info = os.fstat(fd)
    try:
        _check_regular(info, label)
    except UnsafeFile:
        os.close(fd)
        raise
    return fd, info


def _identity(info: os.stat_result) -> tuple[int, int, int]:
    return info.st_dev, info.st_ino, info.st_ctime_ns


def _check_regular(info: os.stat_result, label: str) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise UnsafeFile(
            "path.not_a_file",
            f"{label} 是一个指向文件夹的快捷方式，不能接收。",
            "请把文件直接放进稿件文件夹，不要放指向文件夹的快捷方式。",
        )
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeFile(
            "path.not_a_file",
            f"{label} 不是普通文件（而是管道、设备等特殊文件），不能接收。",
            "请只放入普通的文件。",
        )
    if info.st_nlink > 1:
        raise UnsafeFile(
            "path.hardlink",
            f"文件 {label} 是硬链接（同一份文件在别处还有 {info.st_nlink - 1} 个名字），出于安全原因不能接收。",
            "请复制一份真实文件放入，而不是硬链接。",
        )


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
        if _identity(info) != ref.identity:
            os.close(fd)
            raise UnsafeFile(
                "path.replaced",
                f"文件 {label} 在收稿过程中被改动或替换了。",
                "请等文件全部复制完成、不再改动后，再把稿件放入 inbox。",
            )
        return os.fdopen(fd, "rb")


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
        bundle.refs[rel] = FileRef(inbox, inner, _identity(opened), opened.st_size)
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
            raw = None if text is None else _load_yaml(text, bundle, escape_name(meta_file))
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
        raw, body = _split_front_matter(text, bundle, escape_name(meta_file))
        if raw is None:
            return bundle

    id_from_name = "id" not in raw
    raw.setdefault("id", drop.name)
    bundle.raw_meta = dict(raw)
    bundle.body = body
    bundle.meta = _validate_meta(raw, bundle, limits, id_from_name=id_from_name)
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


def _parse_yaml(text: str, bundle: Bundle, label: str, fix: str) -> tuple[bool, Any]:
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


def _load_yaml(text: str, bundle: Bundle, label: str) -> dict[str, Any] | None:
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


def _split_front_matter(text: str, bundle: Bundle, label: str) -> tuple[dict[str, Any] | None, str]:
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


def _validate_meta(raw: dict[str, Any], bundle: Bundle, limits: Limits, *, id_from_name: bool = False) -> ItemMeta | None:
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
                allowed = ALLOWED_VALUES_ZH.get(field_name)
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


def _check_kind_has_media(bundle: Bundle) -> None:
    assert bundle.meta is not None
    exts = {Path(rel).suffix.lower() for rel in bundle.files}
    if bundle.meta.kind is Kind.video and not exts & VIDEO_EXTENSIONS:
        bundle.problem("kind.video.no_file", "类型是视频（video），但稿件里没有视频文件。", "放入 video.mp4。")
    if bundle.meta.kind is Kind.audio and not exts & AUDIO_EXTENSIONS:
        bundle.problem("kind.audio.no_file", "类型是音频（audio），但稿件里没有音频文件。", "放入 audio.mp3。")

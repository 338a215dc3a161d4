"""Channels own their knowledge: no string literal in the core (`rongmei/`) or the flows (`flows/`) is the name of a
registered channel, so a new channel needs no edit outside its own module. Read with `ast`; nothing is imported.

Docstrings are prose, not code, and are left out. So is a front-matter field name in a list of field names
(`screens` is a field of the front matter and also a channel): a literal counts as a field name there when it
sits in one collection (a dict's keys, a tuple, a list, a call's arguments) with another field name that is no
channel's name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from publishers import load_publishers
from rongmei.core.model import ItemMeta
from tests.channels.support import TEST_PLUGINS

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("rongmei", "flows")
NAMES = set(load_publishers(TEST_PLUGINS).publishers)
FIELDS = set(ItemMeta.model_fields)


def docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (first statement of a module, class or function)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                found.add(id(first.value))
    return found


def field_name_lists(tree: ast.AST) -> set[int]:
    """ids of channel-name literals that stand as front-matter field names among other field names."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            members = [k for k in node.keys if k is not None]
        elif isinstance(node, ast.Tuple | ast.List | ast.Set):
            members = node.elts
        elif isinstance(node, ast.Call):
            members = node.args
        else:
            continue
        strings = [m for m in members if isinstance(m, ast.Constant) and isinstance(m.value, str)]
        if any(s.value in FIELDS - NAMES for s in strings):
            found |= {id(s) for s in strings if s.value in FIELDS}
    return found


def channel_names_in(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skipped = docstrings(tree) | field_name_lists(tree)
    found = [(node.lineno, node.col_offset, str(node.value)) for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and node.value in NAMES and id(node) not in skipped]
    for line, _column, name in sorted(found):
        yield line, name


def findings() -> list[str]:
    return [f"{path.relative_to(ROOT)}:{line}: {name!r}"
            for top in SCANNED for path in sorted((ROOT / top).rglob("*.py"))
            for line, name in channel_names_in(path)]


def test_the_scan_sees_a_channel_name_and_passes_over_prose_and_field_names(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('"""Goes to web and wechat."""\n'
                      'LABELS = {"title": "标题", "screens": "大屏分组"}\n'
                      'if channel == "wechat":\n    pass\n', encoding="utf-8")
    assert list(channel_names_in(sample)) == [(3, "wechat")]


def test_no_channel_is_named_outside_publishers() -> None:
    assert findings() == []

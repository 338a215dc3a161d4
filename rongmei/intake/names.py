"""Names editors give files and drops: what makes one unsafe to show or store, how it is shown safely, and how
long it may be. Kept apart because ledger entries, REJECTED.md, archive folders and logs all show these names.
"""

from __future__ import annotations

import unicodedata

__all__ = ["DROP_NAME_CHARS", "ITEM_ID_CHARS", "escape_name", "name_bytes", "safe_name", "unsafe_name"]

ITEM_ID_CHARS = 100  # the longest id ITEM_ID allows (the store's String(100) columns)
DROP_NAME_CHARS = 200  # the store keeps drop names in String(200) columns (PostgreSQL enforces it)


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


"""File names as the OS gives them (bytes), shown in one printable, unambiguous form.

A Linux file name is any bytes but ``/`` and NUL: not necessarily UTF-8 (Python carries the
undecodable bytes as lone surrogates, which SQLite, JSON consumers and UTF-8 logs reject), and
possibly holding a newline that would forge a log line. `printable_name` is the one form used in
logs, messages, frame ids and outbox keys. Its convention:

- valid UTF-8 printable characters stay as they are (``Blutbild é.jpg``);
- a byte that is not valid UTF-8 becomes ``\\xNN`` (``b"bad\\xff.jpg"`` -> ``bad\\xff.jpg``);
- newline, carriage return and tab become ``\\n``, ``\\r``, ``\\t``; any other character that
  is not printable (control characters, U+2028, ...) becomes ``\\uNNNN`` (or ``\\UNNNNNNNN``);
- a backslash becomes ``\\\\``, so the form is unambiguous: two different names never show
  the same (``\\xff`` is always a byte, never the character U+00FF).
"""

from __future__ import annotations

import os

_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable_name(name: str | bytes | os.PathLike[str]) -> str:
    """The name (or path) escaped to printable text without surrogates (module docstring)."""
    text = _os_bytes(name).decode("utf-8", "surrogateescape")
    if text.isprintable() and "\\" not in text:
        return text  # the common case, unchanged
    return "".join(_escape(ch) for ch in text)


def is_valid_utf8(name: str | bytes | os.PathLike[str]) -> bool:
    """Whether the OS's bytes for this name decode as UTF-8."""
    try:
        _os_bytes(name).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _os_bytes(name: str | bytes | os.PathLike[str]) -> bytes:
    try:
        return os.fsencode(name)
    except UnicodeEncodeError:  # a str with surrogates the OS cannot have produced
        return os.fspath(name).encode("utf-8", "surrogatepass")  # type: ignore[union-attr]


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: an undecodable byte 0x80-0xFF
        return f"\\x{code - 0xDC00:02x}"
    if ch.isprintable():
        return ch
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"

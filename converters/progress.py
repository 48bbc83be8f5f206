"""Progress bars and stage lines on the terminal, never in captured logs or piped output.

Conversion silences TensorFlow's native output by redirecting file descriptor 2; while it does,
`console()` is a stream to the real terminal so the calibration bar still shows. tqdm is
optional (the 'train' extra has it; a device with only 'edge' may not): without it a terminal
gets one line per step instead of a bar.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

_console: TextIO | None = None


def console() -> TextIO:
    """Where progress goes: the real stderr, even while native stderr is redirected."""
    return _console if _console is not None else sys.stderr


def set_console(stream: TextIO | None) -> TextIO | None:
    """Swap the progress stream; return the previous one (for tf_env.silenced)."""
    global _console
    previous, _console = _console, stream
    return previous


def _interactive(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def progress(items: Iterable[T], total: int | None, desc: str, unit: str = "img") -> Iterator[T]:
    """A tqdm bar on the console; off when the console is not a terminal (CI logs, pipes)."""
    stream = console()
    if not _interactive(stream):
        yield from items
        return
    try:
        from tqdm import tqdm
    except ImportError:
        count = f" ({total} {unit})" if total is not None else ""
        print(f"converters: {desc}{count}", file=stream, flush=True)
        yield from items
        return
    yield from tqdm(items, total=total, desc=desc, unit=unit, file=stream, leave=False)


def stage(message: str) -> None:
    """Say what a long step is doing: on a terminal as a line, otherwise to the log (-v)."""
    stream = console()
    if _interactive(stream):
        print(f"converters: {message}", file=stream, flush=True)
    else:
        log.info("%s", message)

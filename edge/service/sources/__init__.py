"""Frame sources: a folder, a video file, a camera, a Raspberry Pi camera; one module each.

`KINDS` is discovered from this package's modules (see registry), so a new kind is one file.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Annotated, Any, Union

from pydantic import Field

from edge.pipeline.frames import Frame, Source, SourceError
from edge.service.sources.registry import SourceContext, SourceKind

_NOT_KINDS = {"registry", "folder_events"}


def _discover() -> dict[str, SourceKind]:
    kinds: dict[str, SourceKind] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name in _NOT_KINDS:
            continue
        kind = getattr(importlib.import_module(f"{__name__}.{info.name}"), "KIND", None)
        if isinstance(kind, SourceKind):
            kinds[kind.name] = kind
    return kinds


KINDS = _discover()


def config_union() -> Any:
    """The `[source]` table's type: one of the kinds' tables, chosen by its `kind` key."""
    tables = tuple(k.config for k in KINDS.values())
    return Annotated[Union[tables], Field(discriminator="kind")]  # noqa: UP007 (built at run time)


def spec_help() -> str:
    specs = [k.spec for k in KINDS.values()]
    return ", ".join(specs[:-1]) + " or " + specs[-1]


class SourceSpecError(ValueError):
    """A --source text that names no known kind."""


def parse_source_spec(text: str) -> dict[str, Any]:
    """``KIND:REST`` (e.g. ``folder:PATH``, ``camera:N``) -> a `[source]` table."""
    name, sep, rest = text.partition(":")
    kind = KINDS.get(name)
    table = None if kind is None else kind.parse(rest) if sep else kind.parse("")
    if table is None:
        raise SourceSpecError(f"--source {text!r}: expected {spec_help()}")
    return table


def open_source(
    cfg: Any,
    once: bool,
    seen: Any = None,
    retention_s: float | None = None,
) -> Source:
    """The Source for a validated source table (not yet opened).

    `seen` keeps the folder source's records of processed files (the outbox); records older
    than `retention_s` are pruned, never those of files still in the folder.
    """
    return KINDS[cfg.kind].open(cfg, SourceContext(once, seen, retention_s))


__all__ = [
    "KINDS",
    "Frame",
    "Source",
    "SourceContext",
    "SourceError",
    "SourceKind",
    "SourceSpecError",
    "config_union",
    "open_source",
    "parse_source_spec",
    "spec_help",
]

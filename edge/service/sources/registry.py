"""The one registry of frame-source kinds: a kind is one module in this package.

Each module of edge.service.sources defines its config table (a `SourceBase` subclass with
``kind: Literal["..."]``), its Source class, and ``KIND = SourceKind(...)``; nothing else has
to change to add one: the config file's ``[source]`` table, ``--source KIND:...`` and
``open_source`` all come from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge.pipeline.frames import Source
    from edge.service.sources.folder import SeenRecords


@dataclass(frozen=True)
class SourceContext:
    """What a run tells a source when it opens it."""

    once: bool  # process what is there (one camera frame) and end
    seen: SeenRecords | None = None  # records of processed files (the outbox)
    retention_s: float | None = None  # prune records older than this


@dataclass(frozen=True)
class SourceKind:
    name: str  # the config's `kind` and the --source prefix
    config: type  # its config table (edge.service.config_types.SourceBase)
    open: Callable[[Any, SourceContext], Source]  # validated config -> a Source (not opened)
    parse: Callable[[str], dict[str, Any] | None]  # the text after "name:" -> a table, or None
    spec: str  # how --source spells it, e.g. "folder:PATH"

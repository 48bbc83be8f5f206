"""Editing a bundle's manifest by hand, as the refusal tests need."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from edge.contracts.manifest import Manifest


def edit_manifest(path: Path, reseal: bool = True, **changes: Any) -> None:
    """Change manifest fields (a dict value is merged into a dict field); reseal: recompute
    the digest, as a program using edge.contracts.manifest.write_manifest would (to reach the
    checks behind the digest)."""
    data = json.loads((path / "manifest.json").read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    if reseal:
        # An invalid manifest keeps its digest: the schema check comes before the digest's.
        with contextlib.suppress(ValueError):
            data["digest"] = Manifest.model_validate(data).compute_digest()
    (path / "manifest.json").write_text(json.dumps(data))

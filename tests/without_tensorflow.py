"""Run a module with every import of tensorflow/keras made to fail, as on a Raspberry Pi.

Usage: python tests/without_tensorflow.py [--block MOD[,MOD...]] MODULE [ARGS...]

`--block` makes more top-level modules missing (paho, tqdm, ai_edge_litert, ...): importing one
raises ModuleNotFoundError naming it, exactly as when its distribution is not installed.
Importing this file (`import tests.without_tensorflow`) blocks the TensorFlow modules; its
`block(...)` adds more.
"""

from __future__ import annotations

import importlib.abc
import runpy
import sys
from pathlib import Path

# Run as a script, Python puts tests/ first on the path, where tests/edge would shadow the
# real edge package: put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

BLOCKED = ("tensorflow", "keras", "tf_keras", "tensorboard")


class _Blocker(importlib.abc.MetaPathFinder):
    def __init__(self, blocked: tuple[str, ...]) -> None:
        self.blocked = set(blocked)

    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        if fullname.split(".")[0] in self.blocked:
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked)", name=fullname)
        return None


_blocker = _Blocker(BLOCKED)
sys.meta_path.insert(0, _blocker)


def block(*modules: str) -> None:
    """Make these top-level modules missing too (for `python -c` code that imports this file)."""
    _blocker.blocked.update(modules)


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["--block"]:
        block(*(m.strip() for m in argv[1].split(",") if m.strip()))
        argv = argv[2:]
    module = argv[0]
    sys.argv = [module, *argv[1:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)

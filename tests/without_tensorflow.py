"""Run a module with every import of tensorflow/keras made to fail, as on a Raspberry Pi.

Usage: python tests/without_tensorflow.py MODULE [ARGS...]
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
    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        if fullname.split(".")[0] in BLOCKED:
            raise ImportError(f"{fullname} is blocked: edge must run without TensorFlow")
        return None


sys.meta_path.insert(0, _Blocker())
if __name__ == "__main__":
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)

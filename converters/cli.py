"""`converters`: LiteRT export, the int8-vs-float gate, bundle inspection and benchmarks."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from edge.cli_support import new_parser, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser, _sub = new_parser(
        "converters",
        "Convert Keras models to LiteRT bundles, verify quantised models against float, benchmark.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())

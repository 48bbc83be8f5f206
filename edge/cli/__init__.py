"""The ``edge`` command line, and what every blastscope command line shares (support)."""

from edge.cli.commands import main
from edge.cli.support import add_command, new_parser, run_cli

__all__ = ["add_command", "main", "new_parser", "run_cli"]

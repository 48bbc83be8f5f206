"""What every blastscope command line shares: one-line errors and the 0/1/2 exit codes.

Exit codes: 0 success, 1 a failure the command found (bad model, failed gate, bad input),
2 a usage error (argparse's own convention). A BlastscopeError prints one line, no traceback;
so does a missing optional dependency, naming the pip extra that installs it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from edge.errors import BlastscopeError
from edge.optional_dependencies import MissingDependencyError, missing_message

log = logging.getLogger(__name__)
Handler = Callable[[argparse.Namespace], int]


def new_parser(
    prog: str, description: str
) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    return parser, sub


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    help_text: str,
    handler: Handler,
    log_level: int = logging.WARNING,
) -> argparse.ArgumentParser:
    """A subcommand whose --help shows defaults, bound to its handler.

    log_level: what it logs without -v (a service says what it is doing at INFO).
    """
    p = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.set_defaults(handler=handler, default_log_level=log_level)
    return p


def run_cli(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse argv, run the chosen handler, turn BlastscopeError into `error: ...` and exit 1.

    Handlers import heavy or optional modules lazily, so a missing one surfaces here as a
    ModuleNotFoundError: it becomes one line naming the distribution and extra (`-v -v` logs
    where the import was).
    """
    args = parser.parse_args(argv)
    quiet = getattr(args, "default_log_level", logging.WARNING)
    level = (
        logging.DEBUG if args.verbose > 1 else min(logging.INFO, quiet) if args.verbose else quiet
    )
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = f"{parser.prog} {args.command}"
    try:
        return int(args.handler(args))
    except MissingDependencyError as exc:
        print(f"{parser.prog}: error: {exc.for_command(command)}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        log.debug("import failed", exc_info=True)
        message = missing_message(exc.name, command) if exc.name else str(exc)
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 1
    except BlastscopeError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130

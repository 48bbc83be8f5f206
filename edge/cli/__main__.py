"""``python -m edge.cli``: the edge command line."""

from edge.cli.commands import main

raise SystemExit(main())

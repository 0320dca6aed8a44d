"""`python -m jueying_cli` runs the CLI."""

from jueying_cli.cli import main

raise SystemExit(main())

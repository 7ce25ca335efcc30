"""`python -m app` runs the `sluice` command line."""

from app.cli import main

raise SystemExit(main())

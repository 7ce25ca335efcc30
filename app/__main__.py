"""`python -m app` runs the `sluice` command line."""

from app.cli.main import main

raise SystemExit(main())

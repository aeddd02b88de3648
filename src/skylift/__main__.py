"""`python -m skylift` is the `skylift` command."""

from skylift.cli import main

raise SystemExit(main())

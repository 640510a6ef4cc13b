"""`python -m bandpo` is the `bandpo` console script."""

from bandpo.cli import main

raise SystemExit(main())

"""Subcommands of the `bandpo` console script (see `bandpo.cli`)."""

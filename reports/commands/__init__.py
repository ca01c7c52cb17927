"""Subcommands of the `ladder` command line, one module each."""

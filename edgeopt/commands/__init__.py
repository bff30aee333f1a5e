"""Subcommands of the `edgeopt` CLI, imported lazily by edgeopt.cli."""

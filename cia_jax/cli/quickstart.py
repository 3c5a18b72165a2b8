"""Interim forwarder: replace with this subcommand's argparse + one call (see cia_jax/cli/__init__.py)."""

from cia_jax.quickstart import add_arguments, run  # noqa: F401

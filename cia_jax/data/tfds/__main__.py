"""`python -m cia_jax.data.tfds build ...`: TFDS's own `tfds build` command, without its other commands.

TFDS 4.9.10's `tfds` script imports its `convert_format` command at start-up, which needs `apache_beam`
(not a TFDS dependency, not installed here); `build` itself does not. This entry point registers only
`build`, so the flags and behaviour are exactly those of `tfds build`, e.g.

  python -m cia_jax.data.tfds build cia_got10k --imports cia_jax.data.tfds.builders \\
      --manual_dir /data/got10k --data_dir /data/tfds

(`tfds build` itself works the same where apache_beam is installed.)
"""

from __future__ import annotations

import dataclasses

from absl import app
import simple_parsing
from tensorflow_datasets.scripts.cli import build
from tensorflow_datasets.scripts.cli import cli_utils


@dataclasses.dataclass(frozen=True, kw_only=True)
class Args(cli_utils.Args):
  """TFDS `build`, registered alone."""

  command: build.Args = simple_parsing.subparsers({"build": build.Args})

  def execute(self) -> None:
    self.command.execute()


def main(args: Args) -> None:
  """Runs the parsed command."""
  args.execute()


if __name__ == "__main__":
  app.run(main, flags_parser=cli_utils.make_flags_parser(Args, description="tfds build (cia_jax)"))

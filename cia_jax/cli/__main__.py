"""`python -m cia_jax.cli ...` is `cia-jax ...`."""

import sys

from cia_jax.cli import main

sys.exit(main())

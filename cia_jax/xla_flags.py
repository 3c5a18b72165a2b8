"""XLA flags that cia_jax sets by default: the CPU backend without YNNPACK library fusions.

With this jaxlib's defaults, XLA's CPU backend hands convolutions and dots to YNNPACK fusions. With the fusion
types emptied (`--xla_cpu_experimental_ynn_fusion_type=`) they run on XLA's built-in kernels instead. On our
2-core test machine that tracked 5-20% faster side by side with the PyTorch reference, trained CIA18 8-15%
faster and made batched lanes pay (BENCHMARKS.md, "YNN fusions off, side by side", "Blocked sums", "Lanes with
the YNN-off default"). XLA's own reduction kernels rounded the filter
optimiser's long sums worse than YNNPACK's; those sums now have a fixed order (`ops/sums.py`), and with it the
flag keeps the reference's results (BENCHMARKS.md, "Blocked sums").

The flag is experimental, and XLA aborts at start-up on a flag it does not know. So `configure` adds it only
  * for the jaxlib versions it was measured on (`MEASURED_JAXLIB`; any other version runs XLA's defaults),
  * when the user's own `XLA_FLAGS` does not mention it (theirs wins), and
  * unless `CIA_JAX_XLA_DEFAULTS=0`.
Other backends (GPU, TPU) know the flag and ignore it.

Like `compile_cache`, this module does not import jax. XLA reads `XLA_FLAGS` once, when JAX initialises its
backends (the first computation, not `import jax`), so `configure` must run before that. Once the backends are
up it does nothing. Child processes inherit the setting through the environment.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys

CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=",)
MEASURED_JAXLIB = ("0.10.2",)
ENV_VAR = "CIA_JAX_XLA_DEFAULTS"
_OFF = ("0", "false", "no", "off")


def flags_to_add(xla_flags: str, jaxlib_version: str | None, opt_out: str | None) -> list[str]:
  """The entries of `CPU_FLAGS` to append to `xla_flags` (the current XLA_FLAGS), or [] when the jaxlib version
  was not measured, the user opted out (`opt_out` = the value of CIA_JAX_XLA_DEFAULTS) or already set them."""
  if opt_out is not None and opt_out.strip().lower() in _OFF:
    return []
  if jaxlib_version not in MEASURED_JAXLIB:
    return []
  present = {f.split("=", 1)[0] for f in xla_flags.split()}
  return [f for f in CPU_FLAGS if f.split("=", 1)[0] not in present]


def _backends_initialized() -> bool:
  xla_bridge = sys.modules.get("jax._src.xla_bridge")  # loaded by `import jax`; absent: nothing initialised
  return xla_bridge is not None and xla_bridge.backends_are_initialized()


def configure() -> list[str]:
  """Appends `flags_to_add(...)` to this process's XLA_FLAGS; returns the flags added ([] when none, or when
  JAX's backends are already initialised and it is too late)."""
  if _backends_initialized():
    return []
  try:
    version = importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    version = None
  current = os.environ.get("XLA_FLAGS", "")
  add = flags_to_add(current, version, os.environ.get(ENV_VAR))
  if add:
    os.environ["XLA_FLAGS"] = " ".join([current.strip(), *add]).strip()
  return add

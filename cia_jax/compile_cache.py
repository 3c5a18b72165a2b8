"""Warm starts: JAX's persistent compilation cache, which `cia-jax` turns on by default.

Without it every `cia-jax` process compiles its programs from scratch (the tracker's `init` / `step`, the
training step). With it, XLA's compiled executables are written to a folder, keyed by the program, the
jax/jaxlib version, the device kind and the compile options, and a later process running the same program loads
them instead of compiling (tracing in Python still happens every time).

    cia-jax --compilation-cache DIR track ...     # this folder (the option may also follow the subcommand)
    cia-jax --compilation-cache none track ...    # off
    CIA_JAX_COMPILATION_CACHE=DIR|none cia-jax ...

Without the option: `CIA_JAX_COMPILATION_CACHE`, else jax's own `JAX_COMPILATION_CACHE_DIR` (or a folder already
configured in this process, e.g. by a test harness), else `default_cache_dir()`. Entries are written whatever
their compile time and size (jax's defaults skip programs that compile in under a second, which is most of the
tracker's on a GPU); `JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS` / `..._MIN_ENTRY_SIZE_BYTES` set in the
environment still win. The cache is trusted code: the folder is created private to the user (mode 0700); do
not point it at a folder that others can write.

This module does not import jax (so `cia-jax --help` and the NumPy-only commands stay fast): it sets jax's
environment variables, which jax reads when it is imported, and updates `jax.config` too when jax is already
imported. Either way it must run before the first compilation of the process.
"""

from __future__ import annotations

import os
import sys

ENV_VAR = "CIA_JAX_COMPILATION_CACHE"
OFF = "none"
# What cia-jax sets along with the folder (jax reads each from the upper-case environment variable at import).
_SETTINGS_ON = {"jax_persistent_cache_min_compile_time_secs": 0.0, "jax_persistent_cache_min_entry_size_bytes": -1}


def default_cache_dir() -> str:
  """`$XDG_CACHE_HOME/cia_jax/jax`, or `~/.cache/cia_jax/jax` when XDG_CACHE_HOME is unset."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "cia_jax", "jax")


def _set(name: str, value, override: bool = True) -> None:
  """jax option `name` = value, in the environment (read at `import jax`) and in `jax.config` if jax is imported.

  With `override=False` a value already in the environment wins (a user's own JAX_... setting).
  """
  env = name.upper()
  if not override and env in os.environ:
    value = type(value)(os.environ[env])
  os.environ[env] = str(value).lower() if isinstance(value, bool) else str(value)
  jax = sys.modules.get("jax")
  if jax is not None and hasattr(jax, "config"):
    jax.config.update(name, value)


def _configured_dir() -> str | None:
  """The cache folder jax was already given (environment, or this process's jax.config), if any."""
  jax = sys.modules.get("jax")
  if jax is not None and hasattr(jax, "config") and jax.config.jax_compilation_cache_dir:
    return jax.config.jax_compilation_cache_dir
  return os.environ.get("JAX_COMPILATION_CACHE_DIR") or None


def configure(value: str | None = None) -> str | None:
  """Sets up the persistent compilation cache; call before anything is compiled in this process.

  Args:
    value: a folder, "none" (off), or None for the default (see the module docstring: the environment, a folder
      jax was already given, or `default_cache_dir()`).

  Returns:
    The cache folder in use, or None when the cache is off.
  """
  if value is None:
    value = os.environ.get(ENV_VAR) or None
  if value is None and _configured_dir():
    return _configured_dir()  # someone else's setting (JAX_COMPILATION_CACHE_DIR, a test harness): left as it is
  if value is not None and value.strip().lower() == OFF:
    _set("jax_enable_compilation_cache", False)
    return None
  path = os.path.abspath(os.path.expanduser(value or default_cache_dir()))
  os.makedirs(path, mode=0o700, exist_ok=True)
  _set("jax_enable_compilation_cache", True)
  _set("jax_compilation_cache_dir", path)
  for name, setting in _SETTINGS_ON.items():
    _set(name, setting, override=False)
  return path

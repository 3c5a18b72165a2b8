"""Shared pytest set-up: a persistent XLA compilation cache keeps the suite fast on 2 cores."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from cia_jax import xla_flags  # noqa: E402

# The suite (and the `cia-jax` subprocesses it starts) runs on XLA's default CPU flags: with the YNN-off default
# of `cia_jax.xla_flags` it took 15.5 instead of 11.7-13.5 minutes on 2 cores. tests/test_xla_flags.py runs the flag
# itself; the parity runs with it are in BENCHMARKS.md ("Blocked sums").
os.environ.setdefault(xla_flags.ENV_VAR, "0")

import jax  # noqa: E402

_CACHE = os.environ.get(
    "CIA_JAX_TEST_CACHE", os.path.join(os.path.dirname(os.path.dirname(__file__)), ".jax_cache"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
# Compiling Flax `init`s with many random draws is several times slower with the
# partitionable threefry on CPU (jax 0.10); tests only need *some* fixed stream.
jax.config.update("jax_threefry_partitionable", False)


# Scheduling only (what runs and what it asserts is unchanged). pyproject.toml's addopts make pytest-xdist hand
# out whole modules (`--dist loadscope`), so a module-scoped fixture (a compiled tiny network, a trained run) is
# built once instead of once per worker; and these modules, the heaviest of a cold 2-worker run (worker-seconds
# from its --durations, compilation dominating), go first, longest first, so that no worker is left alone with a
# long module at the end.
HEAVY_FIRST = (
    "tests/train/test_step.py", "tests/train/test_loop.py", "tests/train/test_multihost.py",
    "tests/test_device_check.py", "tests/end_to_end/test_quickstart.py", "tests/track/test_runner_distributed.py",
    "tests/track/test_tracker.py", "tests/track/test_tracker_tcm.py", "tests/test_compile_cache.py",
    "tests/tcm/test_tcm_train.py", "tests/train/test_checkpoint.py", "tests/train/test_track_eval.py",
    "tests/track/test_tracker_padded.py", "tests/track/test_runner.py",
)
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_collection_modifyitems(items):
  rank = {path: i for i, path in enumerate(HEAVY_FIRST)}
  key = lambda item: rank.get(os.path.relpath(str(item.path), _ROOT).replace(os.sep, "/"), len(rank))
  items.sort(key=key)  # stable: the other modules keep their collection order

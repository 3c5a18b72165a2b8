"""Shared pytest set-up: a persistent XLA compilation cache keeps the suite fast on 2 cores."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import jax  # noqa: E402

_CACHE = os.environ.get(
    "CIA_JAX_TEST_CACHE", os.path.join(os.path.dirname(os.path.dirname(__file__)), ".jax_cache"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
# Compiling Flax `init`s with many random draws is several times slower with the
# partitionable threefry on CPU (jax 0.10); tests only need *some* fixed stream.
jax.config.update("jax_threefry_partitionable", False)

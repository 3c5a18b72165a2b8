"""cia_jax: a JAX/Flax reimplementation of the CIA tracker (ECCV 2022) and its DiMP baselines."""

__version__ = "0.1.0"

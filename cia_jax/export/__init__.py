"""cia_jax.export: trackers as serialized StableHLO for a jax-only runtime (`cia-jax export`).

`exporter` writes an export folder (needs the whole cia_jax stack); `runtime` runs one with only jax and numpy
(it imports nothing else from cia_jax, and this package's `__init__` imports nothing, so `cia_jax.export.runtime`
loads without flax, optax, orbax or TensorFlow).
"""

"""cia_jax.interop."""

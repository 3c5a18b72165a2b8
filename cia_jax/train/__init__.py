"""cia_jax.train."""

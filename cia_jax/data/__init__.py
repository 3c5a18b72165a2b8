"""cia_jax.data."""

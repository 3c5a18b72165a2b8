"""cia_jax.ops."""

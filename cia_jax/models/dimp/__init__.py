"""cia_jax.models.dimp."""

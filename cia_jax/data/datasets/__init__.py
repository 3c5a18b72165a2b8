"""cia_jax.data.datasets."""

"""cia_jax.track."""

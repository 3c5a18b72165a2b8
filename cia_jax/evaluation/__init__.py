"""cia_jax.evaluation."""

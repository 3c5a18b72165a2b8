"""cia_jax.models."""

"""cia_jax.data.tfds."""

"""cia_jax.interop: PyTorch checkpoints (pytracking / CIA / torchvision) <-> our variables.

* `pytorch`: `load_torch_file` (torch-free, allow-list unpickler; zip and legacy formats), `save_torch_file`,
  `state_dict_from_checkpoint`, and the `cia-jax convert` subcommand.
* `mapping`: `ARCH_CONFIGS`, `torch_to_flax`, `flax_to_torch`, `key_table`.
"""

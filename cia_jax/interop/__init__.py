"""cia_jax.interop: PyTorch checkpoints (pytracking / CIA / torchvision) <-> our variables.

* `torch_pickle`: `load_torch_file` (torch-free, allow-list unpickler; zip and legacy formats), `save_torch_file`,
  `state_dict_from_checkpoint`, `UnsafeCheckpointError`.
* `archs`: `ARCH_CONFIGS` (the networks a checkpoint can hold), `BACKBONE_ONLY`.
* `mapping`: `torch_to_flax`, `flax_to_torch`, `key_table`, `model_template`.
* `convert`: `convert_file`, `write_converted`, `export_file` (the `cia-jax convert` subcommand's work).
"""

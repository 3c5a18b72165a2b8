"""Tiny CIA on synthetic sequences: trains on a 2-core CPU in minutes (smoke tests, convergence check).

Every dataset root left None is filled with synthetic sequences generated into `<workdir>/synthetic/`
(`cia_jax.data.synthetic.generate`, GOT-10k and LaSOT layouts), so no data is needed:

  cia-jax train --config configs/tiny.py --workdir /tmp/cia_tiny

Variants: as `configs/cia18.py` (`configs/tiny.py:no_momentum` ...).
"""

from cia_jax.train import config_utils


def get_config(arg=None):
  """The locked ConfigDict; `arg` = comma-separated variant names (see the module docstring)."""
  config = config_utils.base_config("cia18")
  config.name = "tiny"
  config.model.update(dict(backbone_width=8, clf_dim=16, iou_dim=16, encoder_ffn=32))
  config.data.processing.output_sz = 64
  config.data.processing.feature_sz = 4
  config.data.batch_size = 4
  # Two small synthetic training sets (LaSOT's layout carries category labels).
  config.data.train = {
      "got10k": config_utils._dataset_entry("got10k", "train", 1.0),  # pylint: disable=protected-access
      "lasot": config_utils._dataset_entry("lasot", "train", 1.0),  # pylint: disable=protected-access
  }
  config.data.synthetic.enabled = True
  config.data.num_parallel_calls = 2
  config.val.datasets.got10k.split = "val"
  config.val.every_steps = 100
  config.val.num_batches = 2
  config.optim.steps_per_epoch = 50
  config.optim.epochs = 4
  config.optim.decay_every_epochs = 0
  config.optim.lr_scale = 5.0
  config.checkpoint.every_steps = 100
  config.log_every_steps = 10
  return config_utils.finalize(config_utils.apply_variant(config, arg))

"""CIA50 (ResNet-50, conv1..layer2 frozen) with the paper's schedule (Decisions 5).

Paper: 64 sequences x 2000 iterations per epoch, x0.2 every 15 epochs, 50 epochs. The released config's
values (batch 20, 10 iterations per epoch, decay step 60) are reachable with
`--config.data.batch_size=20 --config.optim.steps_per_epoch=10 --config.optim.decay_every_epochs=60`.

Launch:

  cia-jax train --config configs/cia50.py --workdir /ckpt/cia50 \
    --config.data.train.lasot.root=/data/lasot \
    --config.data.train.got10k.root=/data/got10k/train \
    --config.data.train.got10k.split_file=/data/splits/got10k_vot_train_split.txt \
    --config.val.datasets.got10k.split_file=/data/splits/got10k_vot_val_split.txt \
    --config.data.train.trackingnet.root=/data/trackingnet \
    --config.data.train.coco.root=/data/coco

Variants: as `configs/cia18.py` (Table 1 SuperDiMP rows: `dimp`, `cc`, `cc_ce`, `cl`, `cl_ie`, `full`).
"""

from cia_jax.train import config_utils


def get_config(arg=None):
  """The locked ConfigDict; `arg` = comma-separated variant names (see the module docstring)."""
  config = config_utils.base_config("cia50")
  return config_utils.finalize(config_utils.apply_variant(config, arg))

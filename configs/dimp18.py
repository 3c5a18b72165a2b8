"""DiMP18 (pytracking's dimp18 settings: batch 26, 1000 iterations per epoch, whole ResNet-18 trained).

Launch:

  cia-jax train --config configs/dimp18.py --workdir /ckpt/dimp18 \
    --config.data.train.lasot.root=/data/lasot \
    --config.data.train.got10k.root=/data/got10k/train \
    --config.data.train.got10k.split_file=/data/splits/got10k_vot_train_split.txt \
    --config.val.datasets.got10k.split_file=/data/splits/got10k_vot_val_split.txt \
    --config.data.train.trackingnet.root=/data/trackingnet \
    --config.data.train.coco.root=/data/coco
"""

from cia_jax.train import config_utils


def get_config(arg=None):
  """The locked ConfigDict; `arg` = comma-separated variant names (see the module docstring)."""
  config = config_utils.base_config("dimp18")
  return config_utils.finalize(config_utils.apply_variant(config, arg))

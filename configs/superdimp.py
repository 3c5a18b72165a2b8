"""SuperDiMP (ResNet-50 layer3 trained, KL IoU loss; pytracking's super_dimp: batch 20, 2000 iterations).

Launch:

  cia-jax train --config configs/superdimp.py --workdir /ckpt/superdimp \
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
  config = config_utils.base_config("superdimp")
  return config_utils.finalize(config_utils.apply_variant(config, arg))

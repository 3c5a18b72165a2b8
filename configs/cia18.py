"""CIA18 (ResNet-18) with the paper's training settings (spec 4.9, Decisions 1, 3, 4).

Launch (roots of the four training sets are required; GOT-10k's vottrain/votval need pytracking's split
files):

  cia-jax train --config configs/cia18.py --workdir /ckpt/cia18 \
    --config.data.train.lasot.root=/data/lasot \
    --config.data.train.got10k.root=/data/got10k/train \
    --config.data.train.got10k.split_file=/data/splits/got10k_vot_train_split.txt \
    --config.val.datasets.got10k.split_file=/data/splits/got10k_vot_val_split.txt \
    --config.data.train.trackingnet.root=/data/trackingnet \
    --config.data.train.coco.root=/data/coco

Variants (`configs/cia18.py:<variant>`, comma-separated to combine): the Table 1 rows `dimp`, `cc`,
`cc_ce`, `cl`, `cl_ie`, `full`; `no_category` (CC and CE off), `no_contrastive` (no InfoNCE-V),
`no_momentum` (keys from the query encoder, Fig. 6), `no_known_categories` (Table 2: random learned
dictionary, no category labels).
"""

from cia_jax.train import config_utils


def get_config(arg=None):
  """The locked ConfigDict; `arg` = comma-separated variant names (see the module docstring)."""
  config = config_utils.base_config("cia18")
  return config_utils.finalize(config_utils.apply_variant(config, arg))

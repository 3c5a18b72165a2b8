"""CIA18 (ResNet-18) with the paper's training settings (design.md §4.9, design.md §D1, D3, D4).

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

Mixed precision: `--config.model.dtype=bfloat16` (bf16 compute, float32 parameters; design.md §9.1).
"""

import ml_collections

from cia_jax import config_lib
from cia_jax.data.processing import PROCESSING_PRESETS
from cia_jax.data.sampler import SAMPLER_PRESETS
from cia_jax.models.cia import CIANet
from cia_jax.models.presets import model_kwargs


def get_config(arg=None):
  """The locked ConfigDict; `arg` = comma-separated variant names (see the module docstring)."""
  c = config_lib.run_settings("cia18")
  # Network: every field of the CIA18 CIANet (every CIA module on, design.md §D1-D2).
  c.model = config_lib.dataclass_fields(CIANet(**model_kwargs("cia18")), exclude=("parent", "name"))

  # Losses: hinge + IoU MSE + category CE x0.1 + InfoNCE-V (reference form, design.md §D3) with the EMA key
  # encoder (design.md §D4).
  c.loss = ml_collections.ConfigDict(dict(
      weights=dict(clf=1.0, iou=1.0, category=0.1, contrastive=1.0), iou_loss="mse", infonce_form="reference",
      temperature=0.07, momentum=True, ema_decay=0.999, dropout=True))

  # Optimiser and schedule: Adam per parameter group, 50 epochs of 2000 steps, x0.2 every 15 epochs (design.md §4.9).
  c.optim = ml_collections.ConfigDict(dict(
      learning_rates=dict(feature_extractor=2e-4, upper_classifier=2e-4, filter_initializer=5e-5,
                          filter_optimizer=5e-4, clf_feature_extractor=5e-5, bb_regressor=1e-3),
      lr_scale=1.0,  # multiplies every group (quick experiments)
      epochs=50, steps_per_epoch=2000, decay_every_epochs=15,  # decay_every_epochs 0 = constant
      decay_factor=0.2, total_steps=config_lib.placeholder(int)))  # total_steps None = epochs x steps_per_epoch

  # Data: 64 sequences per step (global) from the reference's training mix; sampler and crops of CIA18.
  c.data.batch_size = 64
  mix = dict(SAMPLER_PRESETS["cia18"].dataset_weights)
  c.data.train = dict(
      lasot=config_lib.dataset_entry("lasot", "train", mix["lasot_train"]),
      got10k=config_lib.dataset_entry("got10k", "vottrain", mix["got10k_vottrain"]),
      trackingnet=config_lib.dataset_entry("trackingnet", "train", mix["trackingnet_train_0_3"], chunks=(0, 1, 2, 3)),
      coco=config_lib.dataset_entry("coco", "train", mix["coco2017_train"]))
  c.data.sampler = config_lib.dataclass_fields(SAMPLER_PRESETS["cia18"], exclude=("dataset_weights",))
  c.data.processing = config_lib.dataclass_fields(PROCESSING_PRESETS["cia18"])

  # Validation: every 5 epochs on 5000 GOT-10k votval samples (root None = the training entry's root).
  c.val.enabled = True
  c.val.datasets = dict(got10k=config_lib.dataset_entry("got10k", "votval", 1.0))
  c.val.every_steps = 5 * 2000
  c.val.num_batches = 5000 // 64
  # Tracking accuracy while training (off; `--config.val.tracking.enabled=true` tracks GOT-10k votval sequences).
  c.val.tracking = config_lib.tracking_validation("cia18")
  return config_lib.finalize(config_lib.apply_variant(c, arg))

"""CIA50 (ResNet-50, conv1..layer2 frozen) with the paper's schedule (design.md §D5).

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
  c = config_lib.run_settings("cia50")
  # Network: every field of the CIA50 CIANet (every CIA module on, conv1..layer2 frozen).
  c.model = config_lib.dataclass_fields(CIANet(**model_kwargs("cia50")), exclude=("parent", "name"))

  # Losses: as CIA18 but the IoU-Net is trained with the KL loss (SuperDiMP's), weighted 0.01.
  c.loss = ml_collections.ConfigDict(dict(
      weights=dict(clf=1.0, iou=0.01, category=0.1, contrastive=1.0), iou_loss="kl", infonce_form="reference",
      temperature=0.07, momentum=True, ema_decay=0.999, dropout=True))

  # Optimiser and schedule: the backbone at 2e-5; 50 epochs of 2000 steps, x0.2 every 15 epochs (design.md §D5).
  c.optim = ml_collections.ConfigDict(dict(
      learning_rates=dict(feature_extractor=2e-5, upper_classifier=2e-4, filter_initializer=5e-5,
                          filter_optimizer=5e-4, clf_feature_extractor=5e-5, bb_regressor=1e-3),
      lr_scale=1.0,  # multiplies every group (quick experiments)
      epochs=50, steps_per_epoch=2000, decay_every_epochs=15,  # decay_every_epochs 0 = constant
      decay_factor=0.2, total_steps=config_lib.placeholder(int)))  # total_steps None = epochs x steps_per_epoch

  # Data: 64 sequences per step (global) from the reference's training mix; sampler and crops of CIA50.
  c.data.batch_size = 64
  mix = dict(SAMPLER_PRESETS["cia50"].dataset_weights)
  c.data.train = dict(
      lasot=config_lib.dataset_entry("lasot", "train", mix["lasot_train"]),
      got10k=config_lib.dataset_entry("got10k", "vottrain", mix["got10k_vottrain"]),
      trackingnet=config_lib.dataset_entry("trackingnet", "train", mix["trackingnet_train_0_3"], chunks=(0, 1, 2, 3)),
      coco=config_lib.dataset_entry("coco", "train", mix["coco2017_train"]))
  c.data.sampler = config_lib.dataclass_fields(SAMPLER_PRESETS["cia50"], exclude=("dataset_weights",))
  c.data.processing = config_lib.dataclass_fields(PROCESSING_PRESETS["cia50"])

  # Validation: every 20 epochs on 10000 GOT-10k votval samples (root None = the training entry's root).
  c.val.enabled = True
  c.val.datasets = dict(got10k=config_lib.dataset_entry("got10k", "votval", 1.0))
  c.val.every_steps = 20 * 2000
  c.val.num_batches = 10000 // 64
  # Tracking accuracy while training (off; `--config.val.tracking.enabled=true` tracks GOT-10k votval sequences).
  c.val.tracking = config_lib.tracking_validation("cia50")
  return config_lib.finalize(config_lib.apply_variant(c, arg))

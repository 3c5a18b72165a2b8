"""Tiny CIA on synthetic sequences: trains on a 2-core CPU in minutes (smoke tests, convergence check).

Every dataset root left None is filled with synthetic sequences generated into `<workdir>/synthetic/`
(`cia_jax.data.synthetic.generate`, GOT-10k and LaSOT layouts), so no data is needed:

  cia-jax train --config configs/tiny.py --workdir /tmp/cia_tiny

Variants: as `configs/cia18.py` (`configs/tiny.py:no_momentum` ...).

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
  c = config_lib.run_settings("tiny")
  c.data.synthetic.enabled = True
  c.data.num_parallel_calls = 2
  c.checkpoint.every_steps = 100
  c.log_every_steps = 10
  # Network: every field of a CIA18 CIANet (all modules on) at width 8.
  net = CIANet(**model_kwargs("cia18", backbone_width=8, clf_dim=16, iou_dim=16, encoder_ffn=32))
  c.model = config_lib.dataclass_fields(net, exclude=("parent", "name"))

  # Losses: CIA18's.
  c.loss = ml_collections.ConfigDict(dict(
      weights=dict(clf=1.0, iou=1.0, category=0.1, contrastive=1.0), iou_loss="mse", infonce_form="reference",
      temperature=0.07, momentum=True, ema_decay=0.999, dropout=True))

  # Optimiser and schedule: CIA18's learning rates x5, constant, 4 epochs of 50 steps.
  c.optim = ml_collections.ConfigDict(dict(
      learning_rates=dict(feature_extractor=2e-4, upper_classifier=2e-4, filter_initializer=5e-5,
                          filter_optimizer=5e-4, clf_feature_extractor=5e-5, bb_regressor=1e-3),
      lr_scale=5.0,  # multiplies every group
      epochs=4, steps_per_epoch=50, decay_every_epochs=0,  # decay_every_epochs 0 = constant
      decay_factor=0.2, total_steps=config_lib.placeholder(int)))  # total_steps None = epochs x steps_per_epoch

  # Data: 4 sequences per step from two small synthetic sets (LaSOT's layout carries category labels); CIA18's
  # sampler; 64 px crops (4 x 4 features).
  c.data.batch_size = 4
  c.data.train = dict(got10k=config_lib.dataset_entry("got10k", "train", 1.0),
                      lasot=config_lib.dataset_entry("lasot", "train", 1.0))
  c.data.sampler = config_lib.dataclass_fields(SAMPLER_PRESETS["cia18"], exclude=("dataset_weights",))
  c.data.processing = config_lib.dataclass_fields(PROCESSING_PRESETS["cia18"])
  c.data.processing.output_sz = 64
  c.data.processing.feature_sz = 4

  # Validation: every 100 steps on 2 batches of the synthetic GOT-10k val split.
  c.val.enabled = True
  c.val.datasets = dict(got10k=config_lib.dataset_entry("got10k", "val", 1.0))
  c.val.every_steps = 100
  c.val.num_batches = 2
  # Tracking accuracy at every validation: 2 synthetic GOT-10k val sequences x 8 frames, 64 px crops, in lockstep.
  c.val.tracking = config_lib.tracking_validation(
      "cia18", enabled=True, num_sequences=2, max_frames=8, batch_sequences=2,
      dataset=ml_collections.ConfigDict(dict(format="got10k", root=config_lib.placeholder(str), split="val",
                                             split_file=config_lib.placeholder(str))),
      overrides=("image_sample_size=64", "search_area_scale=4.0", "box_refinement_iter=2"))
  return config_lib.finalize(config_lib.apply_variant(c, arg))

"""KeepTrack's association network (target candidate matching), trained on a candidate dump (keeptrack.md §5).

  cia-jax tcm-dump --tracker superdimp --checkpoint SUPERDIMP --dataset lasot --root LaSOT --split train \
      --set image_sample_size=352 --set search_area_scale=6.0 --out lasot_candidates.json
  cia-jax train --config configs/keeptrack.py --workdir /tmp/keeptrack --config.base.checkpoint=SUPERDIMP \
      --config.data.dump=lasot_candidates.json --config.data.root=LaSOT
  cia-jax track --tracker keeptrack ...   (the association net: <workdir>/model, `cia_jax.tcm.weights.attach_tcm`)

Values of the reference's train settings (ltr/train_settings/keep_track/keep_track.py): batch 64, 15 epochs of
100 steps (6400 samples), Adam lr 1e-4 decayed by 0.2 every 6 epochs, loss balancing 0.5, 352 px crops (23 x 23
score maps), 5 candidate slots, self_sup / partial_sup with frame states H / K / J at 1 / 0.5 / 0.5 and pairs
HH / HK / HG at 1 / 0.1 / 0.1; validation on self_sup samples (G / H / J / K at 0.2 / 0.4 / 0.2 / 0.2, 640) and on
the real candidates of HH / HK pairs. The base network (SuperDiMP) is frozen; its layer3 feeds the descriptor conv.

A run checkpoints its whole training state in `<workdir>/checkpoints` (every `checkpoint.every_steps` steps, at the
end, on SIGTERM); rerunning the same command in the same workdir resumes from the newest intact step and gives the
uninterrupted run's result. It trains data parallel on all local devices (`data.batch_size` a multiple of their
count; the BatchNorm statistics are those of the whole batch). Details: docs/keeptrack.md §8.2.

Variant `tiny` (`configs/keeptrack.py:tiny`): a tiny random base network, a tiny association net and 64 px crops
on synthetic sequences with a ground-truth stand-in dump (`synthetic_dump`), seconds on a CPU (CI only: the
weights it writes mean nothing).
"""

import ml_collections

from cia_jax import config_lib

TASK = "keeptrack"


def get_config(arg=None):
  """The locked ConfigDict; `arg` = 'tiny' for the CI variant."""
  c = ml_collections.ConfigDict()
  c.name = "keeptrack"
  c.task = TASK  # `cia-jax train` hands the config to cia_jax.train.tcm_trainer
  c.variant = arg or ""
  c.log_every_steps = 10
  # Training checkpoints (orbax, <workdir>/checkpoints/<step>; a rerun resumes) and the <workdir>/model export.
  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=100, keep=3, async_save=True))
  # Base tracker network: a checkpoint (training workdir or `cia-jax convert --arch superdimp`), or random weights.
  c.base = ml_collections.ConfigDict(dict(checkpoint=config_lib.placeholder(str), random_weights=False,
                                          network="superdimp", model_overrides=ml_collections.ConfigDict()))
  # The association net (TargetCandidateMatchingNet fields); trained with the training keypoint convention.
  c.tcm = ml_collections.ConfigDict(dict(descriptor_dim=256, keypoint_encoder=(32, 64, 128, 256),
                                         gnn_layers=("self", "cross", "self", "cross"), num_heads=4,
                                         sinkhorn_iterations=10, match_threshold=0.2, keypoint_center="training"))
  c.loss = ml_collections.ConfigDict(dict(nll_balancing=0.5, nll_weight=1.0))
  c.optim = ml_collections.ConfigDict(dict(learning_rate=1e-4, epochs=15, steps_per_epoch=100, decay_every_epochs=6,
                                           decay_factor=0.2))
  c.data = ml_collections.ConfigDict(dict(
      dump=config_lib.placeholder(str), dataset="lasot", root=config_lib.placeholder(str), split="train",
      batch_size=64, seed=0, num_workers=8, synthetic=False, synthetic_sequences=4, synthetic_frames=12,
      synthetic_search_area_scale=4.0,
      sampler=dict(output_sz=352, score_size=23, num_candidates=5, sup_modes=("self_sup", "partial_sup"),
                   frame_states=("H", "K", "J"), p_frame=(1.0, 0.5, 0.5), pair_states=("HH", "HK", "HG"),
                   p_pair=(1.0, 0.1, 0.1), sa_jitter=100, brightness_jitter=0.5, blur_sigma=0.5, blur_prob=0.75,
                   gt_drop_prob=0.25)))
  # Validation every every_steps steps and at the end (BN in eval mode): the real candidate pairs of the reference's
  # val_HH / val_HK loaders (the first num_pairs pairs of each state) and its val_self_sup loader (self_sup samples
  # of the frame states G / H / J / K at 0.2 / 0.4 / 0.2 / 0.2, 640 = 10 batches of 64, fixed streams [seed, i]).
  c.val = ml_collections.ConfigDict(dict(
      enabled=True, pair_states=("HH", "HK"), num_pairs=64, capacity=32, every_steps=100,
      self_sup=dict(enabled=True, frame_states=("G", "H", "J", "K"), p_frame=(0.2, 0.4, 0.2, 0.2), num_samples=640,
                    seed=1)))
  if arg == "tiny":
    c.base.random_weights = True
    c.base.model_overrides = ml_collections.ConfigDict(dict(backbone_width=8, clf_dim=16, iou_dim=16,
                                                            encoder_ffn=32))
    c.tcm.descriptor_dim, c.tcm.keypoint_encoder = 16, (8, 16)
    c.optim.learning_rate, c.optim.epochs, c.optim.steps_per_epoch, c.optim.decay_every_epochs = 5e-4, 3, 10, 0
    c.data.synthetic, c.data.batch_size, c.data.num_workers = True, 8, 2
    c.data.sampler.output_sz, c.data.sampler.score_size = 64, 5
    c.log_every_steps, c.checkpoint.every_steps = 5, 10
    c.val.num_pairs, c.val.every_steps, c.val.self_sup.num_samples = 6, 15, 16
  elif arg:
    raise ValueError(f"configs/keeptrack.py: unknown variant {arg!r} (known: tiny)")
  c.lock()
  return c

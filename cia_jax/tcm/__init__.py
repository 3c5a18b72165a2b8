"""KeepTrack's association-network training side: loss, candidate dump, association-net checkpoints.

(The network is `cia_jax.models.tcm`, the tracker side `cia_jax.track.keeptrack`, the trainer
`cia_jax.train.tcm_trainer`, the training samples `cia_jax.data.candidate_matching`; keeptrack.md §5.)
"""

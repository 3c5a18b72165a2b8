"""cia_jax.track: the online DiMP / CIA tracker (design.md §5).

`params` (TrackerSettings, presets), `augment` (initial-frame transforms), `memory` (sample memory and
weight rule), `tracker` (TrackingModel, TrackerState, jitted `init` / `step`, the `Tracker` adapter),
`runner` (benchmark runs: checks, batched tracking, failed sequences; `cia-jax track`).
"""

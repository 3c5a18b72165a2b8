"""cia_jax.track: the online DiMP / CIA tracker (spec 5).

`params` (TrackerSettings, presets), `augment` (initial-frame transforms), `memory` (sample memory and
weight rule), `tracker` (TrackingModel, TrackerState, jitted `init` / `step`, the `Tracker` adapter).
Submodules are imported lazily so `import cia_jax.track.runner` stays cheap.
"""

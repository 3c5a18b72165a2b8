"""The networks a PyTorch checkpoint can hold, as `CIANet` keyword arguments (no JAX import: the CLI lists them)."""

from __future__ import annotations

from typing import Any

from cia_jax.models.presets import MODEL_PRESETS

# Architecture name -> `CIANet` keyword arguments: the four published networks of `cia_jax.models.presets`, plus
# resnet18 / resnet50, backbone-only targets (ImageNet weights for initialising a CIA18 / CIA50 training) whose
# checkpoints hold only `backbone`.
ARCH_CONFIGS: dict[str, dict[str, Any]] = {
    **MODEL_PRESETS,
    "resnet18": dict(MODEL_PRESETS["cia18"]),
    "resnet50": dict(MODEL_PRESETS["cia50"]),
}
BACKBONE_ONLY = ("resnet18", "resnet50")
# Association networks (not a `CIANet`): pytracking's KeepTrack file holds the target candidate matching net
# (`cia_jax.interop.keeptrack`); its base tracker is converted separately as superdimp.
TCM_ARCHS = ("keeptrack",)

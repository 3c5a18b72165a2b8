"""The published networks as `CIANet` keyword arguments: the one network table (no JAX import).

| preset | backbone | frozen | clf features | D | CIA modules |
|---|---|---|---|---|---|
| dimp18 | ResNet-18 | - | residual block + conv + L2 norm | 256 | off (two BN batches, design.md §1.3) |
| superdimp | ResNet-50 | conv1, layer1, layer2 | conv + L2 norm | 512 | off |
| cia18 | ResNet-18 | - | as dimp18 | 256 | all on (design.md §D1-D2) |
| cia50 | ResNet-50 | conv1, layer1, layer2 | as superdimp | 512 | all on |
| superdimp_simple | as superdimp | | | | off; filter optimiser 'hinge' (the KeepTrack base, keeptrack.md §0) |

An entry holds the `CIANet` fields that differ from the module's defaults (the defaults are CIA18); a training
config (`configs/*.py`) copies every field of the preset's `CIANet` into `config.model`. `init_gauss_sigma` =
output_sigma_factor / search_area_factor * feature size (design.md §2.4): 0.25 / 5 * 18 = 0.9 for the 288 px / factor 5
trainings, 0.25 / 6 * 22 for the 352 px / factor 6 ones.
"""

from __future__ import annotations

from typing import Any

_R50 = dict(backbone_arch="resnet50", frozen_layers=("conv1", "layer1", "layer2"), clf_arch="r50", clf_dim=512,
            init_gauss_sigma=0.25 / 6 * 22)
# DiMP: no CIA module; train and test crops go through the backbone as two BN batches.
_DIMP = dict(category_classification=False, category_encoder=False, contrastive=False, instance_encoder=False,
             joint_backbone_batch=False)

MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "cia18": {},
    "cia50": dict(_R50),
    "dimp18": dict(_DIMP),
    "superdimp": {**_R50, **_DIMP},
    # pytracking's dimpnet50_simple (super_dimp_simple.pth.tar): SuperDiMP with the hinge filter optimiser.
    "superdimp_simple": {**_R50, **_DIMP, "clf_optimizer": "hinge"},
}


def model_kwargs(name: str, **overrides) -> dict[str, Any]:
  """`CIANet` keyword arguments of preset `name` (see the module table), with `overrides` applied."""
  if name not in MODEL_PRESETS:
    raise ValueError(f"unknown model preset {name!r}; expected one of {sorted(MODEL_PRESETS)}")
  return {**MODEL_PRESETS[name], **overrides}

"""Every stage of a `CIANet` in tracking (eval) mode on one batch of crops, by name: to compare two runs of the
same weights stage by stage, e.g. bf16 vs fp32 (tests/models/test_mixed_precision.py,
scripts/mixed_precision_report.py).

Stages (present when the network has the module): `layer2`, `layer3`, `layer4` (backbone), `instance` (after
the angle modulation), `category` (after the category encoder), `clf_features` (DiMP classification features),
`init_filter`, `init_scores` (the initial filter's scores), `filter` / `scores` (after `optimize_iter`
steepest-descent steps, when > 0), `iou_mod3` / `iou_mod4` (modulation), `iou_c3t` / `iou_c4t` (IoU features),
`iou_fc3` / `iou_fc4` (the `fc3_rt` / `fc4_rt` outputs, i.e. the input of the last linear layer), `iou` (predicted
IoU), `category_logits`, `query` (InfoNCE-V embedding).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cia_jax.models.cia import CIANet
from cia_jax.models.iou_net import LinearBlock


def stage_outputs(net: CIANet, variables, images: jax.Array, box_xywh: jax.Array, proposals_xywh: jax.Array,
                  optimize_iter: int = 0) -> dict[str, jax.Array]:
  """The named stages (module docstring) of `N` crops, each its own sequence.

  Args:
    net, variables: the network and its `{'params', 'batch_stats'}`.
    images: `[N, S, S, 3]` normalised crops; box_xywh: `[N, 4]` target boxes (crop pixels), used as the
      filter's, the IoU modulation's and the embeddings' box; proposals_xywh: `[N, P, 4]` IoU-Net proposals.
    optimize_iter: static number of steepest-descent steps for `filter` / `scores` (0: not run).

  Returns:
    dict name -> array (float32 whatever the compute dtype, as the stage methods return).
  """
  cls = type(net)
  run = lambda method, *args, **kw: net.apply(variables, *args, method=getattr(cls, method), **kw)  # noqa: E731
  feats = run("backbone_features", images, False)
  out = dict(feats)
  stages = run("classification_input_stages", feats["layer3"], True)
  if net.instance_encoder:
    out["instance"] = stages["instance"]
  if net.category_encoder:
    out["category"] = stages["category"]
  clf = run("classification_features", feats["layer3"], False, True)[None]  # [1, N, H, W, D]
  out["clf_features"] = clf[0]
  filt = run("init_filter", clf, box_xywh[None])
  out["init_filter"] = filt
  out["init_scores"] = run("classify", filt, clf)[0]
  if optimize_iter:
    opt, _, _ = run("optimize_filter", filt, clf, box_xywh[None], None, optimize_iter)
    out["filter"], out["scores"] = opt, run("classify", opt, clf)[0]
  mod3, mod4 = run("iou_modulation", feats["layer2"], feats["layer3"], box_xywh)
  c3t, c4t = run("iou_features", feats["layer2"], feats["layer3"])
  iou, captured = net.apply(variables, mod3, mod4, c3t, c4t, proposals_xywh, method=cls.predict_iou,
                            capture_intermediates=lambda m, name: isinstance(m, LinearBlock) and name == "__call__")
  fc = captured["intermediates"]["bb_regressor"]
  out.update(iou_mod3=mod3, iou_mod4=mod4, iou_c3t=c3t, iou_c4t=c4t, iou_fc3=fc["fc3_rt"]["__call__"][0],
             iou_fc4=fc["fc4_rt"]["__call__"][0], iou=iou)
  if net.category_classification:
    out["category_logits"] = run("category_logits", feats["layer4"], box_xywh)
  if net.contrastive:
    out["query"] = run("contrastive_embedding", feats["layer3"], box_xywh)
  return {k: jnp.asarray(v) for k, v in out.items()}

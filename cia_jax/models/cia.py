"""The whole CIA network (and DiMP18 / SuperDiMP with the CIA parts switched off).

Wiring (design.md §4.7, 4.8, design.md §D1-D2):

    images -> backbone (ResNet) -> layer2, layer3, layer4
    layer3 -> [IE] angle modulation with the dense contrastive projector -> [CE] category encoder
           -> classifier (DiMP LinearFilter: features, filter init, steepest descent, scores)
    layer2, layer3 -> bb_regressor (IoU-Net; plain, unmodulated features)
    layer4 -> [CC] category classifier (logits; its clf_fc weights are CE's dictionary)
    layer3 -> [CL] contrastive projector on the target RoI -> InfoNCE-V query (the key comes from the
              same modules applied to the EMA `momentum_params`, see `key_embedding`)

Switches (paper Table 1 / Table 2 / Fig. 6): `category_classification` (CC), `category_encoder` (CE),
`contrastive` (CL), `instance_encoder` (IE), `num_known_categories` (70, or 0 = a learned random
dictionary); the momentum switch lives in the training step (it decides where keys come from).

Parameter tree (top level): `backbone` (ResNet, reference `feature_extractor.encoder_q`), `proj`
(contrastive MLP, reference `encoder_q.proj`), `modulator`, `upper_classifier` (category classifier),
`category_encoder` (reference `upper_classifier.proj_post` + `transformer_encoder`), `classifier`,
`bb_regressor`. Only the modules a configuration uses exist in the tree.

Stage methods (for the tracker, with `net.apply(variables, ..., method=...)`): `backbone_features`,
`classification_input`, `classification_input_stages`, `classification_features`, `contrastive_embedding`,
`key_embedding`, `category_logits`, `init_filter`, `optimize_filter`, `classify`, `iou_modulation`,
`iou_features`, `iou_features_window`, `predict_iou`. `__call__` is the training forward.

Mixed precision (`dtype='bfloat16'`, design.md §9.1): the backbone, the heads' convs / linear layers and the
category encoder compute in bfloat16 with float32 parameters; every stage method and the training forward return
float32, and the filter initialiser's pooling, the steepest-descent optimiser, the scores, `predict_iou`, the
InfoNCE-V embeddings' normalisation and all BatchNorm statistics are float32.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cia_jax.data.categories import NUM_CATEGORIES
from cia_jax.models.category import CategoryClassifier, CategoryEncoder
from cia_jax.models.dimp.classifier import LinearFilter
from cia_jax.models.instance import AngleModulator, ContrastiveProjector
from cia_jax.models.iou_net import AtomIoUNet
from cia_jax.models.layers import at_least_float32, compute_dtype
from cia_jax.models.resnet import ResNet, layer_channels

_STAGES = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet50": ("bottleneck", (3, 4, 6, 3))}


class CIANet(nn.Module):
  """CIA18 / CIA50 / DiMP18 / SuperDiMP as one configurable Flax module.

  Attributes:
    backbone_arch: 'resnet18' or 'resnet50'.
    backbone_width: ResNet base width (64 = the real networks; tests use 8 or 16).
    frozen_layers: backbone prefix kept frozen (SuperDiMP / CIA50: conv1, layer1, layer2).
    clf_arch: 'r18' (residual block + conv + L2 norm) or 'r50' (conv + L2 norm) classification features.
    clf_dim: D, classification feature channels (256 / 512; scaled down in tiny configs).
    num_iter: steepest-descent iterations in training (5).
    init_gauss_sigma: initial label-predictor sigma in feature cells (0.9 / 0.9167); with the hinge optimiser
      the sigma of its training labels.
    clf_optimizer: the classifier's filter optimiser, 'dimp' (DiMP's learnt steepest descent) or 'hinge'
      (SuperDiMP-simple's Gauss-Newton descent on tracker-supplied labels, the KeepTrack base, keeptrack.md §0).
    iou_dim: IoU-Net internal width (256 in the reference).
    category_classification: CC, the 70-way classifier on layer4.
    category_encoder: CE, the dictionary cross-attention on the classification input.
    contrastive: CL, InfoNCE-V embedding of the target.
    instance_encoder: IE, angle modulation of layer3 by the contrastive projector.
    num_known_categories: 70 = dictionary from the classifier weights; 0 = learned random dictionary.
    encoder_layers, encoder_heads, encoder_ffn, encoder_dropout: category-encoder shape (3, 4, 2048, 0.1).
    joint_backbone_batch: CIA runs the backbone once on all 6B crops (one BN batch); DiMP runs train and
      test crops separately (two BN batches).
    dtype: compute dtype, 'float32' or 'bfloat16' (mixed precision: parameters stay float32, see the module
      docstring).
    winograd: the 3x3 stride-1 convolutions of at least this many input channels in `WINOGRAD_MODULES`
      (backbone, contrastive projector, classification feature block) by Winograd's F(2x2, 3x3)
      (`ops/winograd.py`): same variables, same results up to float rounding, fewer multiplications; 0: none.
      The IoU-Net stays direct (on its small windows Winograd was slower, design.md §9.2). The tracker's
      `winograd_convs` / `winograd_min_channels` settings set it (`with_winograd`); training keeps the direct
      convolutions.
  """

  backbone_arch: str = "resnet18"
  backbone_width: int = 64
  frozen_layers: Sequence[str] = ()
  clf_arch: str = "r18"
  clf_dim: int = 256
  num_iter: int = 5
  init_gauss_sigma: float = 0.9
  clf_optimizer: str = "dimp"
  iou_dim: int = 256
  category_classification: bool = True
  category_encoder: bool = True
  contrastive: bool = True
  instance_encoder: bool = True
  num_known_categories: int = NUM_CATEGORIES
  encoder_layers: int = 3
  encoder_heads: int = 4
  encoder_ffn: int = 2048
  encoder_dropout: float = 0.1
  joint_backbone_batch: bool = True
  dtype: str = "float32"
  winograd: int = 0

  def setup(self):
    if self.backbone_arch not in _STAGES:
      raise ValueError(f"CIANet: backbone_arch must be one of {sorted(_STAGES)}, got {self.backbone_arch!r}")
    if self.category_encoder and self.num_known_categories not in (0, NUM_CATEGORIES):
      raise ValueError(f"CIANet: num_known_categories must be 0 or {NUM_CATEGORIES}, "
                       f"got {self.num_known_categories}")
    if self.category_encoder and self.num_known_categories and not self.category_classification:
      raise ValueError("CIANet: the category encoder's dictionary comes from the category classifier; "
                       "enable category_classification or set num_known_categories=0")
    block, stages = _STAGES[self.backbone_arch]
    chans = layer_channels(block, self.backbone_width)
    dtype = compute_dtype(self.dtype)
    self.backbone = ResNet(block, stages, width=self.backbone_width, frozen_layers=tuple(self.frozen_layers),
                           dtype=dtype, winograd=self.winograd)
    if self.contrastive or self.instance_encoder:
      self.proj = ContrastiveProjector(dtype=dtype, winograd=self.winograd)
    if self.instance_encoder:
      self.modulator = AngleModulator(dtype=dtype)
    if self.category_classification:
      self.upper_classifier = CategoryClassifier(dtype=dtype)
    if self.category_encoder:
      self.category_encoder_net = CategoryEncoder(
          num_layers=self.encoder_layers, num_heads=self.encoder_heads, ffn_dim=self.encoder_ffn,
          dropout_rate=self.encoder_dropout, num_known_categories=self.num_known_categories,
          dictionary_features=chans["layer4"], dtype=dtype, name="category_encoder")
    self.classifier = LinearFilter(arch=self.clf_arch, out_dim=self.clf_dim, in_dim=chans["layer3"],
                                   num_iter=self.num_iter, init_gauss_sigma=self.init_gauss_sigma,
                                   optimizer=self.clf_optimizer, dtype=dtype, winograd=self.winograd)
    self.bb_regressor = AtomIoUNet(input_dim=(chans["layer2"], chans["layer3"]),
                                   pred_input_dim=(self.iou_dim, self.iou_dim),
                                   pred_inter_dim=(self.iou_dim, self.iou_dim), dtype=dtype)

  # ----------------------------------------------------------------------------------------------
  # Stage methods.

  @property
  def needs_layer4(self) -> bool:
    return self.category_classification

  def backbone_features(self, images: jax.Array, train: bool, layers: Sequence[str] | None = None):
    """ResNet features of `[N, H, W, 3]` normalised images -> dict of `[N, h, w, C]` maps.

    layers: None = what this configuration uses (layer2, layer3, and layer4 with CC).
    """
    if layers is None:
      layers = ("layer2", "layer3") + (("layer4",) if self.needs_layer4 else ())
    feats = self.backbone(images, output_layers=tuple(layers), train=train)
    return {k: at_least_float32(v) for k, v in feats.items()}

  def classification_input_stages(self, layer3: jax.Array, deterministic: bool = True) -> dict[str, jax.Array]:
    """The three feature stages of the paper's Fig. 5, each `[N, H, W, C3]`.

    `backbone` = layer3, `instance` = after the [IE] angle modulation (= `backbone` when IE is off),
    `category` = after the [CE] category encoder (= `instance` when CE is off), i.e. the classifier's input.
    """
    instance = self.instance_stage(layer3)
    out = {"backbone": layer3, "instance": instance, "category": self.category_stage(instance, deterministic)}
    return {k: at_least_float32(v) for k, v in out.items()}

  def instance_stage(self, layer3: jax.Array) -> jax.Array:
    """[IE]: layer3 `[N, H, W, C3]` angle-modulated by its contrastive projection (layer3 when IE is off)."""
    return self.modulator(layer3, self.proj(layer3, padding=1)) if self.instance_encoder else layer3

  def category_stage(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
    """[CE]: the category encoder over the dictionary on `[N, H, W, C3]` (x when CE is off)."""
    if not self.category_encoder:
      return x
    dictionary = self.upper_classifier.dictionary() if self.num_known_categories else None
    return self.category_encoder_net(x, dictionary, deterministic=deterministic)

  def classification_input(self, layer3: jax.Array, deterministic: bool = True) -> jax.Array:
    """layer3 `[N, H, W, C3]` -> the classifier's input: [IE] angle modulation, then [CE] category encoder."""
    return self.classification_input_stages(layer3, deterministic)["category"]

  def classification_features(self, layer3: jax.Array, train: bool = False,
                              deterministic: bool = True) -> jax.Array:
    """layer3 `[N, H, W, C3]` -> DiMP classification features `[N, H, W, D]` (the tracker's path, design.md §5.8)."""
    return self.classifier.extract_classification_feat(self.classification_input(layer3, deterministic), train)

  def contrastive_embedding(self, layer3: jax.Array, box_xywh: jax.Array) -> jax.Array:
    """InfoNCE-V embedding `[N, C3]` (L2-normalised) of the target box `[N, 4]` on layer3 `[N, H, W, C3]`."""
    return self.proj.embed_target(layer3, box_xywh)

  def key_embedding(self, images: jax.Array, box_xywh: jax.Array, train: bool = True) -> jax.Array:
    """Key side of InfoNCE-V: backbone to layer3 + embedding. Apply with the EMA parameters.

    images: `[N, H, W, 3]`; box_xywh: `[N, 4]` crop pixels -> `[N, C3]`.
    """
    layer3 = self.backbone(images, output_layers=("layer3",), train=train)["layer3"]
    return self.contrastive_embedding(layer3, box_xywh)

  def category_logits(self, layer4: jax.Array, box_xywh: jax.Array) -> jax.Array:
    """Category logits `[N, 70]` of the box `[N, 4]` on layer4 `[N, H, W, C4]`."""
    return self.upper_classifier(layer4, box_xywh)

  def init_filter(self, feat: jax.Array, box_xywh: jax.Array) -> jax.Array:
    """Initial filter `[B, 4, 4, D]` from features `[Nimg, B, H, W, D]` and boxes `[Nimg, B, 4]`."""
    return self.classifier.init_filter(feat, box_xywh)

  def optimize_filter(self, filt, feat, box_xywh, sample_weight=None, num_iter=None, active_iter=None, label=None,
                      zero_empty_slots=True):
    """Steepest-descent refinement; see `LinearFilter.optimize_filter` (`active_iter`: traced count; `label`:
    the hinge optimiser's target labels; `zero_empty_slots`: False for finite weight-0 samples)."""
    return self.classifier.optimize_filter(filt, feat, box_xywh, sample_weight=sample_weight, num_iter=num_iter,
                                           active_iter=active_iter, label=label, zero_empty_slots=zero_empty_slots)

  def classify(self, filt: jax.Array, feat: jax.Array) -> jax.Array:
    """Scores `[Nimg, B, H + 1, W + 1]` of filters `[B, 4, 4, D]` on features `[Nimg, B, H, W, D]`."""
    return self.classifier.classify(filt, feat)

  def iou_modulation(self, layer2, layer3, box_xywh, train: bool = False):
    """IoU-Net modulation vectors (two `[B, iou_dim]`) from reference features and boxes `[B, 4]`."""
    return self.bb_regressor.get_modulation(layer2, layer3, box_xywh, train)

  def iou_features(self, layer2, layer3, train: bool = False):
    """IoU-Net test-branch features of `[N, ...]` layer2/layer3 maps."""
    return self.bb_regressor.get_iou_feat(layer2, layer3, train)

  def iou_features_window(self, layer2, layer3, start3_yx, start4_yx, size3: int, size4: int):
    """IoU-Net test-branch features on windows of the maps (eval mode); see `AtomIoUNet.get_iou_feat_window`."""
    return self.bb_regressor.get_iou_feat_window(layer2, layer3, start3_yx, start4_yx, size3, size4)

  def predict_iou(self, mod3, mod4, c3t, c4t, proposals_xywh, train: bool = False, origin3_yx=None,
                  origin4_yx=None):
    """Predicted IoU `[N, P]` of proposals `[N, P, 4]` (crop pixels); origins: corners of windowed features."""
    return self.bb_regressor.predict_iou(mod3, mod4, c3t, c4t, proposals_xywh, train, origin3_yx, origin4_yx)

  # ----------------------------------------------------------------------------------------------
  # Training forward.

  def __call__(self, train_images: jax.Array, test_images: jax.Array, train_box_xywh: jax.Array,
               test_box_xywh: jax.Array, test_proposals_xywh: jax.Array, train: bool = True,
               deterministic: bool = True) -> dict[str, jax.Array]:
    """Training forward of B sequences (frame-major layout, design.md §4.8).

    Args:
      train_images: `[Ntr, B, S, S, 3]` normalised template crops.
      test_images: `[Nte, B, S, S, 3]` normalised search crops.
      train_box_xywh: `[Ntr, B, 4]` target boxes in crop pixels.
      test_box_xywh: `[Nte, B, 4]` target boxes in crop pixels.
      test_proposals_xywh: `[Nte, B, P, 4]` IoU-Net proposals.
      train: BatchNorm batch statistics (and running-stat updates) vs running statistics.
      deterministic: disables dropout in the category encoder (False needs a 'dropout' rng).

    Returns:
      dict with `scores` `[num_iter + 1, Nte, B, f + 1, f + 1]`, `iou` `[Nte, B, P]`, and, when enabled,
      `category_logits` `[Ntr + Nte, B, 70]` and `query` `[(Ntr + Nte) * B, C3]` (frame-major rows).
    """
    for name, a in (("train_images", train_images), ("test_images", test_images)):
      if a.ndim != 5 or a.shape[-1] != 3:
        raise ValueError(f"CIANet: {name} must be [Nimg, B, S, S, 3], got shape {a.shape}")
    ntr, b = train_images.shape[:2]
    nte = test_images.shape[0]
    if test_images.shape[1] != b or train_box_xywh.shape != (ntr, b, 4) or test_box_xywh.shape != (nte, b, 4):
      raise ValueError(f"CIANet: inconsistent shapes: train_images {train_images.shape}, test_images "
                       f"{test_images.shape}, train_box_xywh {train_box_xywh.shape}, test_box_xywh "
                       f"{test_box_xywh.shape}")
    flat = lambda x: x.reshape(-1, *x.shape[2:])
    boxes = jnp.concatenate([flat(train_box_xywh), flat(test_box_xywh)])  # [(Ntr + Nte) * B, 4]
    if self.joint_backbone_batch:
      feats = self.backbone_features(jnp.concatenate([flat(train_images), flat(test_images)]), train)
      split = lambda x: (x[:ntr * b].reshape(ntr, b, *x.shape[1:]), x[ntr * b:].reshape(nte, b, *x.shape[1:]))
      tr, te = {k: split(v)[0] for k, v in feats.items()}, {k: split(v)[1] for k, v in feats.items()}
    else:
      tr_flat = self.backbone_features(flat(train_images), train)
      te_flat = self.backbone_features(flat(test_images), train)
      feats = {k: jnp.concatenate([tr_flat[k], te_flat[k]]) for k in tr_flat}
      tr = {k: v.reshape(ntr, b, *v.shape[1:]) for k, v in tr_flat.items()}
      te = {k: v.reshape(nte, b, *v.shape[1:]) for k, v in te_flat.items()}

    out = {}
    if self.category_classification:  # Before the encoder: the dictionary reads clf_fc's parameters.
      out["category_logits"] = self.category_logits(feats["layer4"], boxes).reshape(ntr + nte, b, -1)
    if self.contrastive:
      out["query"] = self.contrastive_embedding(feats["layer3"], boxes)

    # Classification path: modulation + category encoder jointly on all crops (per-pixel, no
    # cross-image interaction), then the DiMP feature block in two BN batches (train, test).
    clf_in = self.classification_input(feats["layer3"], deterministic)
    clf_tr = clf_in[:ntr * b].reshape(ntr, b, *clf_in.shape[1:])
    clf_te = clf_in[ntr * b:].reshape(nte, b, *clf_in.shape[1:])
    out["scores"] = self.classifier(clf_tr, clf_te, train_box_xywh, train=train)
    out["iou"] = self.bb_regressor(tr["layer2"], tr["layer3"], te["layer2"], te["layer3"], train_box_xywh,
                                   test_proposals_xywh, train=train)
    return out


def build_model(model_config, dtype: str | None = None) -> CIANet:
  """`CIANet` from a mapping of its attributes (a ConfigDict, or JSON read back from a checkpoint).

  Lists become tuples (the module must stay hashable: it is a static argument of jitted functions);
  unknown keys raise a ValueError that names them. `dtype` ('float32' / 'bfloat16'), when given, overrides
  the config's compute dtype (the same weights run in either).
  """
  known = {f.name for f in dataclasses.fields(CIANet)} - {"parent", "name"}
  cfg = dict(model_config)
  if dtype is not None:
    cfg["dtype"] = dtype
  compute_dtype(cfg.get("dtype", "float32"))  # a bad name fails here, not at the first trace
  unknown = sorted(set(cfg) - known)
  if unknown:
    raise ValueError(f"model config: unknown CIANet field(s) {unknown}; known: {sorted(known)}")
  return CIANet(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})


def with_dtype(net: CIANet, dtype: str) -> CIANet:
  """`net` computing in `dtype` ('float32' / 'bfloat16'); the same module when it already does (no recompile).

  The tracker's `compute_dtype` setting goes through this: the variables (float32) fit either.
  """
  compute_dtype(dtype)
  return net if getattr(net, "dtype", "float32") == dtype else net.clone(dtype=dtype)


# The submodules (parameter subtrees) whose eligible convolutions `CIANet.winograd` computes by Winograd.
WINOGRAD_MODULES = ("backbone", "proj", "classifier")


def with_winograd(net: CIANet, min_channels: int) -> CIANet:
  """`net` with its 3x3 stride-1 convolutions of at least `min_channels` input channels by Winograd's F(2x2, 3x3)
  (0: none); the same module when it already does (no recompile), and a network without the option (a stand-in)
  as it is. The tracker's `winograd_convs` / `winograd_min_channels` settings go through this."""
  if not hasattr(net, "winograd") or net.winograd == min_channels:
    return net
  return net.clone(winograd=min_channels)


def init_variables(net, key, image_size: int = 64, num_proposals: int = 2) -> dict:
  """Random `{'params', 'batch_stats'}` of a `CIANet`, from a dummy 1-sequence training forward.

  Variable shapes do not depend on `image_size` (64 px keeps every map >= 1 cell); jitted, so it costs one
  compilation. Under `jax.eval_shape` it gives the abstract tree. BatchNorm statistics stay at their initial
  0 / 1. `key` splits into the params and dropout streams.
  """
  s = int(image_size)
  imgs = jnp.zeros((3, 1, s, s, 3), jnp.float32)
  box = jnp.broadcast_to(jnp.asarray([s / 4, s / 4, s / 2, s / 2], jnp.float32), (3, 1, 4))
  props = jnp.broadcast_to(box[:, :, None], (3, 1, num_proposals, 4))

  @jax.jit
  def init(k):
    params_key, dropout_key = jax.random.split(k)
    return net.init({"params": params_key, "dropout": dropout_key}, imgs, imgs, box, box, props, train=False)

  variables = init(key)
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def random_variables(net, seed: int = 0) -> dict:
  """Random `{'params', 'batch_stats'}` of a `CIANet` drawn with NumPy: nothing is compiled (the tree comes from
  `jax.eval_shape` of `init_variables`), for tests and speed checks that need *some* weights quickly.

  Kernels (rank >= 2, not named bias) He-normal N(0, 2 / fan_in) (fan_in = all axes but the last; the
  attention's query / key / value kernels `[C, heads, head_dim]`: C), other parameters N(0, 0.01^2), BatchNorm /
  LayerNorm scales 1 and running statistics 0 / 1. Not the reference's initialisation (`init_variables` is).
  """
  shapes = jax.eval_shape(lambda k: init_variables(net, k), jax.random.key(0))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = jax.tree_util.keystr(path)
    if name.startswith("['batch_stats']"):
      return np.full(leaf.shape, 1.0 if name.endswith("['var']") else 0.0, np.float32)
    if name.endswith("['scale']"):
      return np.ones(leaf.shape, np.float32)
    if len(leaf.shape) >= 2 and not name.endswith("['bias']"):
      fan_in = leaf.shape[0] if re.search(r"\['(query|key|value)'\]", name) else int(np.prod(leaf.shape[:-1]))
      return rng.normal(0.0, np.sqrt(2.0 / fan_in), leaf.shape).astype(np.float32)
    return rng.normal(0.0, 0.01, leaf.shape).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)

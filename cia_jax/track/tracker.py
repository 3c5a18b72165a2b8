"""The online DiMP / CIA tracker (design.md §5) as two jitted pure functions over a fixed-shape state.

    state = init(model, settings, first_image, box_xywh, key)
    state, out = step(model, settings, state, image, key)      # out: box_xywh, max_score, flag (, score_map)

`settings` (a frozen `TrackerSettings`) and `model.net` are static: one compilation per image size, no
host synchronisation inside a sequence. Every value-dependent decision of the reference (localisation
flags, IoU-Net bail-out, memory slot, number of filter iterations) is a `jnp.where` / `lax.cond` /
`lax.while_loop` over fixed shapes, so `jax.vmap` over states, images and keys batches whole sequences (one
array shape; frames of different true sizes padded to it, with `image_sz_yx`). The filter update runs a
traced number of steepest-descent iterations (0 / 1 / 2): a single-sequence step runs exactly that many (none
at all on most frames); a batched step updates its sequences one after the other, each with its own count.
The un-jitted `init_impl` / `step_impl` are the functions to `vmap` (or to run under `jax.disable_jit`).

Randomness (design.md §5.4, 5.6): `init`'s key draws the transforms' random shifts and the channel-dropout masks,
`step`'s key the 9 jittered IoU-Net boxes; with `settings.deterministic` the keys are unused.

Coordinates (design.md §5.2, design.md §D7): positions and sizes are (y, x) / (h, w) in full-image pixels, the
centre of box (x, y, w, h) is (y + (h - 1) / 2, x + (w - 1) / 2). Boxes inside a patch are (x, y, w, h) in
patch pixels of the S x S network input. The CIA feature path (angle modulation + category encoder) comes
from `CIANet.classification_features`; IoU-Net always sees the plain layer2/layer3 maps.

KeepTrack / CIA50-tcm (`settings.use_tcm`, presets keeptrack / keeptrack_fast / cia50_tcm): the same step with
KeepTrack's target candidate matching, `cia_jax.track.keeptrack` (state in `TrackerState.tcm`, association net
in `TrackingModel.tcm_net` / `tcm_variables`). With `use_tcm` off none of it is traced.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from cia_jax.models.cia import WINOGRAD_MODULES, CIANet, with_dtype, with_winograd
from cia_jax.ops import winograd
from cia_jax.ops.crop import sample_patch, sample_pos_scale
from cia_jax.ops.dtypes import default_float
from cia_jax.ops.image import IMAGENET_MEAN as IMAGE_MEAN, IMAGENET_STD as IMAGE_STD, gaussian_label_at
from cia_jax.track import augment, keeptrack
from cia_jax.track.memory import SampleMemory, init_memory, update_memory
from cia_jax.track.params import TrackerSettings

FLAG_NORMAL, FLAG_UNCERTAIN, FLAG_HARD_NEGATIVE, FLAG_NOT_FOUND = 0, 1, 2, 3
FLAG_NAMES = ("normal", "uncertain", "hard_negative", "not_found")


@flax.struct.dataclass
class TrackingModel:
  """A network and its variables. `net` is static (hashable Flax module), `variables` a pytree
  `{'params': ..., 'batch_stats': ...}` (leaves traced, so new weights do not recompile).

  KeepTrack / CIA50-tcm (`settings.use_tcm`) also need the target candidate association network: `tcm_net`
  (static, e.g. `cia_jax.models.tcm.TargetCandidateMatchingNet`, or a stand-in with the same methods, see
  `cia_jax.track.keeptrack`) and its `tcm_variables`. Both stay None for the DiMP / CIA trackers.

  `variables` may also hold the Winograd kernels of `prepare` (collection 'winograd').
  """

  net: CIANet = flax.struct.field(pytree_node=False)
  variables: Any = None
  tcm_net: Any = flax.struct.field(pytree_node=False, default=None)
  tcm_variables: Any = None


@flax.struct.dataclass
class TrackerState:
  """Everything the tracker carries between frames; fixed shapes and dtypes only.

  Attributes:
    pos_yx: `[2]` target centre (y, x), full-image pixels.
    target_sz_yx: `[2]` target size (h, w), full-image pixels.
    target_scale: scalar, full-image pixels per patch pixel of the search patch (S * scale = crop side).
    base_target_sz_yx: `[2]` target size at scale 1 (target_sz / initial target_scale).
    image_sz_yx: `[2]` float true image size (H, W) (a padded frame array may be larger).
    filter: `[4, 4, D]` target-classifier filter.
    memory: `SampleMemory` of the training samples.
    iou_mod3, iou_mod4: `[iou_dim]` IoU-Net modulation vectors of the first frame.
    frame_num: int32, 1 after `init`, +1 per `step`.
    pos_iounet: `[2]` last IoU-Net-refined centre; has_pos_iounet: bool, whether one exists.
    tcm: `cia_jax.track.keeptrack.TcmState` with `settings.use_tcm`, else None (no leaves).
  """

  pos_yx: jax.Array
  target_sz_yx: jax.Array
  target_scale: jax.Array
  base_target_sz_yx: jax.Array
  image_sz_yx: jax.Array
  filter: jax.Array
  memory: SampleMemory
  iou_mod3: jax.Array
  iou_mod4: jax.Array
  frame_num: jax.Array
  pos_iounet: jax.Array
  has_pos_iounet: jax.Array
  tcm: Any = None


# --------------------------------------------------------------------------------------------------
# Network stages.

def _apply(model: TrackingModel, method: str, *args, **kwargs):
  # The net's own class: a CIANet subclass may override a stage (tests build known score maps this way).
  return model.net.apply(model.variables, *args, method=getattr(type(model.net), method), **kwargs)


def prepare(model: TrackingModel) -> TrackingModel:
  """`model` with its 3x3 kernels transformed once for `settings.winograd_convs` (`winograd.prepare_variables`),
  so the step does not transform them at every frame. Call it where a model is loaded, outside `jit`;
  idempotent. An unprepared model tracks alike, only more slowly with `winograd_convs`."""
  modules = WINOGRAD_MODULES if isinstance(model.net, CIANet) else None
  return model.replace(variables=winograd.prepare_variables(model.variables, modules))


def normalize_image(patches: jax.Array) -> jax.Array:
  """RGB 0..255 `[..., 3]` -> (x / 255 - mean) / std (design.md §1.4)."""
  mean = jnp.asarray(IMAGE_MEAN, default_float())
  std = jnp.asarray(IMAGE_STD, default_float())
  return (patches / 255.0 - mean) / std


def extract_features(model: TrackingModel, patches: jax.Array):
  """Patches `[N, S, S, 3]` (0..255) -> (layer2 `[N, S/8, S/8, C2]`, layer3 `[N, S/16, S/16, C3]`,
  classification features `[N, S/16, S/16, D]` (the network's CIA / DiMP path, eval mode))."""
  feats = _apply(model, "backbone_features", normalize_image(patches), False, ("layer2", "layer3"))
  clf = _apply(model, "classification_features", feats["layer3"], False, True)
  return feats["layer2"], feats["layer3"], clf


def layer3_channels(model: TrackingModel) -> int:
  """Channels of the network's layer3 (the input of the association net's descriptor conv), without compute."""
  shapes = jax.eval_shape(lambda: extract_features(model, jnp.zeros((1, 64, 64, 3), default_float())))
  return int(shapes[1].shape[-1])


def patch_box(pos_yx, sz_yx, sample_pos_yx, sample_scale, patch_size: int) -> jax.Array:
  """Box `[4]` (x, y, w, h) in patch pixels of the target (pos, sz) in a patch at (sample_pos, scale) (5.2)."""
  center = (pos_yx - sample_pos_yx) / sample_scale + (patch_size - 1) / 2.0
  size = sz_yx / sample_scale
  tl = center - (size - 1.0) / 2.0
  return jnp.concatenate([tl[::-1], size[::-1]])


def output_box(pos_yx, sz_yx) -> jax.Array:
  """Image box `[4]` (x, y, w, h) of centre (y, x) and size (h, w)."""
  return jnp.concatenate([pos_yx[::-1] - (sz_yx[::-1] - 1.0) / 2.0, sz_yx[::-1]])


def takes_labels(model: TrackingModel) -> bool:
  """Whether the network's filter optimiser learns from tracker-supplied labels (SuperDiMP-simple's hinge
  optimiser, keeptrack.md §0); then the memory keeps every sample's label."""
  return getattr(model.net, "clf_optimizer", "dimp") == "hinge"


def sample_labels(settings: TrackerSettings, offset_px_yx, base_target_sz_yx, feat_hw, kernel_sz: int):
  """Gaussian target labels `[..., Ho, Wo]` of samples whose target centre lies `offset_px_yx` `[..., 2]` patch
  pixels from the patch centre (the reference's `init_target_labels` / `get_label_function`): sigma =
  output_sigma_factor * sqrt(prod(f / S * base_target_sz)) cells, f = feature side, S = patch side."""
  s = settings.image_sample_size
  cells = jnp.asarray(feat_hw, default_float()) / s
  sigma = settings.output_sigma_factor * jnp.sqrt(jnp.prod(cells * base_target_sz_yx))
  return gaussian_label_at(jnp.asarray(offset_px_yx, default_float()) / s, sigma, feat_hw, kernel_sz)


# --------------------------------------------------------------------------------------------------
# Initialisation (design.md §5.4).

def _as_frame(image) -> jax.Array:
  """A frame as a jax array in its own dtype (uint8 stays uint8: `sample_patch` converts only what it reads)."""
  image = jnp.asarray(image)
  if image.ndim != 3:
    raise ValueError(f"tracker: image must be [H, W, C], got shape {image.shape}")
  return image


def true_image_size(image: jax.Array, image_sz_yx=None) -> jax.Array:
  """`[2]` float (h, w): `image_sz_yx` (the true size of a padded frame) or the array's own (H, W)."""
  if image_sz_yx is None:
    return jnp.asarray(image.shape[:2], default_float())
  sz = jnp.asarray(image_sz_yx, default_float())
  if sz.shape != (2,):
    raise ValueError(f"tracker: image_sz_yx must be [2] (h, w), got shape {sz.shape}")
  return sz

def for_settings(model: TrackingModel, settings: TrackerSettings) -> TrackingModel:
  """`model` with the network as `settings` runs it: `compute_dtype` and the Winograd settings. `init` and `step`
  apply it themselves, so every caller (runner, lanes, VOT, video, export) gets them; profilers use it to run
  a stage as the step does."""
  wino = settings.winograd_min_channels if settings.winograd_convs else 0
  net = with_winograd(with_dtype(model.net, settings.compute_dtype), wino)
  return model.replace(net=net)


def init_impl(model: TrackingModel, settings: TrackerSettings, image, box_xywh, key,
              image_sz_yx=None) -> TrackerState:
  """Un-jitted `init` (for `jax.vmap` / `jax.disable_jit`); see `init`."""
  model = for_settings(model, settings)
  image = _as_frame(image)
  box = jnp.asarray(box_xywh, default_float())
  s = settings.image_sample_size
  pos = jnp.stack([box[1] + (box[3] - 1.0) / 2.0, box[0] + (box[2] - 1.0) / 2.0])
  target_sz = jnp.stack([box[3], box[2]])
  image_sz = true_image_size(image, image_sz_yx)
  target_scale = jnp.sqrt(jnp.prod(target_sz * settings.search_area_scale)) / s
  base_sz = target_sz / target_scale

  # Expanded patch at the rounded centre, always with replicate padding, then the 13 transforms. Only
  # border_mode 'inside' shrinks the init scale and shifts every sample towards where the shrunk, shifted
  # search crop would see the target; 'inside_major' and 'replicate' use target_scale and no shift.
  init_pos = jnp.round(pos)
  init_scale, global_shift = target_scale, None
  if settings.border_mode == "inside":
    sample_sz = target_scale * jnp.asarray([s, s], default_float())
    shrink = jnp.maximum(jnp.max(sample_sz / image_sz), 1.0)
    if settings.patch_max_scale_change is not None:
      shrink = jnp.minimum(shrink, settings.patch_max_scale_change)
    sample_sz = sample_sz / shrink
    init_scale = jnp.sqrt(jnp.prod(sample_sz / s))
    tl, br = pos - (sample_sz - 1.0) / 2.0, pos + sample_sz / 2.0 + 1.0
    global_shift = -(jnp.maximum(-tl, 0.0) - jnp.maximum(br - image_sz, 0.0)) / init_scale
  e = augment.expanded_size(settings)
  expanded, _ = sample_patch(image, init_pos, init_scale * e, (e, e), "replicate", rule=settings.crop_rule,
                             image_sz_yx=image_sz)
  k_shift, k_drop = jax.random.split(key)
  patches, shifts = augment.augment_init_patches(expanded, settings, k_shift, global_shift)
  layer2, layer3, x = extract_features(model, patches)
  x = jnp.concatenate([x, augment.dropout_copies(x[0], settings, k_drop)])  # [15, f, f, D]

  box0 = patch_box(pos, target_sz, init_pos, init_scale, s)  # before any shift
  moves = jnp.concatenate([shifts[:, ::-1].astype(default_float()), jnp.zeros_like(shifts, default_float())], axis=1)
  moves = jnp.concatenate([moves, jnp.broadcast_to(moves[:1], (settings.aug_dropout_num, 4))])  # copies of 0
  boxes = box0 + moves  # [15, 4]

  filt = _apply(model, "init_filter", x[:, None], boxes[:, None])
  labels = None
  if takes_labels(model):  # target at (pos - init_pos) / init_scale from the patch centre, moved by each shift
    offsets = (pos - init_pos) / init_scale + moves[:, 1::-1]
    labels = sample_labels(settings, offsets, base_sz, x.shape[1:3], filt.shape[1])
  filt, _, _ = _apply(model, "optimize_filter", filt, x[:, None], boxes[:, None], None, settings.net_opt_iter,
                      label=None if labels is None else labels[:, None])
  memory = init_memory(x, boxes, settings.sample_memory_size, labels)
  mod3, mod4 = _apply(model, "iou_modulation", layer2[:1], layer3[:1], boxes[:1])
  tcm = keeptrack.init_tcm_state(settings, model.tcm_net) if settings.use_tcm else None
  return TrackerState(
      pos_yx=pos, target_sz_yx=target_sz, target_scale=target_scale, base_target_sz_yx=base_sz,
      image_sz_yx=image_sz, filter=filt[0], memory=memory, iou_mod3=mod3[0], iou_mod4=mod4[0],
      frame_num=jnp.asarray(1, jnp.int32), pos_iounet=pos, has_pos_iounet=jnp.asarray(False), tcm=tcm)


# --------------------------------------------------------------------------------------------------
# Localisation (design.md §5.5 step 2).

def localize(scores: jax.Array, settings: TrackerSettings, pos_yx, target_sz_yx, sample_pos_yx, sample_scale):
  """Advanced localisation on raw scores `[G, G]` (design.md §5.5 a-f).

  Returns (translation `[2]` (y, x) in full-image pixels from sample_pos, flag int32 (FLAG_*)).
  """
  g_h, g_w = scores.shape
  grid = jnp.asarray([g_h, g_w], default_float())
  out_sz = grid - 1.0  # f: score grid minus the even-kernel extra cell.
  center = (grid - 1.0) / 2.0
  step = (settings.image_sample_size / out_sz) * sample_scale  # full-image pixels per score cell

  def peak(s):
    i = jnp.argmax(s.reshape(-1))
    return s.reshape(-1)[i], jnp.stack([i // g_w, i % g_w]).astype(default_float())

  m1, d1 = peak(scores)
  t1 = (d1 - center) * step
  if not settings.advanced_localization:
    return t1, jnp.asarray(FLAG_NORMAL, jnp.int32)  # The reference's flag None: never 'not_found'.

  # Zero the target neighbourhood and look for a second mode.
  nh = settings.target_neighborhood_scale * (target_sz_yx / sample_scale) * (out_sz / settings.image_sample_size)
  lo = jnp.maximum(jnp.round(d1 - nh / 2.0), 0.0)
  hi = jnp.minimum(jnp.round(d1 + nh / 2.0 + 1.0), grid)
  rows = jnp.arange(g_h, dtype=default_float())[:, None]
  cols = jnp.arange(g_w, dtype=default_float())[None, :]
  inside = (rows >= lo[0]) & (rows < hi[0]) & (cols >= lo[1]) & (cols < hi[1])
  m2, d2 = peak(jnp.where(inside, 0.0, scores))
  t2 = (d2 - center) * step
  prev = (pos_yx - sample_pos_yx) / step
  n1 = jnp.linalg.norm(d1 - center - prev)
  n2 = jnp.linalg.norm(d2 - center - prev)
  thr = settings.displacement_scale * math.sqrt(g_h * g_w) / 2.0

  distractor = m2 > settings.distractor_threshold * m1
  take2 = (n2 < thr) & (n1 > thr)
  distractor_flag = jnp.where(((n2 > thr) & (n1 < thr)) | take2, FLAG_HARD_NEGATIVE, FLAG_UNCERTAIN)
  weak_hn = (m2 > settings.hard_negative_threshold * m1) & (m2 > settings.target_not_found_threshold)
  flag = jnp.where(distractor, distractor_flag, jnp.where(weak_hn, FLAG_HARD_NEGATIVE, FLAG_NORMAL))
  translation = jnp.where(distractor & take2, t2, t1)
  # Early exits of the reference, in its order (thresholds -inf by default).
  flag = jnp.where(m1 < settings.hard_sample_threshold, FLAG_HARD_NEGATIVE, flag)
  flag = jnp.where(m1 < settings.uncertain_threshold, FLAG_UNCERTAIN, flag)
  flag = jnp.where(m1 < settings.target_not_found_threshold, FLAG_NOT_FOUND, flag)
  translation = jnp.where(m1 < max(settings.hard_sample_threshold, settings.uncertain_threshold,
                                   settings.target_not_found_threshold), t1, translation)
  return translation, flag.astype(jnp.int32)


# --------------------------------------------------------------------------------------------------
# IoU-Net refinement (design.md §5.6).

def _rect_to_rel(b, sz_norm):
  c = b[..., :2] + 0.5 * b[..., 2:]
  return jnp.concatenate([c / sz_norm, jnp.log(b[..., 2:])], axis=-1)


def _rel_to_rect(r, sz_norm):
  sz = jnp.exp(r[..., 2:])
  return jnp.concatenate([r[..., :2] * sz_norm - 0.5 * sz, sz], axis=-1)


def refine_boxes(model: TrackingModel, settings: TrackerSettings, mod3, mod4, c3t, c4t, boxes_xywh, window=None):
  """Gradient ascent of the predicted IoU, each box independently (design.md §5.6 step 3).

  'default' space: b <- b + step * grad_b * (w, h, w, h); 'relative': r = (cx / w0, cy / h0, log w, log h)
  with (w0, h0) the first box's size, r <- r + step * grad_r; step *= decay after every iteration.
  mod3/mod4: `[iou_dim]`; c3t/c4t: `[1, h, w, iou_dim]` (windows when `window` is given); boxes_xywh: `[P, 4]`
  patch pixels. window: None or `_IoUWindow` (the corners of windowed c3t / c4t).
  Returns (boxes after the last step `[P, 4]`, scores of the last forward pass (before that step) `[P]`,
  whether every box a forward pass pooled lay inside the window (True without one)).
  """
  origins = {} if window is None else {"origin3_yx": window.corner3_yx[None], "origin4_yx": window.corner4_yx[None]}

  def scores_of(b):
    return _apply(model, "predict_iou", mod3[None], mod4[None], c3t, c4t, b[None], False, **origins)[0]

  def inside(b):
    return jnp.asarray(True) if window is None else window.holds(b)

  steps = jnp.asarray([settings.box_refinement_step_length * settings.box_refinement_step_decay**i
                       for i in range(settings.box_refinement_iter)], default_float())
  if settings.box_refinement_iter == 0:
    return boxes_xywh, scores_of(boxes_xywh), inside(boxes_xywh)
  if settings.box_refinement_space == "default":
    def body(carry, step):
      b, ok = carry
      out, vjp = jax.vjp(scores_of, b)
      (g,) = vjp(jnp.ones_like(out))
      return (b + step * g * jnp.concatenate([b[:, 2:], b[:, 2:]], axis=1), ok & inside(b)), out
    (boxes, ok), outs = jax.lax.scan(body, (boxes_xywh, jnp.asarray(True)), steps)
    return boxes, outs[-1], ok
  sz_norm = boxes_xywh[:1, 2:]

  def body_rel(carry, step):
    r, ok = carry
    out, vjp = jax.vjp(lambda rr: scores_of(_rel_to_rect(rr, sz_norm)), r)
    (g,) = vjp(jnp.ones_like(out))
    return (r + step * g, ok & inside(_rel_to_rect(r, sz_norm))), out
  (rel, ok), outs = jax.lax.scan(body_rel, (_rect_to_rel(boxes_xywh, sz_norm), jnp.asarray(True)), steps)
  return _rel_to_rect(rel, sz_norm), outs[-1], ok


@flax.struct.dataclass
class _IoUWindow:
  """Square windows of the IoU-Net test maps (stride 8 and 16) that hold a frame's boxes (design.md §5.6).

  The box ascent pools the modulated test features over its boxes only; PrRoIPool's weights vanish one cell
  beyond a box, so the features outside a window around the boxes are never read. A box `holds` when its
  weights vanish outside both windows (a window at the map's edge reaches the map's padding).
  """
  corner3_yx: jax.Array  # [2] int32
  corner4_yx: jax.Array  # [2] int32
  size3: int = flax.struct.field(pytree_node=False)
  size4: int = flax.struct.field(pytree_node=False)
  length3: int = flax.struct.field(pytree_node=False)  # map side (cells)
  length4: int = flax.struct.field(pytree_node=False)

  def _levels(self):
    return ((self.corner3_yx, self.size3, self.length3, 1.0 / 8), (self.corner4_yx, self.size4, self.length4, 1.0 / 16))

  def holds(self, boxes_xywh, margin: float = 1e-3):
    """Whether every box `[P, 4]` (patch pixels) pools inside the windows with `margin` cells to spare (the
    default covers the pooling's last bin edge, x1 + width, rounding a little above x2)."""
    ok = jnp.asarray(True)
    for corner_yx, size, length, scale in self._levels():
      corner = corner_yx[::-1].astype(boxes_xywh.dtype)  # (x, y)
      lo = boxes_xywh[:, :2] * scale
      hi = (boxes_xywh[:, :2] + boxes_xywh[:, 2:]) * scale
      ok_lo = (corner == 0) | (lo >= corner + margin)
      ok_hi = (corner + size == length) | (hi <= corner + size - 1 - margin)
      ok = ok & jnp.all(ok_lo & ok_hi)
    return ok

  @classmethod
  def around(cls, boxes_xywh, size3: int, size4: int, length3: int, length4: int) -> "_IoUWindow":
    """Windows centred on the union of the boxes `[P, 4]`, shifted inside the maps."""
    lo = jnp.min(boxes_xywh[:, :2], axis=0)
    hi = jnp.max(boxes_xywh[:, :2] + boxes_xywh[:, 2:], axis=0)
    def corner(size, length, scale):
      # `holds` wants lo >= c and hi <= c + size - 1 (cells): c in the middle of that range.
      c = jnp.round(0.5 * ((lo + hi) * scale + 1 - size))
      return jnp.clip(c, 0, length - size).astype(jnp.int32)[::-1]
    return cls(corner(size3, length3, 1.0 / 8), corner(size4, length4, 1.0 / 16), size3, size4, length3, length4)


def refine_whole_maps(model, settings, mod3, mod4, layer2, layer3, boxes):
  """IoU-Net features on the whole maps + box ascent: (boxes `[P, 4]`, scores `[P]`) as `refine_boxes`."""
  c3t, c4t = _apply(model, "iou_features", layer2, layer3)
  out_boxes, out_iou, _ = refine_boxes(model, settings, mod3, mod4, c3t, c4t, boxes)
  return out_boxes, out_iou


# Cells a window keeps beyond the initial boxes, for the ascent's moves (which rarely reach a cell on real
# sequences, BENCHMARKS.md); an ascent that leaves the window anyway falls back to the whole maps.
_WINDOW_SPARE = 0.5


def window_sizes(settings, length3: int, length4: int) -> list[tuple[int, int]]:
  """The window sizes (cells) of `settings.iou_feature_windows` smaller than the maps, smallest first."""
  sizes = [(min(w8 // 8, length3), min(w16 // 16, length4)) for w8, w16 in settings.iou_feature_windows]
  return [w for w in sizes if w != (length3, length4)]


def _window_plan(settings, layer2, layer3, boxes, needed):
  """(branch, windows): `_IoUWindow`s of every size around the initial boxes `[P, 4]`, and which branch of
  `_refine` runs: 0 nothing (not `needed`), 1 + i the first window that holds the boxes with `_WINDOW_SPARE`
  cells to spare, 1 + len(windows) none holds them."""
  length3, length4 = layer2.shape[1], layer3.shape[1]
  windows = [_IoUWindow.around(boxes, n3, n4, length3, length4) for n3, n4 in window_sizes(settings, length3, length4)]
  branch = jnp.asarray(1 + len(windows), jnp.int32)
  for i in reversed(range(len(windows))):
    branch = jnp.where(windows[i].holds(boxes, margin=_WINDOW_SPARE), 1 + i, branch)
  return jnp.where(needed, branch, 0), windows


def _refine_windowed(model, settings, mod3, mod4, layer2, layer3, boxes, window):
  c3w, c4w = _apply(model, "iou_features_window", layer2, layer3, window.corner3_yx[None], window.corner4_yx[None],
                    window.size3, window.size4)
  return refine_boxes(model, settings, mod3, mod4, c3w, c4w, boxes, window)


def refine_in_window(model, settings, mod3, mod4, layer2, layer3, boxes, index: int = 0):
  """The box ascent on window size `index` of `window_sizes` around the boxes `[P, 4]`, without the fallback:
  (boxes, scores, whether the ascent stayed inside). What `_refine` runs when that size holds the boxes."""
  length3, length4 = layer2.shape[1], layer3.shape[1]
  size3, size4 = window_sizes(settings, length3, length4)[index]
  window = _IoUWindow.around(boxes, size3, size4, length3, length4)
  return _refine_windowed(model, settings, mod3, mod4, layer2, layer3, boxes, window)


def _refine(model, settings, mod3, mod4, layer2, layer3, boxes, needed):
  """IoU-Net features + box ascent; returns (boxes `[P, 4]`, scores `[P]`) as `refine_boxes`.

  needed: bool; False (a `not_found` frame, whose refinement the reference skips and the step discards) skips
  the work and returns the input boxes with scores 0.
  With `settings.iou_feature_windows` the features are computed on the smallest windows around the boxes that
  hold them (`_IoUWindow`), and on the whole maps when none does or the ascent leaves them (the windowed work
  is then discarded). Both give the same boxes up to float32 rounding: the pooling reads the same cells with
  the same weights, its sums just skip the zero terms outside the window. Under
  `vmap` (lanes) the branch is chosen for the whole batch (the largest any sequence needs), so the `cond`s stay
  branches instead of selects that would run every branch.
  """
  def full(net, m3, m4, l2, l3, bx):
    return refine_whole_maps(net, settings, m3, m4, l2, l3, bx)

  def windowed(window, net, m3, m4, l2, l3, bx):
    return _refine_windowed(net, settings, m3, m4, l2, l3, bx, window)

  def unrefined(bx, lead: tuple, done: bool):  # the branches that do not refine (`done`: no fallback either)
    p = bx.shape[-2]
    return (jnp.broadcast_to(bx, lead + (p, 4)) if done else jnp.zeros(lead + (p, 4), bx.dtype),
            jnp.zeros(lead + (p,), bx.dtype), jnp.asarray(done))

  @jax.custom_batching.custom_vmap
  def refine(net, m3, m4, l2, l3, bx, need):
    branch, windows = _window_plan(settings, l2, l3, bx, need)
    args = (net, m3, m4, l2, l3, bx)
    b, sc, ok = jax.lax.switch(branch, [functools.partial(unrefined, bx, (), True),
                                        *[functools.partial(windowed, w, *args) for w in windows],
                                        functools.partial(unrefined, bx, (), False)])
    return jax.lax.cond(ok, lambda: (b, sc), lambda: full(*args))

  @refine.def_vmap
  def refine_batched(axis_size, in_batched, net, m3, m4, l2, l3, bx, need):
    args = (net, m3, m4, l2, l3, bx)
    axes = tuple(jax.tree.map(lambda b: 0 if b else None, x) for x in in_batched)
    branch, windows = jax.vmap(lambda *a: _window_plan(settings, a[3], a[4], a[5], a[6]), in_axes=axes)(*args, need)

    def run_windowed(window):
      b, sc, ok = jax.vmap(windowed, in_axes=(0,) + axes[:6])(window, *args)
      return b, sc, jnp.all(ok)
    b, sc, ok = jax.lax.switch(jnp.max(branch), [functools.partial(unrefined, bx, (axis_size,), True),
                                                 *[functools.partial(run_windowed, w) for w in windows],
                                                 functools.partial(unrefined, bx, (axis_size,), False)])
    out = jax.lax.cond(ok, lambda: (b, sc), lambda: jax.vmap(full, in_axes=axes[:6])(*args))
    return out, (True, True)

  return refine(model, mod3, mod4, layer2, layer3, boxes, jnp.asarray(needed))


def refine_target(model: TrackingModel, settings: TrackerSettings, state: TrackerState, layer2, layer3,
                  pos_yx, target_sz_yx, sample_pos_yx, sample_scale, key, needed=True):
  """IoU-Net refinement of (pos, target_sz) in the current patch (design.md §5.6); `needed` False skips the
  work (a `not_found` frame: the caller keeps the old state) and the results are meaningless.

  Returns dict with `ok` (bool: some box passed the aspect filter), `pos_yx`, `target_sz_yx`, `target_scale`.
  """
  s = settings.image_sample_size
  init_box = patch_box(pos_yx, target_sz_yx, sample_pos_yx, sample_scale, s)
  boxes = init_box[None]
  n_rand = 0 if settings.deterministic else settings.num_init_random_boxes
  if n_rand > 0:
    wh = init_box[2:]
    factor = jnp.sqrt(jnp.prod(wh)) * jnp.asarray([settings.box_jitter_pos] * 2 + [settings.box_jitter_sz] * 2)
    rand_bb = (jax.random.uniform(key, (n_rand, 4)) - 0.5) * factor
    new_sz = jnp.maximum(wh + rand_bb[:, 2:], jnp.min(wh) / 3.0)
    new_center = init_box[:2] + wh / 2.0 + rand_bb[:, :2]
    boxes = jnp.concatenate([boxes, jnp.concatenate([new_center - new_sz / 2.0, new_sz], axis=1)])
  out_boxes, out_iou = _refine(model, settings, state.iou_mod3, state.iou_mod4, layer2, layer3, boxes, needed)

  out_boxes = jnp.concatenate([out_boxes[:, :2], jnp.maximum(out_boxes[:, 2:], 1.0)], axis=1)
  aspect = out_boxes[:, 2] / out_boxes[:, 3]
  keep = (aspect < settings.maximal_aspect_ratio) & (aspect > 1.0 / settings.maximal_aspect_ratio)
  k = min(settings.iounet_k, out_boxes.shape[0])
  _, inds = jax.lax.top_k(jnp.where(keep, out_iou, -jnp.inf), k)
  valid = keep[inds].astype(default_float())  # Fewer than k kept: average only the kept ones.
  pred = jnp.sum(out_boxes[inds] * valid[:, None], axis=0) / jnp.maximum(jnp.sum(valid), 1.0)
  # The reference takes the continuous centre x + w / 2 here (not x + (w - 1) / 2 as in patch_box).
  center_yx = (pred[:2] + pred[2:] / 2.0)[::-1]
  new_pos = (center_yx - (s - 1) / 2.0) * sample_scale + sample_pos_yx
  new_sz = pred[2:][::-1] * sample_scale
  new_scale = jnp.sqrt(jnp.prod(new_sz) / jnp.prod(state.base_target_sz_yx))
  return {"ok": jnp.any(keep), "pos_yx": new_pos, "target_sz_yx": new_sz, "target_scale": new_scale}


# --------------------------------------------------------------------------------------------------
# One frame (design.md §5.5).

def memory_prefixes(settings: TrackerSettings) -> tuple[int, ...]:
  """The memory prefix sizes the filter update may run on, smallest first: the sizes of `settings.memory_buckets`
  that hold at least the initial samples and fewer slots than the capacity, then the capacity."""
  cap = settings.sample_memory_size
  return (*sorted({b for b in settings.memory_buckets if settings.num_init_samples <= b < cap}), cap)


def _optimize_one(model, filt, memory: SampleMemory, num_iter, max_iter: int, prefixes: tuple[int, ...]):
  """One sequence's filter update: `max_iter` static, `num_iter` traced; the optimizer's `while_loop` runs
  exactly the count, and nothing (score targets, loop) runs when it is 0.

  The memory fills its slots in order (`memory.update_sample_weights`), so the update runs on the smallest of
  `prefixes` that holds every filled slot, as the reference optimises on its stored samples only; an empty slot
  (zeros, weight 0) adds nothing, so the filter is the full memory's up to float summation order.
  """
  def run_on(m):
    def run(f):
      label = None if memory.labels is None else memory.labels[:m, None]
      # Empty memory slots hold zeros (`memory.init_memory`): the optimizer need not mask them.
      out, _, _ = _apply(model, "optimize_filter", f[None], memory.features[:m, None],
                         memory.boxes_xywh[:m, None], memory.weights[:m], max_iter, num_iter, label=label,
                         zero_empty_slots=False)
      return out[0]
    return run

  filled = jnp.minimum(memory.num_stored, prefixes[-1])
  branch = jnp.searchsorted(jnp.asarray(prefixes, jnp.int32), filled.astype(jnp.int32))  # first prefix >= filled
  return jax.lax.switch(jnp.where(num_iter > 0, branch + 1, 0), [lambda f: f, *map(run_on, prefixes)], filt)


def _optimize(model, settings, filt, memory: SampleMemory, num_iter, max_iter: int):
  """Filter update with a traced iteration count `num_iter` (0 .. static `max_iter`).

  Under `vmap` (batched sequences, the lanes of `batching`) with `settings.batched_filter_update ==
  'sequential'` the sequences are updated one after the other (`lax.map`), each with its own count and exactly
  the single-sequence computation. A vmapped `cond` ('vmap') is a select that runs the batch's largest count for
  every sequence, and XLA's CPU backend runs the batched memory dots well below the single-sequence GEMM speed
  (BENCHMARKS.md, issue #14 section).
  """
  if max_iter == 0:
    return filt
  if settings.batched_filter_update == "vmap":  # a switch under vmap would run every branch
    return _optimize_one(model, filt, memory, num_iter, max_iter, (settings.sample_memory_size,))
  one = functools.partial(_optimize_one, max_iter=max_iter, prefixes=memory_prefixes(settings))

  @jax.custom_batching.custom_vmap
  def optimize(model, filt, memory, num_iter):
    return one(model, filt, memory, num_iter)

  @optimize.def_vmap
  def optimize_batched(axis_size, in_batched, model, filt, memory, num_iter):
    def full(x, batched):
      return x if batched else jnp.broadcast_to(x, (axis_size,) + x.shape)
    if any(jax.tree.leaves(in_batched[0])):  # per-sequence weights: plain vmap
      args = jax.tree.map(full, (model, filt, memory, num_iter), tuple(in_batched))
      return jax.vmap(one)(*args), True
    lanes = jax.tree.map(full, (filt, memory, num_iter), tuple(in_batched[1:]))
    return jax.lax.map(lambda a: one(model, *a), lanes), True

  return optimize(model, filt, memory, num_iter)


def update_model(model, settings, state: TrackerState, x, train_box, flag, frame_num, tcm, certainty,
                 train_label=None):
  """Memory write and filter update (5.5 step 4, 5.7; with `use_tcm` the certainty rules of keeptrack.md §4.6).

  train_label: `[Ho, Wo]` the new sample's label when the memory keeps labels (`takes_labels`).
  Returns (filter, memory, tcm state).
  """
  hard = flag == FLAG_HARD_NEGATIVE
  learn = (flag == FLAG_NORMAL) | hard
  lr = jnp.where(hard, settings.hard_negative_learning_rate, settings.learning_rate)
  certainties = tcm.certainties if keeptrack.certainty_weighted(settings) else None
  store = learn & (hard | (frame_num % settings.train_sample_interval == 0))
  memory = update_memory(state.memory, x[0], train_box, settings.num_init_samples, lr,
                         settings.init_samples_minimum_weight, certainties, store, train_label)
  hn_iter = keeptrack.hard_negative_iterations(settings, certainty) if settings.use_tcm else settings.net_opt_hn_iter
  n_iter = jnp.where(hard, hn_iter,
                     jnp.where((frame_num - 1) % settings.train_skipping == 0, settings.net_opt_update_iter, 0))
  n_iter = jnp.where(learn, n_iter, 0)
  opt_memory = memory
  if settings.use_tcm:
    tcm, opt_memory = keeptrack.certainty_memory(settings, tcm, memory, store, certainty, n_iter > 0)
  max_iter = max(settings.net_opt_hn_iter, settings.net_opt_update_iter)
  filt = _optimize(model, settings, state.filter, opt_memory, n_iter.astype(jnp.int32), max_iter)
  return filt, memory, tcm


def step_impl(model: TrackingModel, settings: TrackerSettings, state: TrackerState, image, key):
  """Un-jitted `step`; see `step`."""
  model = for_settings(model, settings)
  image = _as_frame(image)
  s = settings.image_sample_size
  frame_num = state.frame_num + 1
  k_box, _ = jax.random.split(key)

  patch, coord = sample_patch(image, state.pos_yx, state.target_scale * s, (s, s), settings.border_mode,
                              settings.patch_max_scale_change, rule=settings.crop_rule,
                              image_sz_yx=state.image_sz_yx)
  sample_pos, sample_scale = sample_pos_scale(coord, s)
  layer2, layer3, x = extract_features(model, patch[None])
  scores = _apply(model, "classify", state.filter[None], x[:, None])[0, 0]  # [f + 1, f + 1]

  translation, flag = localize(scores, settings, state.pos_yx, state.target_sz_yx, sample_pos, sample_scale)
  tcm, certainty, lost_scale = state.tcm, None, state.target_scale
  if settings.use_tcm:  # KeepTrack: the candidate matching decides, DiMP only on fallback / reset frames.
    tcm, sel, translation, flag = keeptrack.localize_by_candidates(
        model.tcm_net, model.tcm_variables, settings, tcm, scores, layer3, coord, sample_scale, state.image_sz_yx,
        frame_num, translation, flag)
    certainty = sel.presence_score  # the boosted map max: memory certainty and presence score (keeptrack.md §4.6)
    tcm, lost_scale = keeptrack.track_scales(tcm, state.target_scale, flag != FLAG_NOT_FOUND)
  found = flag != FLAG_NOT_FOUND
  inside_offset = (settings.target_inside_ratio - 0.5) * state.target_sz_yx
  pos = jnp.maximum(jnp.minimum(sample_pos + translation, state.image_sz_yx - inside_offset), inside_offset)

  ref = refine_target(model, settings, state, layer2, layer3, pos, state.target_sz_yx, sample_pos, sample_scale,
                      k_box, needed=found)
  ok = ref["ok"]
  update_scale = jnp.asarray(settings.update_scale_when_uncertain) | (flag != FLAG_UNCERTAIN)
  if settings.use_iounet_pos_for_learning:
    pos = jnp.where(ok, ref["pos_yx"], pos)
  target_sz = jnp.where(ok, ref["target_sz_yx"], state.target_sz_yx)
  target_scale = jnp.where(ok & update_scale, ref["target_scale"], state.target_scale)
  pos_iounet = jnp.where(ok, ref["pos_yx"], state.pos_iounet)
  has_pos_iounet = state.has_pos_iounet | ok
  # not_found: nothing changes (KeepTrack: the search area is rescaled, keeptrack.md §4.5).
  pos = jnp.where(found, pos, state.pos_yx)
  target_sz = jnp.where(found, target_sz, state.target_sz_yx)
  target_scale = jnp.where(found, target_scale, lost_scale)
  pos_iounet = jnp.where(found, pos_iounet, state.pos_iounet)
  has_pos_iounet = jnp.where(found, has_pos_iounet, state.has_pos_iounet)

  # Model update (5.5 step 4, 5.7): normal and hard-negative frames only.
  train_box = patch_box(pos, target_sz, sample_pos, sample_scale, s)
  train_label = None
  if takes_labels(model):  # the reference's get_label_function(pos, sample_pos, sample_scale)
    train_label = sample_labels(settings, (pos - sample_pos) / sample_scale, state.base_target_sz_yx, x.shape[1:3],
                                state.filter.shape[0])
  filt, memory, tcm = update_model(model, settings, state, x, train_box, flag, frame_num, tcm, certainty,
                                   train_label)

  # The reference then restores pos_iounet (possibly from an older frame if refinement bailed out now).
  pos = jnp.where(found & has_pos_iounet, pos_iounet, pos)

  box = output_box(pos, target_sz)
  if settings.output_not_found_box:
    box = jnp.where(found, box, -1.0)
  out = {"box_xywh": box, "max_score": jnp.max(scores), "flag": flag}
  if settings.use_tcm:
    out.update(presence_score=certainty, matched=sel.matched)
  if settings.return_score_map:
    out["score_map"] = scores
  new_state = state.replace(pos_yx=pos, target_sz_yx=target_sz, target_scale=target_scale, filter=filt,
                            memory=memory, frame_num=frame_num, pos_iounet=pos_iounet,
                            has_pos_iounet=has_pos_iounet, tcm=tcm)
  return new_state, out


@jax.jit
def frame_key(key, frame):
  """`jax.random.fold_in(key, frame)` in one jitted dispatch: the frame loops' per-frame key (op by op, fold_in
  costs 0.1-0.7 ms a frame on a 2-core CPU; `runner.frame_keys` makes a whole sequence's keys at once)."""
  return jax.random.fold_in(key, frame)


@functools.partial(jax.jit, static_argnames=("settings",))
def init(model: TrackingModel, settings: TrackerSettings, image, box_xywh, key, image_sz_yx=None) -> TrackerState:
  """Initialises the tracker on the first frame (design.md §5.4).

  Args:
    model: `TrackingModel` (static net, traced variables).
    settings: static `TrackerSettings`.
    image: `[Hp, Wp, 3]` RGB, uint8 or float 0..255; may be padded at the bottom / right beyond the true frame
      (e.g. to a size bucket shared by a batch of sequences). Kept in its dtype: only the pixels a patch
      needs are gathered and converted (the per-frame cost does not grow with the frame size).
    box_xywh: `[4]` initial box (x, y, w, h), 0-based full-image pixels.
    key: PRNG key (random shifts and dropout; unused in deterministic mode).
    image_sz_yx: `[2]` true frame size (h, w), int or float, traced (no recompilation per size); None: the
      array's (Hp, Wp). Stored in the state: every crop clamp, replicate border, inside / inside_major shrink,
      decimation offset and position clamp of `init` and `step` uses it, so a padded frame gives the boxes
      of the unpadded one.

  Returns:
    `TrackerState` (frame_num = 1).
  """
  return init_impl(model, settings, image, box_xywh, key, image_sz_yx)


@functools.partial(jax.jit, static_argnames=("settings",))
def step(model: TrackingModel, settings: TrackerSettings, state: TrackerState, image, key):
  """Tracks one frame (design.md §5.5-5.7): patch, scores, localisation, IoU-Net refinement, memory/filter update.

  Args:
    model, settings: as in `init`.
    state: the previous `TrackerState`.
    image: `[Hp, Wp, 3]` RGB, uint8 or float 0..255, the array shape of the first frame (padded the same
      way; the true size is `state.image_sz_yx`).
    key: PRNG key of the random IoU-Net boxes (unused in deterministic mode).

  Returns:
    (new state, dict with `box_xywh` `[4]` (x, y, w, h) full-image pixels, `max_score` (max raw score),
    `flag` int32 (FLAG_NORMAL / _UNCERTAIN / _HARD_NEGATIVE / _NOT_FOUND, names in FLAG_NAMES),
    `score_map` `[f + 1, f + 1]` when `settings.return_score_map`, and with `settings.use_tcm`
    `presence_score` (the boosted map max, keeptrack.md §1 step 5) and `matched` (bool: the association net's
    result was used on this frame)).
  """
  return step_impl(model, settings, state, image, key)


# `step` that donates the previous state: the memory write (one slot of `[capacity, h, w, D]`) then happens in
# place instead of copying the whole sample memory every frame. For loops that drop the old state.
step_donating = jax.jit(step_impl, static_argnames=("settings",), donate_argnames=("state",))


class Tracker:
  """got10k-toolkit style adapter: `init(image, box)` then `update(image) -> box`, state held outside jit.

  `image` is `[H, W, 3]` RGB (uint8 or float 0..255); boxes are (x, y, w, h) NumPy float arrays. A new
  image size triggers one compilation. Keys are `fold_in(PRNGKey(seed), frame index)`.
  """

  def __init__(self, model: TrackingModel, settings: TrackerSettings, seed: int = 0, name: str = "cia_jax"):
    self.model, self.settings, self.name = prepare(model), settings, name
    self._key = jax.random.PRNGKey(seed)
    self.state: TrackerState | None = None
    self.last_output: dict | None = None
    self._frame = 0

  def init(self, image, box) -> None:
    """Initialises on the first frame; box `[4]` (x, y, w, h)."""
    box = np.asarray(box, np.float32).reshape(-1)
    if box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] <= 0 or box[3] <= 0:
      raise ValueError(f"Tracker.init: box must be 4 finite numbers (x, y, w, h) with w, h > 0, got {box}")
    image = _check_image(image)
    self._frame = 0
    self.state = init(self.model, self.settings, image, box, frame_key(self._key, 0))

  def update(self, image) -> np.ndarray:
    """Tracks one frame and returns the box `[4]` (x, y, w, h) as NumPy float."""
    if self.state is None:
      raise ValueError("Tracker.update called before Tracker.init")
    self._frame += 1
    self.state, out = step_donating(self.model, self.settings, self.state, _check_image(image),
                                    frame_key(self._key, self._frame))
    self.last_output = out
    return np.asarray(out["box_xywh"], np.float64)

  @property
  def is_deterministic(self) -> bool:
    """got10k's attribute: whether repeated runs give the same boxes (any seed)."""
    return self.settings.deterministic

  def track(self, frames, box) -> np.ndarray:
    """Tracks an iterable of `[H, W, 3]` images from `box` on the first one -> boxes `[T, 4]` (x, y, w, h)
    (row 0 = `box`, as the benchmark protocols expect)."""
    frames = iter(frames)
    self.init(next(frames), box)
    out = [np.asarray(box, np.float64).reshape(4)]
    out += [self.update(f) for f in frames]
    return np.stack(out)


def _check_image(image):
  a = np.asarray(image) if not isinstance(image, jax.Array) else image
  if a.ndim != 3 or a.shape[-1] != 3:
    raise ValueError(f"tracker: image must be [H, W, 3] RGB, got shape {a.shape}")
  return a

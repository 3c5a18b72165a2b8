"""KeepTrack's target candidate association network (keeptrack.md §2.2, 3): descriptors + a SuperGlue variant.

Data flow for two candidate sets (previous frame 0, current frame 1), channels last:

  layer3 [B, F, F, 1024] -> descriptor_extractor.conv (4x4, pad 2, bias) -> [B, F+1, F+1, D]
    -> gathered at the candidates' integer score-map cells -> desc [B, K, D]          (cia_jax.ops.candidates)
  d = desc + kenc([y_norm, x_norm, score])                                            [B, K, D]
  d <- d + AP(d, src) for the GNN layers [self, cross, self, cross] (one AP per layer, shared by both sets)
  f = final_proj(d); S = <f0_i, f1_j> / sqrt(D)                                       [B, M, N]
  log_assignment = dustbin Sinkhorn(S, bin_score), matches = mutual argmax readout    (cia_jax.ops.sinkhorn)

Static capacity: a set is a `[B, K, ...]` buffer with a `valid [B, K]` mask. Padded slots are zeroed on entry,
masked as attention keys (zero weight) and as Sinkhorn rows / columns, so they never change the result for
the real candidates (in inference; BatchNorm's *batch* statistics in training include every slot, as in the
reference, whose training sets are always full: 5 slots padded with fake candidates).

Keypoint normalisation (keeptrack.md §3.3, 7.1): k_norm = (k - c) / (0.7 max(H, W)) on k = (y, x) full-frame pixels.
The released tracker passes the frame shape as a tuple, which the reference reorders to (W, H): it centres
y by W/2 and x by H/2. `keypoint_center='tracker'` (the default) reproduces this exactly; 'training' centres
(y, x) by (H/2, W/2), the convention the network was trained with. Both agree for square frames.

Heads (keeptrack.md §3.4, 7.3): channel c of q / k / v belongs to head c mod num_heads at position c div num_heads (the
reference views D channels as (D / heads, heads)); merging the heads uses the same interleaving.

Parameter names follow the reference's state-dict keys (keeptrack.md §6): a Flax path maps to the torch key by
'/' -> '.', a trailing '_<i>' of a module name -> '.<i>', and leaves kernel -> weight (1x1 Conv1d: squeeze and
transpose; Conv2d: HWIO -> OIHW), BN scale / mean / var -> weight / running_mean / running_var; see
`reference_key`. E.g. matcher/gnn/layers_1/update/attn/proj_0/kernel <-> matcher.gnn.layers.1.update.attn.proj.0.weight.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cia_jax.models.layers import BatchNorm, Conv2d, torch_default_bias_init, torch_default_kernel_init
from cia_jax.ops.candidates import gather_descriptors
from cia_jax.ops.sinkhorn import MATCH_THRESHOLD, NUM_ITERATIONS, log_optimal_transport, match_readout

Array = Any

DESCRIPTOR_DIM = 256
KEYPOINT_ENCODER = (32, 64, 128, 256)
GNN_LAYERS = ("self", "cross", "self", "cross")  # the KeepTrack constructor's override (SuperGlue: 18 layers)
NUM_HEADS = 4  # hard-coded in the reference's GNN layer
KEYPOINT_SCALE = 0.7
KEYPOINT_CENTERS = ("tracker", "training")
_BN_MOMENTUM = 0.9  # PyTorch momentum 0.1
_BN_EPS = 1e-5
_LEAF_NAMES = {"kernel": "weight", "scale": "weight", "mean": "running_mean", "var": "running_var"}


class CandidateSet(NamedTuple):
  """The non-descriptor inputs of one candidate set.

  Attributes:
    image_coords: `[B, K, 2]` (y, x) full-frame pixels (`cia_jax.ops.candidates.candidate_image_coords`).
    scores: `[B, K]` raw score-map values.
    valid: `[B, K]` bool, real candidates.
    image_hw: `[B, 2]` frame size (H, W) in pixels.
  """

  image_coords: Array
  scores: Array
  valid: Array
  image_hw: Array


class MatcherOutput(NamedTuple):
  """Matcher result; M, N are the capacities of sets 0 and 1.

  Attributes:
    log_assignment: `[B, M + 1, N + 1]` (dustbins last, -inf on padding; `cia_jax.ops.sinkhorn`).
    matches0: `[B, M]` int32 index into set 1, -1 if unmatched.
    matches1: `[B, N]` int32 index into set 0, -1 if unmatched.
    match_scores0: `[B, M]` mutual-best probabilities (scaled by M + N), 0 if not mutual.
    match_scores1: `[B, N]` the same for set 1.
    bin_score: `[]` the dustbin score alpha.
  """

  log_assignment: jax.Array
  matches0: jax.Array
  matches1: jax.Array
  match_scores0: jax.Array
  match_scores1: jax.Array
  bin_score: jax.Array


def normalize_keypoints(kpts_yx: Array, image_hw: Array, center: str = "tracker") -> jax.Array:
  """Centres and scales candidate positions (keeptrack.md §3.3 with the 7.1 quirk).

  Args:
    kpts_yx: `[B, K, 2]` (y, x) full-frame pixels.
    image_hw: `[B, 2]` frame size (H, W).
    center: 'tracker' subtracts (W/2, H/2) from (y, x), exactly as the released tracker does; 'training'
      subtracts (H/2, W/2), as in the reference's training.

  Returns:
    `[B, K, 2]` (k - c) / (0.7 max(H, W)).
  """
  if center not in KEYPOINT_CENTERS:
    raise ValueError(f"normalize_keypoints: center must be one of {KEYPOINT_CENTERS}, got {center!r}")
  kpts_yx = jnp.asarray(kpts_yx)
  image_hw = jnp.asarray(image_hw, kpts_yx.dtype)
  size = image_hw[..., ::-1] if center == "tracker" else image_hw
  scale = KEYPOINT_SCALE * jnp.max(image_hw, axis=-1)
  return (kpts_yx - size[..., None, :] / 2) / scale[..., None, None]


def reference_key(path: Sequence[str]) -> str:
  """The reference state-dict key of one of our variables, e.g. ('matcher', 'kenc', 'encoder_1', 'mean').

  Args:
    path: Flax path of a leaf in 'params' or 'batch_stats' (without the collection).

  Returns:
    The torch key, e.g. 'matcher.kenc.encoder.1.running_mean'.
  """
  *modules, leaf = path
  return ".".join([re.sub(r"_(\d+)$", r".\1", m) for m in modules] + [_LEAF_NAMES.get(leaf, leaf)])


def _conv1x1(features: int, fan_in: int, name: str, zero_bias: bool = False, kernel_init=None,
             bias_init=None) -> nn.Dense:
  """A 1x1 Conv1d as a Dense over channels, with PyTorch's default init unless overridden."""
  return nn.Dense(features, kernel_init=kernel_init or torch_default_kernel_init(),
                  bias_init=nn.initializers.zeros if zero_bias else (bias_init or torch_default_bias_init(fan_in)),
                  name=name)


def _mlp(x: jax.Array, widths: Sequence[int], prefix: str, use_running_average: bool) -> jax.Array:
  """The reference's MLP: 1x1 convs `{prefix}_{3i}`, each but the last followed by BN `{prefix}_{3i+1}` + ReLU.

  Must be called inside a compact method (the layers become children of the caller). The last bias is 0.
  """
  for i, width in enumerate(widths):
    last = i == len(widths) - 1
    x = _conv1x1(width, x.shape[-1], f"{prefix}_{3 * i}", zero_bias=last)(x)
    if not last:
      x = BatchNorm(momentum=_BN_MOMENTUM, epsilon=_BN_EPS, name=f"{prefix}_{3 * i + 1}")(x, use_running_average)
      x = nn.relu(x)
  return x


def _same_draw(init, key, tag: int):
  """`init` always drawn from `fold_in(key, tag)`: layers built with the same key start identical."""
  return lambda _, shape, dtype=jnp.float32: init(jax.random.fold_in(key, tag), shape, dtype)


class MultiHeadedAttention(nn.Module):
  """Attention with interleaved heads (keeptrack.md §3.4): q, k, v = proj_{0,1,2}; output = merge.

  The four 1x1 projections start as identical copies (the reference deep-copies `merge`).

  Attributes:
    num_heads: heads; channel c belongs to head c mod num_heads.
  """

  num_heads: int = NUM_HEADS

  @nn.compact
  def __call__(self, query: jax.Array, source: jax.Array, source_valid: jax.Array) -> jax.Array:
    """Attends each query to the valid source elements.

    Args:
      query: `[B, M, D]`.
      source: `[B, N, D]` keys and values.
      source_valid: `[B, N]` bool; invalid keys get zero weight (all invalid: zero message).

    Returns:
      `[B, M, D]` merged messages.
    """
    dim = query.shape[-1]
    if dim % self.num_heads:
      raise ValueError(f"MultiHeadedAttention: dim {dim} is not divisible by num_heads {self.num_heads}")
    # One key for all four layers; outside init the initialisers are never called, so any key does.
    shared = self.make_rng("params") if self.is_initializing() else jax.random.key(0)
    kernel_init = _same_draw(torch_default_kernel_init(), shared, 0)
    bias_init = _same_draw(torch_default_bias_init(dim), shared, 1)
    layers = [_conv1x1(dim, dim, name, kernel_init=kernel_init, bias_init=bias_init)
              for name in ("proj_0", "proj_1", "proj_2", "merge")]
    head_dim = dim // self.num_heads

    def split(x):  # [B, K, D] -> [B, K, D / heads, heads]: channel c = d * heads + h
      return x.reshape(*x.shape[:-1], head_dim, self.num_heads)

    q, k, v = split(layers[0](query)), split(layers[1](source)), split(layers[2](source))
    logits = jnp.einsum("bmdh,bndh->bhmn", q, k) / math.sqrt(head_dim)
    weights = masked_softmax(logits, jnp.asarray(source_valid, bool)[:, None, None, :])
    message = jnp.einsum("bhmn,bndh->bmdh", weights, v).reshape(query.shape)
    return layers[3](message)


def masked_softmax(logits: jax.Array, mask: jax.Array) -> jax.Array:
  """Softmax over the last axis restricted to `mask`: masked entries get exactly 0; all masked gives 0.

  Same arithmetic as `jax.nn.softmax` on the unmasked entries (max subtraction, exp, sum), so padding does
  not change the result; values and gradients are finite.

  Args:
    logits: `[..., N]`.
    mask: bool, broadcastable to `logits`.

  Returns:
    `[..., N]` weights.
  """
  logits = jnp.where(mask, logits, -jnp.inf)
  peak = jnp.max(logits, axis=-1, keepdims=True)
  peak = jax.lax.stop_gradient(jnp.where(jnp.isfinite(peak), peak, 0))
  unnormalised = jnp.exp(logits - peak)
  total = jnp.sum(unnormalised, axis=-1, keepdims=True)
  return unnormalised / jnp.maximum(total, jnp.finfo(unnormalised.dtype).tiny)


class AttentionalPropagation(nn.Module):
  """delta = MLP([x ; MHA(x, src, src)]) with MLP 2D -> 2D (BN, ReLU) -> D, last bias 0 (keeptrack.md §3.4).

  Attributes:
    num_heads: attention heads.
  """

  num_heads: int = NUM_HEADS

  @nn.compact
  def __call__(self, x: jax.Array, source: jax.Array, source_valid: jax.Array,
               use_running_average: bool) -> jax.Array:
    """x `[B, M, D]`, source `[B, N, D]`, source_valid `[B, N]` -> delta `[B, M, D]`."""
    message = MultiHeadedAttention(self.num_heads, name="attn")(x, source, source_valid)
    dim = x.shape[-1]
    return _mlp(jnp.concatenate([x, message], axis=-1), (2 * dim, dim), "mlp", use_running_average)


class GNNLayer(nn.Module):
  """One GNN layer: both sets updated from the pre-layer descriptors by one shared `update` module.

  Attributes:
    kind: 'self' (sources are the set itself) or 'cross' (sources are the other set).
    num_heads: attention heads.
  """

  kind: str
  num_heads: int = NUM_HEADS

  @nn.compact
  def __call__(self, desc0: jax.Array, desc1: jax.Array, valid0: jax.Array, valid1: jax.Array,
               use_running_average: bool) -> tuple[jax.Array, jax.Array]:
    """desc0 `[B, M, D]`, desc1 `[B, N, D]`, valid0 `[B, M]`, valid1 `[B, N]` -> updated (desc0, desc1)."""
    if self.kind not in ("self", "cross"):
      raise ValueError(f"GNNLayer: kind must be 'self' or 'cross', got {self.kind!r}")
    update = AttentionalPropagation(self.num_heads, name="update")
    if self.kind == "self":
      src0, src1, src_valid0, src_valid1 = desc0, desc1, valid0, valid1
    else:
      src0, src1, src_valid0, src_valid1 = desc1, desc0, valid1, valid0
    # Two applications, AP(d0, src0) and AP(d1, src1) (keeptrack.md §3.4): in training each set gets its own BN
    # batch statistics.
    delta0 = update(desc0, src0, src_valid0, use_running_average)
    delta1 = update(desc1, src1, src_valid1, use_running_average)
    return desc0 + delta0, desc1 + delta1


def _zero_padding(x: Array, valid: jax.Array) -> jax.Array:
  """`[B, K, ...]` with the invalid slots zeroed: garbage (even NaN) in padding cannot reach real slots."""
  x = jnp.asarray(x)
  return jnp.where(valid.reshape(valid.shape + (1,) * (x.ndim - valid.ndim)), x, jnp.zeros((), x.dtype))


class KeypointEncoder(nn.Module):
  """MLP over [y_norm, x_norm, score] (3 channels) -> D (keeptrack.md §3.3); layers `encoder_{0,3,6,...}`.

  Attributes:
    widths: output widths of the convs, the last being D.
    center: keypoint normalisation convention, see `normalize_keypoints`.
  """

  widths: Sequence[int]
  center: str = "tracker"

  @nn.compact
  def __call__(self, candidates: CandidateSet, use_running_average: bool) -> jax.Array:
    """candidates with K slots -> `[B, K, D]` encodings (zero inputs on padded slots)."""
    valid = jnp.asarray(candidates.valid, bool)
    kpts = normalize_keypoints(candidates.image_coords, candidates.image_hw, self.center)
    inputs = jnp.concatenate([kpts, jnp.asarray(candidates.scores, kpts.dtype)[..., None]], axis=-1)
    return _mlp(_zero_padding(inputs, valid), tuple(self.widths), "encoder", use_running_average)


class AttentionalGNN(nn.Module):
  """The GNN (keeptrack.md §3.4): `layers_{i}` of the given kinds, applied in order.

  Attributes:
    kinds: layer kinds, 'self' / 'cross'.
    num_heads: attention heads.
  """

  kinds: Sequence[str] = GNN_LAYERS
  num_heads: int = NUM_HEADS

  @nn.compact
  def __call__(self, desc0: jax.Array, desc1: jax.Array, valid0: jax.Array, valid1: jax.Array,
               use_running_average: bool) -> tuple[jax.Array, jax.Array]:
    """desc0 `[B, M, D]`, desc1 `[B, N, D]`, valid0 `[B, M]`, valid1 `[B, N]` -> updated (desc0, desc1)."""
    for i, kind in enumerate(self.kinds):
      desc0, desc1 = GNNLayer(kind, self.num_heads, name=f"layers_{i}")(desc0, desc1, valid0, valid1,
                                                                       use_running_average)
    return desc0, desc1


class CandidateMatcher(nn.Module):
  """The SuperGlue variant of KeepTrack (reference `matcher`): keypoint encoder, GNN, projection, Sinkhorn.

  Attributes:
    keypoint_encoder: hidden widths of the keypoint MLP (3 -> ... -> D).
    gnn_layers: layer kinds, 'self' / 'cross'.
    num_heads: attention heads (D must be divisible).
    sinkhorn_iterations: Sinkhorn iterations.
    match_threshold: readout threshold on the scaled probability.
    keypoint_center: 'tracker' or 'training', see `normalize_keypoints`.
  The descriptor width D is that of the input descriptors (256 in KeepTrack; no input projection).
  """

  keypoint_encoder: Sequence[int] = KEYPOINT_ENCODER
  gnn_layers: Sequence[str] = GNN_LAYERS
  num_heads: int = NUM_HEADS
  sinkhorn_iterations: int = NUM_ITERATIONS
  match_threshold: float = MATCH_THRESHOLD
  keypoint_center: str = "tracker"

  @nn.compact
  def __call__(self, desc0: Array, set0: CandidateSet, desc1: Array, set1: CandidateSet,
               use_running_average: bool = True) -> MatcherOutput:
    """Associates set 0 (previous frame, M slots) with set 1 (current frame, N slots).

    Args:
      desc0: `[B, M, D]` descriptors of set 0.
      set0: positions, scores, mask and frame size of set 0.
      desc1: `[B, N, D]` descriptors of set 1.
      set1: the same for set 1.
      use_running_average: BN mode (True at inference).

    Returns:
      `MatcherOutput`.
    """
    dim = desc0.shape[-1]
    kenc = KeypointEncoder(tuple(self.keypoint_encoder) + (dim,), self.keypoint_center, name="kenc")
    valid0, valid1 = jnp.asarray(set0.valid, bool), jnp.asarray(set1.valid, bool)
    d0 = _zero_padding(desc0, valid0) + kenc(set0, use_running_average)
    d1 = _zero_padding(desc1, valid1) + kenc(set1, use_running_average)
    d0, d1 = AttentionalGNN(tuple(self.gnn_layers), self.num_heads, name="gnn")(d0, d1, valid0, valid1,
                                                                                 use_running_average)
    final_proj = _conv1x1(dim, dim, "final_proj", zero_bias=True, kernel_init=nn.initializers.orthogonal())
    scores = jnp.einsum("bmd,bnd->bmn", final_proj(d0), final_proj(d1)) / math.sqrt(dim)
    bin_score = self.param("bin_score", nn.initializers.zeros, (), jnp.float32)
    sinkhorn = functools.partial(log_optimal_transport, num_iterations=self.sinkhorn_iterations)
    log_assignment = jax.vmap(sinkhorn, in_axes=(0, None, 0, 0))(scores, bin_score, valid0, valid1)
    readout = functools.partial(match_readout, threshold=self.match_threshold)
    matches = jax.vmap(readout)(log_assignment, valid0, valid1)
    return MatcherOutput(log_assignment, *matches, bin_score)


class DescriptorExtractor(nn.Module):
  """`conv`: Conv2d C3 -> D, 4x4, zero padding 2 (symmetric), bias; PyTorch default init (keeptrack.md §2.2).

  The output grid is (F + 1) x (F + 1), aligned with the DiMP score map (same kernel and padding).

  Attributes:
    descriptor_dim: D (256).
  """

  descriptor_dim: int = DESCRIPTOR_DIM

  @nn.compact
  def __call__(self, layer3: Array) -> jax.Array:
    """layer3 `[B, F, F, C3]` -> descriptor map `[B, F + 1, F + 1, D]`."""
    return Conv2d(self.descriptor_dim, 4, padding=2, use_bias=True, name="conv")(layer3)


class TargetCandidateMatchingNet(nn.Module):
  """The trainable part of KeepTrack's association network: `descriptor_extractor` and `matcher`.

  The backbone is the base tracker's (its layer3); the reference checkpoint's own `feature_extractor` is
  never run (keeptrack.md §0). Attributes as in `CandidateMatcher`, plus `descriptor_dim` (D).
  """

  descriptor_dim: int = DESCRIPTOR_DIM
  keypoint_encoder: Sequence[int] = KEYPOINT_ENCODER
  gnn_layers: Sequence[str] = GNN_LAYERS
  num_heads: int = NUM_HEADS
  sinkhorn_iterations: int = NUM_ITERATIONS
  match_threshold: float = MATCH_THRESHOLD
  keypoint_center: str = "tracker"

  def setup(self):
    self.descriptor_extractor = DescriptorExtractor(self.descriptor_dim)
    self.matcher = CandidateMatcher(self.keypoint_encoder, self.gnn_layers, self.num_heads,
                                    self.sinkhorn_iterations, self.match_threshold, self.keypoint_center)

  def descriptors(self, layer3: Array, tsm_coords: Array, valid: Array) -> jax.Array:
    """Candidate descriptors: the descriptor map at integer score-map cells (zero on padded slots).

    Args:
      layer3: `[B, F, F, C3]` backbone layer3 (stride 16).
      tsm_coords: `[B, K, 2]` int (row, col) cells of the (F + 1) x (F + 1) score map.
      valid: `[B, K]` bool.

    Returns:
      `[B, K, D]`.
    """
    return jax.vmap(gather_descriptors)(self.descriptor_extractor(layer3), tsm_coords, valid)

  def match(self, desc0: Array, set0: CandidateSet, desc1: Array, set1: CandidateSet,
            use_running_average: bool = True) -> MatcherOutput:
    """`CandidateMatcher` on stored descriptors (the tracker keeps the previous frame's)."""
    return self.matcher(desc0, set0, desc1, set1, use_running_average)

  def __call__(self, layer3_0: Array, tsm_coords0: Array, set0: CandidateSet, layer3_1: Array,
               tsm_coords1: Array, set1: CandidateSet, use_running_average: bool = True) -> MatcherOutput:
    """Descriptors and matching for two frames (training / evaluation of the network).

    Args:
      layer3_0: `[B, F, F, C3]` previous-frame layer3.
      tsm_coords0: `[B, M, 2]` int cells of set 0.
      set0: set 0 (`image_coords [B, M, 2]`, `scores`, `valid`, `image_hw`).
      layer3_1, tsm_coords1, set1: the same for the current frame (N slots).
      use_running_average: BN mode.

    Returns:
      `MatcherOutput`.
    """
    desc0 = self.descriptors(layer3_0, tsm_coords0, set0.valid)
    desc1 = self.descriptors(layer3_1, tsm_coords1, set1.valid)
    return self.match(desc0, set0, desc1, set1, use_running_average)

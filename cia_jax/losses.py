"""Training losses of CIA and DiMP as pure functions (design.md §2.5, 3.4, 4.3, 4.5, 4.8).

* `infonce_v`: the instance-level contrastive loss InfoNCE-V, in the reference code's form (one
  log-ratio over the global batch, positives in the denominator), the paper's Eq. 3 (one log-ratio,
  negatives-only denominator) or our per-pair variant, with keys gathered over a data axis.
* `discriminative_hinge_loss`: DiMP's LBHinge over every filter iterate, weighted 100 / 100 / 400.
* `iou_mse_loss` (CIA18, DiMP18) and `kl_regression_loss` (CIA50, SuperDiMP): the IoU-Net losses.
* `category_cross_entropy`: the 70-way category loss, ignoring unlabelled samples (label -1).
* `total_loss`: the weighted sum, with every term reported separately.

Every function returns float32 scalars for float32 inputs and works under `jit`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp

# "reference": the released code's loss; "paper": Eq. 3 literally; "per_pair": our per-positive-pair variant.
INFONCE_FORMS = ("reference", "paper", "per_pair")
# Reference loss weights of the DiMP classifier iterates: final filter, initial filter, and the total
# weight split evenly over the intermediate iterates (`test_clf`, `test_init_clf`, `test_iter_clf`).
HINGE_WEIGHTS = (100.0, 100.0, 400.0)


def _is_tracer(x) -> bool:
  return isinstance(x, jax.core.Tracer)


def _varying_over(x: jax.Array, axis_name) -> bool:
  """Whether `x` is typed as varying over `axis_name` (jax.shard_map with check_vma=True).

  Under that typing a psum's transpose is a broadcast, so differentiating through psum is exact;
  under pmap or check_vma=False the transpose is another psum (gradients scaled by the axis size).
  """
  aval = jax.typeof(x)
  mat = getattr(aval, "manual_axis_type", None)
  varying = getattr(mat, "varying", None) if mat is not None else getattr(aval, "vma", None)
  if not varying:
    return False
  names = axis_name if isinstance(axis_name, (tuple, list)) else (axis_name,)
  return all(n in varying for n in names)


def _check_infonce_inputs(q, k, seq_ids, temperature, form) -> None:
  if form not in INFONCE_FORMS:
    raise ValueError(f"infonce_v: form must be one of {INFONCE_FORMS}, got {form!r}")
  if not _is_tracer(temperature) and not float(temperature) > 0.0:
    raise ValueError(f"infonce_v: temperature must be > 0, got {temperature}")
  if q.ndim != 2 or k.shape != q.shape:
    raise ValueError(f"infonce_v: q and k must both be [M, D], got q {q.shape} and k {k.shape}")
  if seq_ids.shape != q.shape[:1] or not jnp.issubdtype(seq_ids.dtype, jnp.integer):
    raise ValueError(
        f"infonce_v: seq_ids must be integer [M={q.shape[0]}], got {seq_ids.dtype}{seq_ids.shape}")


def _log_ratio(s: jax.Array, num_mask: jax.Array, den_mask: jax.Array, total, global_max):
  """(value, surrogate) of log(sum_den exp(S)) - log(sum_num exp(S)) over the global batch.

  Each sum is taken with its own global max shift (exact, overflow-free for any T); the sums are psummed by
  `total`. An empty denominator (no entry of `den_mask` anywhere) gives 0 with zero gradient. `surrogate` has
  the value's gradient w.r.t. the local scores (see `infonce_v`).
  """

  def shifted_sum(mask):
    low = jnp.finfo(s.dtype).min
    m = global_max(jnp.max(jnp.where(mask, s, low)))
    m = jnp.where(m > low, m, 0.0)  # no entry on any device: no shift
    # exp of -inf (not of a masked-out score) keeps the masked entries' gradient 0 rather than 0 * inf.
    return jnp.sum(jnp.exp(jnp.where(mask, s - m, -jnp.inf))), m

  num_local, m_num = shifted_sum(num_mask)
  den_local, m_den = shifted_sum(den_mask)
  num, den = total(num_local), total(den_local)
  ok = den > 0
  den = jnp.where(ok, den, 1.0)
  value = jnp.where(ok, (jnp.log(den) + m_den) - (jnp.log(num) + m_num), 0.0)
  surrogate = jnp.where(ok, den_local / jax.lax.stop_gradient(den) - num_local / jax.lax.stop_gradient(num), 0.0)
  return value, surrogate


def _per_pair_mean(s: jax.Array, pos: jax.Array, total):
  """(value, surrogate) of the mean over positive pairs (i, p) of -log(e^S_ip / (e^S_ip + sum_neg(i) e^S_in))."""
  neg = ~pos
  has_neg = jnp.any(neg, axis=1, keepdims=True)
  low = jnp.finfo(s.dtype).min
  m_neg = jax.lax.stop_gradient(jnp.max(jnp.where(neg, s, low), axis=1, keepdims=True))
  m_neg = jnp.where(has_neg, m_neg, 0.0)
  neg_sum = jnp.sum(jnp.where(neg, jnp.exp(s - m_neg), 0.0), axis=1, keepdims=True)
  lse_neg = jnp.where(has_neg, jnp.log(jnp.where(has_neg, neg_sum, 1.0)) + m_neg, -jnp.inf)  # [m, 1]
  terms = jnp.logaddexp(s, lse_neg) - s  # l_ip for every (i, p); used where pos.
  sum_local = jnp.sum(jnp.where(pos, terms, 0.0))
  count = jax.lax.stop_gradient(total(jnp.sum(pos).astype(s.dtype)))
  return total(sum_local) / count, sum_local / count


def infonce_v(q: jax.Array, k: jax.Array, seq_ids: jax.Array, temperature: float = 0.07,
              form: str = "reference", axis_name=None) -> jax.Array:
  """InfoNCE-V over the global batch (design.md §4.3, design.md §D3).

  With S = (q / T) k^T over the global batch (q, k: `[M, D]`, row i of k is the key of row i of q), the
  positive pairs P = {(i, l): seq_ids_i == seq_ids_l} (same sequence; includes l = i and the template/search
  mixes, 36 pairs per sequence of 6 frames; two slots with the same id are positives of each other) and the
  negative pairs N = {(i, l): seq_ids_i != seq_ids_l}:

  * `form="reference"` (the released code): one log-ratio over the whole batch, positives also in the
    denominator, no per-query averaging:
        L = -log( sum_{(i,l) in P} exp(S_il) / sum_{all (i,l)} exp(S_il) ).
  * `form="paper"` (Eq. 3 of the paper, literally): one log-ratio over the whole batch whose denominator holds
    the negative pairs only:
        L = -log( sum_{(i,l) in P} exp(S_il) / sum_{(i,l) in N} exp(S_il) ).
    It can be negative (when the positives outweigh the negatives). With no negative pair in the global
    batch (one sequence) Eq. 3 is undefined; we return L = 0 with zero gradient (nothing to contrast).
  * `form="per_pair"` (our variant, not in the paper or the code): for every positive pair (i, p) a binary
    InfoNCE term whose denominator holds that positive and all negatives of query i,
        l_ip = -log( exp(S_ip) / (exp(S_ip) + sum_{n: (i,n) in N} exp(S_in)) ),
    and L = mean of l_ip over all (i, p) in P (the pair p = i included). With no negatives at all, L = 0.

  All forms are computed with max-shifted exponentials (exact, overflow-free for any T).

  Data parallel: with `axis_name` set, call inside `jax.shard_map` / `jax.pmap`. q, k, seq_ids are
  the device's shard; k and seq_ids are all-gathered over the axis so every local query sees every
  key, and the numerator / denominator sums (per_pair form: the term sum and pair count) are psummed,
  so the returned scalar is the loss of the global batch, identical on every device. Gradients:
  the gradient w.r.t. the local q (and, through the gather, the local k) is the slice of the
  single-device gradient of the global loss. Under `jax.shard_map` with `check_vma=True` (the
  default) this is JAX's own autodiff, and gradients w.r.t. replicated parameters come out summed
  over devices. Under `jax.pmap` / `check_vma=False` (psum transposes to psum there) the value is
  returned through a per-device surrogate that gives the same local gradients; the global
  parameter gradient is then the psum (not the pmean) of the per-device gradients.

  Args:
    q: `[M, D]` L2-normalised query embeddings (gradients flow into them).
    k: `[M, D]` L2-normalised key embeddings (the caller stop-gradients the EMA keys).
    seq_ids: `[M]` integer sequence id per row; equal ids are positive pairs.
    temperature: T > 0 (0.07).
    form: "reference", "paper" or "per_pair".
    axis_name: the data axis name (or tuple of names), or None on a single device.

  Returns:
    Scalar loss of the global batch.
  """
  _check_infonce_inputs(q, k, seq_ids, temperature, form)
  if axis_name is None:
    k_all, ids_all = k, seq_ids
  else:
    k_all = jax.lax.all_gather(k, axis_name, tiled=True)
    ids_all = jax.lax.all_gather(seq_ids, axis_name, tiled=True)
  s = (q / temperature) @ k_all.T  # [m, M]
  pos = seq_ids[:, None] == ids_all[None, :]

  def total(x):  # Sum over the global batch.
    return x if axis_name is None else jax.lax.psum(x, axis_name)

  def global_max(x):
    x = jax.lax.stop_gradient(x)
    return x if axis_name is None else jax.lax.pmax(x, axis_name)

  if form == "reference":
    value, surrogate = _log_ratio(s, pos, jnp.ones_like(pos), total, global_max)
  elif form == "paper":
    value, surrogate = _log_ratio(s, pos, ~pos, total, global_max)
  else:
    value, surrogate = _per_pair_mean(s, pos, total)

  if axis_name is None or _varying_over(q, axis_name):
    return value
  # pmap / unchecked shard_map: same value, gradients of the local share only.
  return surrogate + jax.lax.stop_gradient(value - surrogate)


def hinge_iterate_weights(num_iterates: int, weights: Sequence[float] = HINGE_WEIGHTS) -> jax.Array:
  """Per-iterate weights of the classifier loss (design.md §2.5).

  Args:
    num_iterates: I >= 2 filter iterates (initial filter, then one per optimizer step).
    weights: (final, initial, intermediate_total); the intermediate total is split evenly over the
      I - 2 intermediate iterates (100, 100, 400 -> 100 each for 5 steps).

  Returns:
    `[I]` float32 weights, index 0 = initial filter, I - 1 = final filter.
  """
  if num_iterates < 2:
    raise ValueError(
        f"hinge_iterate_weights: need >= 2 filter iterates (initial + final), got {num_iterates}")
  if len(weights) != 3:
    raise ValueError(
        f"hinge_iterate_weights: weights must be (final, initial, intermediate_total), got {weights}")
  final, init, inter_total = (float(w) for w in weights)
  inter = [inter_total / (num_iterates - 2)] * (num_iterates - 2) if num_iterates > 2 else []
  return jnp.asarray([init] + inter + [final], jnp.float32)


def hinge_loss(scores: jax.Array, labels: jax.Array, threshold: float = 0.05) -> jax.Array:
  """DiMP's LBHinge on one set of score maps (design.md §2.5).

  Negatives are label < threshold: their prediction is relu(score) and their target 0; elsewhere
  the target is the label. Loss = mean squared error over all elements.

  Args:
    scores: `[..., H, W]` classification scores.
    labels: same shape, Gaussian labels (peak ~1).
    threshold: label value below which a location is a negative.

  Returns:
    Scalar loss.
  """
  negative = labels < threshold
  pred = jnp.where(negative, jax.nn.relu(scores), scores)
  target = jnp.where(negative, 0.0, labels)
  return jnp.mean(jnp.square(pred - target))


def discriminative_hinge_loss(scores_iterates: jax.Array, labels: jax.Array, threshold: float = 0.05,
                              weights: Sequence[float] = HINGE_WEIGHTS) -> tuple[jax.Array, jax.Array]:
  """DiMP classifier loss over all filter iterates (design.md §2.5).

  total = w_final * L(f_{I-1}) + w_init * L(f_0) + (w_inter / (I - 2)) * sum_{t=1}^{I-2} L(f_t),
  with L the LBHinge (`hinge_loss`) on the test frames.

  Args:
    scores_iterates: `[I, Nte, B, H, W]` score maps of every filter iterate (I = num_iter + 1 = 6).
    labels: `[Nte, B, H, W]` Gaussian labels of the test frames.
    threshold: negative threshold of the hinge (0.05).
    weights: (final, initial, intermediate_total) = (100, 100, 400).

  Returns:
    (total, per_iterate): the weighted scalar and the `[I]` unweighted per-iterate losses.
  """
  if scores_iterates.ndim < 2 or scores_iterates.shape[1:] != labels.shape:
    raise ValueError(f"discriminative_hinge_loss: scores_iterates must be [I, *labels.shape] = "
                     f"[I, {', '.join(map(str, labels.shape))}], got {scores_iterates.shape}")
  w = hinge_iterate_weights(scores_iterates.shape[0], weights)
  per_iterate = jax.vmap(lambda s: hinge_loss(s, labels, threshold))(scores_iterates)
  return jnp.sum(w * per_iterate), per_iterate


def iou_mse_loss(iou_pred: jax.Array, iou_target: jax.Array) -> jax.Array:
  """IoU-Net MSE loss of CIA18 / DiMP18 (design.md §3.4): mean((pred - target)^2).

  Args:
    iou_pred: `[..., P]` predicted IoU scores of the proposals.
    iou_target: same shape, the targets 2 * IoU - 1 in [-1, 1] (as produced by the data pipeline).

  Returns:
    Scalar loss.
  """
  if iou_pred.shape != iou_target.shape:
    raise ValueError(f"iou_mse_loss: iou_pred {iou_pred.shape} and iou_target {iou_target.shape} differ")
  return jnp.mean(jnp.square(iou_pred - iou_target))


def kl_regression_loss(scores: jax.Array, proposal_density: jax.Array, gt_density: jax.Array,
                       eps: float = 0.0) -> jax.Array:
  """KL regression loss of CIA50 / SuperDiMP (design.md §3.4), Monte-Carlo over the proposals.

  Per frame with P proposals, scores s_k, proposal density q_k and ground-truth density p_k:
      L = logsumexp_k(s_k - log q_k) - log P - mean_k(s_k * p_k / q_k),
  averaged over frames.

  Args:
    scores: `[..., P]` IoU-Net scores of the P (128) proposals.
    proposal_density: same shape, q_k > 0 (the proposal mixture's pdf).
    gt_density: same shape, p_k (the ground-truth Gaussian's pdf).
    eps: added to q_k (0 in the reference).

  Returns:
    Scalar loss.
  """
  if not scores.shape == proposal_density.shape == gt_density.shape or scores.ndim < 1:
    raise ValueError(f"kl_regression_loss: scores {scores.shape}, proposal_density "
                     f"{proposal_density.shape} and gt_density {gt_density.shape} must have the same "
                     "shape [..., P]")
  q = proposal_density + eps
  num = scores.shape[-1]
  per_frame = (jax.nn.logsumexp(scores - jnp.log(q), axis=-1) - jnp.log(float(num))
               - jnp.mean(scores * gt_density / q, axis=-1))
  return jnp.mean(per_frame)


def category_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Category classification loss (design.md §4.5): mean cross-entropy over the labelled samples.

  loss = sum_i mask_i * CE_i / #valid with mask_i = [label_i != -1]; 0 when no sample is labelled
  (then no gradient flows either).

  Args:
    logits: `[N, C]` class logits (C = 70).
    labels: `[N]` integer class ids in [0, C) or -1 (unlabelled).

  Returns:
    Scalar loss.
  """
  if logits.ndim != 2 or labels.shape != logits.shape[:1]:
    raise ValueError(f"category_cross_entropy: logits must be [N, C] and labels [N], got {logits.shape} "
                     f"and {labels.shape}")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"category_cross_entropy: labels must be integers, got {labels.dtype}")
  if not _is_tracer(labels):
    lab = jax.device_get(labels)
    if lab.size and (lab.min() < -1 or lab.max() >= logits.shape[1]):
      raise ValueError(f"category_cross_entropy: labels must lie in [-1, {logits.shape[1]}), got "
                       f"min {lab.min()} max {lab.max()}")
  valid = labels >= 0
  log_p = jax.nn.log_softmax(logits, axis=-1)
  ce = -jnp.take_along_axis(log_p, jnp.where(valid, labels, 0)[:, None], axis=-1)[:, 0]
  num_valid = jnp.sum(valid)
  return jnp.sum(jnp.where(valid, ce, 0.0)) / jnp.maximum(num_valid, 1).astype(ce.dtype)


def total_loss(terms: Mapping[str, jax.Array],
               weights: Mapping[str, float]) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Weighted total of the loss terms, every term reported separately.

  Reference weights (design.md §4.8): classifier hinge total 1 (its 100/100/400 are inside
  `discriminative_hinge_loss`), IoU MSE 1 or KL 0.01, category CE 0.1, InfoNCE-V 1.

  Args:
    terms: name -> scalar loss of each active term (unweighted).
    weights: name -> weight; every term needs one, weights of absent terms are ignored (one weight
      table serves every ablation).

  Returns:
    (total, report): total = sum_name weights[name] * terms[name]; report holds each unweighted
    term under its name and the total under "total".
  """
  missing = sorted(set(terms) - set(weights))
  if missing:
    raise ValueError(f"total_loss: no weight for loss term(s) {missing}; weights has {sorted(weights)}")
  if "total" in terms:
    raise ValueError("total_loss: 'total' is reserved for the weighted sum, rename that term")
  total = jnp.zeros((), jnp.float32)
  for name, value in terms.items():
    if jnp.ndim(value) != 0:
      raise ValueError(f"total_loss: term {name!r} must be a scalar, got shape {jnp.shape(value)}")
    total = total + weights[name] * value
  report = dict(terms)
  report["total"] = total
  return total, report

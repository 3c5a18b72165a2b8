"""The pure training and validation steps, the key encoder's forward, and device placement.

`train_step(state, batch, *, net, settings, tx, axis_name)` is written per device; it closes over nothing but
its static arguments (the Flax network, `StepSettings`, the optax transformation). With `axis_name=None` it
is the whole single-device step; inside `jax.shard_map` over a data axis (`make_train_step(...,
mesh=...)`), each device holds B/n sequences and

* BatchNorm statistics are per device (as on real hardware); running statistics are averaged over the
  axis afterwards so every replica stays identical;
* InfoNCE-V all-gathers keys and sequence ids, so positives and negatives are those of the GLOBAL
  batch (design.md §D3);
* every other term is the mean over the global batch (equal shards: the mean of per-device means;
  the category loss: global masked sum / global count);
* the loss is therefore one global scalar, and its gradient w.r.t. the replicated params is the exact
  global gradient (shard_map's varying-axis typing makes autodiff insert the cross-device sums).

`eval_step` computes the same loss terms with BN running statistics, no dropout and no update.

Batch layout (sequence-major, as the input pipeline yields it): `train_images [B, Ntr, S, S, 3]`,
`test_images [B, Nte, S, S, 3]`, `train_box_xywh [B, Ntr, 4]`, `test_box_xywh [B, Nte, 4]`,
`test_label [B, Nte, f+1, f+1]`, `test_proposals_xywh [B, Nte, P, 4]`, `proposal_iou [B, Nte, P]` (the MSE
target 2 IoU - 1) or `proposal_density`/`gt_density [B, Nte, P]` (KL), `category_id [B]` (-1 = unlabelled).
`shard_batch` places a host's part of it on the mesh, `replicate` the state, `host_value` brings values back.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from cia_jax import losses
from cia_jax.models.cia import CIANet
from cia_jax.train.state import TrainState, ema_update

DATA_AXIS = "data"


@dataclasses.dataclass(frozen=True)
class StepSettings:
  """Static settings of the training step (hashable).

  Attributes:
    loss_weights: weight per loss term: 'clf' (the hinge terms carry the 100/100/400 weights inside,
      so 1.0 reproduces the reference), 'iou' (1 MSE / 0.01 KL), 'category' (0.1), 'contrastive' (1).
    iou_loss: 'mse' (CIA18/DiMP18) or 'kl' (CIA50/SuperDiMP).
    infonce_form: 'reference' or 'paper'.
    temperature: InfoNCE-V temperature (0.07).
    momentum: True = keys from the EMA encoder; False = keys from the query encoder (paper Fig. 6).
    ema_decay: eta (0.999).
    bn_train: BatchNorm in training mode (batch statistics). False = running statistics (tests).
    dropout: category-encoder dropout on.
  """

  loss_weights: tuple[tuple[str, float], ...] = (("clf", 1.0), ("iou", 1.0), ("category", 0.1),
                                                  ("contrastive", 1.0))
  iou_loss: str = "mse"
  infonce_form: str = "reference"
  temperature: float = 0.07
  momentum: bool = True
  ema_decay: float = 0.999
  bn_train: bool = True
  dropout: bool = True

  def __post_init__(self):
    if self.iou_loss not in ("mse", "kl"):
      raise ValueError(f"StepSettings.iou_loss must be 'mse' or 'kl', got {self.iou_loss!r}")


def _frame_major(x: jax.Array) -> jax.Array:
  """[B, N, ...] -> [N, B, ...]."""
  return jnp.swapaxes(x, 0, 1)


def _global_mean(x: jax.Array, axis_name) -> jax.Array:
  return x if axis_name is None else jax.lax.pmean(x, axis_name)


def _global_sum(x: jax.Array, axis_name) -> jax.Array:
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def _seq_ids(b: int, num_frames: int, axis_name) -> jax.Array:
  """Globally unique sequence id per frame-major row: `[num_frames * b]`."""
  offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * b
  return jnp.tile(jnp.arange(b, dtype=jnp.int32) + offset, num_frames)


def compute_losses(params: Any, batch_stats: Any, keys: jax.Array | None, batch: Mapping[str, jax.Array],
                   net: CIANet, settings: StepSettings, dropout_rng: jax.Array, axis_name=None):
  """Global loss of the batch for given params -> (total, (terms, new_batch_stats)).

  keys: `[(Ntr + Nte) * B, C3]` frame-major InfoNCE-V keys of this device from the EMA encoder, or
    None = keys are the stop-gradient'ed queries themselves (no momentum encoder, paper Fig. 6).
  """
  variables = {"params": params, "batch_stats": batch_stats}
  out, mutated = net.apply(
      variables, _frame_major(batch["train_images"]), _frame_major(batch["test_images"]),
      _frame_major(batch["train_box_xywh"]), _frame_major(batch["test_box_xywh"]),
      _frame_major(batch["test_proposals_xywh"]), train=settings.bn_train,
      deterministic=not settings.dropout, rngs={"dropout": dropout_rng}, mutable=["batch_stats"])
  terms = {}
  weights = dict(settings.loss_weights)
  label = _frame_major(batch["test_label"])
  clf, per_iter = losses.discriminative_hinge_loss(out["scores"], label)
  terms["clf"] = _global_mean(clf, axis_name)
  terms["clf_init"] = _global_mean(losses.hinge_loss(out["scores"][0], label), axis_name)
  terms["clf_final"] = _global_mean(losses.hinge_loss(out["scores"][-1], label), axis_name)
  if settings.iou_loss == "mse":
    terms["iou"] = _global_mean(losses.iou_mse_loss(out["iou"], _frame_major(batch["proposal_iou"])), axis_name)
  else:
    terms["iou"] = _global_mean(losses.kl_regression_loss(
        out["iou"], _frame_major(batch["proposal_density"]), _frame_major(batch["gt_density"])), axis_name)
  if "category_logits" in out:
    logits = out["category_logits"]  # [N, B, 70]
    labels = jnp.broadcast_to(batch["category_id"][None], logits.shape[:2])
    valid = labels >= 0
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(valid, labels, 0))
    num = _global_sum(jnp.sum(jnp.where(valid, ce, 0.0)), axis_name)
    count = _global_sum(jnp.sum(valid).astype(ce.dtype), axis_name)
    terms["category"] = jnp.where(count > 0, num / jnp.maximum(count, 1.0), 0.0)
  if "query" in out:
    keys = jax.lax.stop_gradient(out["query"]) if keys is None else keys
    b = batch["train_images"].shape[0]
    n = batch["train_images"].shape[1] + batch["test_images"].shape[1]
    terms["contrastive"] = losses.infonce_v(out["query"], keys, _seq_ids(b, n, axis_name),
                                            temperature=settings.temperature, form=settings.infonce_form,
                                            axis_name=axis_name)
  total = sum(weights[k] * terms[k] for k in ("clf", "iou", "category", "contrastive") if k in terms)
  return total, (terms, mutated["batch_stats"])


def uses_key_encoder(net: CIANet, settings: StepSettings) -> bool:
  """Whether InfoNCE-V keys come from the EMA key encoder (else from the stop-gradient'ed queries)."""
  return bool(net.contrastive and settings.momentum)


def key_embeddings(net: CIANet, state: TrainState, batch: Mapping[str, jax.Array], train: bool):
  """InfoNCE-V keys of every frame of the batch from the key encoder: the same network applied to the EMA tree
  with its own BN statistics.

  Returns (keys `[(Ntr + Nte) * B, C3]`, frame-major and stop-gradient'ed; the key encoder's BN statistics
  after this forward, unchanged when `train` is False).
  """
  frames = jnp.concatenate([_frame_major(batch["train_images"]), _frame_major(batch["test_images"])])
  boxes = jnp.concatenate([_frame_major(batch["train_box_xywh"]), _frame_major(batch["test_box_xywh"])])
  keys, mutated = net.apply(
      {"params": state.momentum_params, "batch_stats": state.momentum_batch_stats},
      frames.reshape(-1, *frames.shape[2:]), boxes.reshape(-1, 4), train=train, method=CIANet.key_embedding,
      mutable=["batch_stats"])
  return jax.lax.stop_gradient(keys), mutated["batch_stats"]


def loss_and_grads(state: TrainState, batch: Mapping[str, jax.Array], *, net: CIANet, settings: StepSettings,
                   axis_name=None):
  """Global loss, its gradient w.r.t. `state.params`, and the new BN statistics (per device code).

  Returns (total, terms, grads, batch_stats, momentum_batch_stats); nothing is differentiated w.r.t. the
  momentum tree (its keys are stop-gradient'ed).
  """
  step_rng = jax.random.fold_in(state.rng, state.step)
  dev = 0 if axis_name is None else jax.lax.axis_index(axis_name)
  dropout_rng = jax.random.fold_in(jax.random.fold_in(step_rng, 1), dev)

  keys = None
  momentum_batch_stats = state.momentum_batch_stats
  if uses_key_encoder(net, settings):
    keys, key_stats = key_embeddings(net, state, batch, train=settings.bn_train)
    if settings.bn_train:
      momentum_batch_stats = _sync_stats(key_stats, axis_name)

  def loss_fn(params):
    return compute_losses(params, state.batch_stats, keys, batch, net, settings, dropout_rng, axis_name)

  (total, (terms, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  batch_stats = _sync_stats(batch_stats, axis_name) if settings.bn_train else state.batch_stats
  return total, terms, grads, batch_stats, momentum_batch_stats


def train_step(state: TrainState, batch: Mapping[str, jax.Array], *, net: CIANet, settings: StepSettings,
               tx: optax.GradientTransformation, axis_name=None) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimisation step (per device; see the module docstring). Returns (new state, metrics).

  Order: loss and gradients, optax update with `tx` (per-group Adam, frozen layers zero), then the EMA of the
  key encoder towards the updated params (equivalent to the reference's EMA-before-keys of the next step).
  Metrics: the loss terms, `total`, `grad_norm`, `param_norm` (scalars).
  """
  total, terms, grads, batch_stats, momentum_batch_stats = loss_and_grads(
      state, batch, net=net, settings=settings, axis_name=axis_name)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  momentum_params = state.momentum_params
  if uses_key_encoder(net, settings):
    momentum_params = ema_update(state.momentum_params, params, settings.ema_decay)

  metrics = dict(terms)
  metrics["total"] = total
  metrics["grad_norm"] = optax.tree.norm(grads)
  metrics["param_norm"] = optax.tree.norm(params)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            momentum_params=momentum_params, momentum_batch_stats=momentum_batch_stats,
                            opt_state=opt_state)
  return new_state, metrics


def eval_step(state: TrainState, batch: Mapping[str, jax.Array], *, net: CIANet, settings: StepSettings,
              axis_name=None) -> dict[str, jax.Array]:
  """Validation loss terms and `total` of a batch (per device): BN running statistics, no dropout, no update."""
  settings = dataclasses.replace(settings, bn_train=False, dropout=False)
  keys = key_embeddings(net, state, batch, train=False)[0] if uses_key_encoder(net, settings) else None
  total, (terms, _) = compute_losses(state.params, state.batch_stats, keys, batch, net, settings, state.rng,
                                     axis_name=axis_name)
  return dict(terms, total=total)


def _sync_stats(stats: Any, axis_name) -> Any:
  """Running BN statistics averaged over devices (each device normalised with its own batch)."""
  return stats if axis_name is None else jax.tree.map(lambda x: jax.lax.pmean(x, axis_name), stats)


def _jit_step(per_device, mesh: Mesh | None, out_specs, donate_state: bool):
  """`per_device(state, batch, axis_name=...)` jitted; over `mesh`'s data axis with `jax.shard_map` (the
  batch's leading axis split, the state replicated)."""
  donate = (0,) if donate_state else ()
  if mesh is None:
    return jax.jit(per_device, donate_argnums=donate)
  if DATA_AXIS not in mesh.axis_names:
    raise ValueError(f"mesh must have a '{DATA_AXIS}' axis, got {mesh.axis_names}")
  sharded = jax.shard_map(functools.partial(per_device, axis_name=DATA_AXIS), mesh=mesh,
                          in_specs=(P(), P(DATA_AXIS)), out_specs=out_specs)
  return jax.jit(sharded, donate_argnums=donate)


def make_train_step(net: CIANet, settings: StepSettings, tx: optax.GradientTransformation,
                    mesh: Mesh | None = None):
  """Jitted step `(state, batch) -> (state, metrics)` that updates with `tx`.

  mesh None: single device. Otherwise the batch's leading (sequence) axis is split over the mesh's
  data axis with `jax.shard_map`; state is replicated. Donates the old state.
  """
  per_device = functools.partial(train_step, net=net, settings=settings, tx=tx)
  return _jit_step(per_device, mesh, (P(), P()), donate_state=True)


def make_eval_step(net: CIANet, settings: StepSettings, mesh: Mesh | None = None):
  """Jitted validation `(state, batch) -> metrics` (see `eval_step`; sharded as `make_train_step`)."""
  return _jit_step(functools.partial(eval_step, net=net, settings=settings), mesh, P(), donate_state=False)


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh over `devices` (default: all devices, of every process) with the data axis."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def shard_batch(batch: Mapping[str, Any], mesh: Mesh) -> dict:
  """This host's part of the global batch -> global arrays split over the mesh's data axis.

  Args:
    batch: fields `[B_host, ...]` (sequence-major; every process passes its own consecutive block of the
      global batch, in process order). In a single process B_host = B, the whole batch.
    mesh: a `data_mesh`.

  Returns:
    Global arrays `[B, ...]`, B = B_host x processes, each device holding its consecutive B / devices rows.
  """
  n = len(mesh.local_devices)
  sharding = NamedSharding(mesh, P(DATA_AXIS))
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    if v.ndim == 0 or v.shape[0] % n:
      raise ValueError(f"shard_batch: '{k}' has shape {v.shape}; its leading (sequence) axis must be "
                       f"divisible by the {n} local devices")
    out[k] = jax.make_array_from_process_local_data(sharding, v)
  return out


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Host values (identical on every process; typed PRNG keys included) -> global arrays replicated over
  `mesh`."""
  sharding = NamedSharding(mesh, P())

  def put(x):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    x = np.asarray(jax.device_get(x))
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

  return jax.tree.map(put, tree)


def host_value(x) -> np.ndarray:
  """A (replicated) global array as a NumPy array on this host."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(x.addressable_data(0))
  return np.asarray(jax.device_get(x))

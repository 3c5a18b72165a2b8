"""CIA's category-aware module (design.md §4.5, 4.6): the category classifier and the category encoder.

* `CategoryClassifier` (reference `upper_classifier`, FCClassifier_v2): PrRoIPool 1x1 @1/32 of layer4
  over the target box -> Linear(C4, 2C4) + ReLU -> Linear(2C4, 70) logits. Its dictionary (the
  paper's W, 70 x C4) is the right half of the last layer's weight, read from the live parameters
  so that the encoder's gradients reach `clf_fc` in training.
* `CategoryEncoder` (reference `proj_post` + `transformer_encoder`, TransformerEncoder_v2): the 70
  atoms are projected to C3 (`proj_post`), then 3 post-norm cross-attention blocks refine every
  pixel of the (angle-modulated) layer3 map with the atoms as keys and values; output X + T(X).
  `num_known_categories=0` replaces the classifier's dictionary by a learned random one (Table 2,
  "w/o known categories").

Parameter mapping from the reference state dict (design.md §6.3; Linear weight (out, in) -> kernel (in, out)):
  upper_classifier.proj_fc.0.{weight,bias}  -> <CategoryClassifier>/proj_fc/{kernel,bias}
  upper_classifier.clf_fc.{weight,bias}     -> <CategoryClassifier>/clf_fc/{kernel,bias}
  upper_classifier.proj_post.{weight,bias}  -> <CategoryEncoder>/proj_post/{kernel,bias}
  upper_classifier.transformer_encoder.layers.{i}.X -> <CategoryEncoder>/layers_{i}/X with
    self_attn.in_proj_weight (3C3, C3), in_proj_bias (3C3), out_proj.{weight,bias}
        -> self_attn/{query,key,value,out}/{kernel,bias}: see `attention_params_from_torch`
    linear1, linear2 -> linear1, linear2 (Dense); norm1, norm2 .{weight,bias} -> norm1, norm2 .{scale,bias}
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cia_jax.models.layers import at_least_float32
from cia_jax.ops.boxes import xywh_to_xyxy
from cia_jax.ops.prroi_pool import prroi_pool_grouped

NUM_CATEGORIES = 70
LAYER4_STRIDE = 32
LN_EPS = 1e-5


def _uniform(bound: float):
  """U(-bound, bound) initialiser."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def _shared(init, init_key, tag):
  """`init` drawn from `fold_in(init_key, tag)` instead of the scope's key when init_key is given.

  The reference deep-copies one freshly initialised layer into all encoder layers; drawing every
  layer's parameters from one key (and a per-parameter tag) reproduces identical initial weights.
  """
  if init_key is None or tag is None:
    return init
  sub = jax.random.fold_in(init_key, tag)
  return lambda key, shape, dtype=jnp.float32: init(sub, shape, dtype)


def _torch_linear(features: int, fan_in: int, name: str, tag: int | None = None, init_key=None,
                  dtype: Any = None) -> nn.Dense:
  """nn.Dense with PyTorch's default Linear init, U(+-1/sqrt(fan_in)) for kernel and bias (float32)."""
  bound = 1.0 / math.sqrt(fan_in)
  return nn.Dense(features, kernel_init=_shared(_uniform(bound), init_key, tag),
                  bias_init=_shared(_uniform(bound), init_key, None if tag is None else tag + 1), name=name,
                  dtype=dtype)


class CategoryClassifier(nn.Module):
  """70-way category classifier on layer4 (design.md §4.5). PyTorch default Linear init.

  Attributes:
    num_classes: number of categories (70 LaSOT classes).
    dtype: compute dtype of the two Linear layers (None: float32); the RoI pooling and the logits are float32.
  """

  num_classes: int = NUM_CATEGORIES
  dtype: Any = None

  @nn.compact
  def __call__(self, layer4: jax.Array, box_xywh: jax.Array) -> jax.Array:
    """Classifies the target.

    Args:
      layer4: `[N, H, W, C4]` layer4 features (stride 32).
      box_xywh: `[N, 4]` target box (x, y, w, h) in input-image pixels, one per image (x2 = x + w).

    Returns:
      `[N, num_classes]` logits.
    """
    if layer4.ndim != 4 or box_xywh.shape != (layer4.shape[0], 4):
      raise ValueError(f"CategoryClassifier: layer4 must be [N, H, W, C] and box_xywh [N, 4], got "
                       f"{layer4.shape} and {box_xywh.shape}")
    c4 = layer4.shape[-1]
    pooled = prroi_pool_grouped(at_least_float32(layer4), xywh_to_xyxy(box_xywh)[:, None], 1, 1.0 / LAYER4_STRIDE)
    h = nn.relu(_torch_linear(2 * c4, c4, "proj_fc", dtype=self.dtype)(pooled.reshape(-1, c4)))
    return at_least_float32(_torch_linear(self.num_classes, 2 * c4, "clf_fc", dtype=self.dtype)(h))

  def dictionary(self) -> jax.Array:
    """The category dictionary W: input columns C4:2C4 of `clf_fc`'s weight, from the live parameters.

    Returns:
      `[num_classes, C4]` = rows C4:2C4 of the Flax kernel `[2C4, num_classes]`, transposed (the
      reference's `clf_fc.weight[:, C4:]`). Gradients flow into `clf_fc`.
    """
    params = self.variables.get("params", {})
    if "clf_fc" not in params:
      raise ValueError("CategoryClassifier.dictionary: clf_fc has no parameters yet; call the classifier "
                       "first (during init) or apply with initialised variables")
    kernel = params["clf_fc"]["kernel"]
    c4 = kernel.shape[0] // 2
    return kernel[c4:].T


def attention_params_from_torch(in_proj_weight: np.ndarray, in_proj_bias: np.ndarray,
                                out_proj_weight: np.ndarray, out_proj_bias: np.ndarray,
                                num_heads: int) -> dict:
  """Maps torch.nn.MultiheadAttention's packed parameters to `self_attn`'s Flax parameters (design.md §6.3).

  in_proj_weight `(3C, C)` stacks the rows of Wq, Wk, Wv (each (out, in)); head h owns output
  features h*hd .. (h+1)*hd - 1 (hd = C / num_heads). Flax kernels are W^T reshaped:
  query/key/value kernel `(C, heads, hd)`, bias `(heads, hd)`; out kernel = Wout^T `(heads, hd, C)`,
  out bias `(C,)`.

  Args:
    in_proj_weight: `(3C, C)`.
    in_proj_bias: `(3C,)`.
    out_proj_weight: `(C, C)` (out, in).
    out_proj_bias: `(C,)`.
    num_heads: number of heads (4).

  Returns:
    {"query", "key", "value", "out"} -> {"kernel", "bias"} NumPy arrays.
  """
  in_proj_weight = np.asarray(in_proj_weight)
  c = in_proj_weight.shape[1]
  if in_proj_weight.shape != (3 * c, c) or np.shape(in_proj_bias) != (3 * c,):
    raise ValueError(f"attention_params_from_torch: in_proj_weight must be (3C, C) and in_proj_bias (3C,), "
                     f"got {in_proj_weight.shape} and {np.shape(in_proj_bias)}")
  if np.shape(out_proj_weight) != (c, c) or np.shape(out_proj_bias) != (c,):
    raise ValueError(f"attention_params_from_torch: out_proj must be ({c}, {c}) + ({c},), got "
                     f"{np.shape(out_proj_weight)} and {np.shape(out_proj_bias)}")
  if c % num_heads:
    raise ValueError(f"attention_params_from_torch: C={c} is not divisible by num_heads={num_heads}")
  hd = c // num_heads
  params = {}
  for name, w, b in zip(("query", "key", "value"), np.split(in_proj_weight, 3, axis=0),
                        np.split(np.asarray(in_proj_bias), 3)):
    params[name] = {"kernel": w.T.reshape(c, num_heads, hd), "bias": b.reshape(num_heads, hd)}
  params["out"] = {"kernel": np.asarray(out_proj_weight).T.reshape(num_heads, hd, c),
                   "bias": np.asarray(out_proj_bias)}
  return params


class CrossAttention(nn.Module):
  """Multi-head attention of query tokens over shared atoms (torch.nn.MultiheadAttention semantics).

  Scaled dot product (1/sqrt(head_dim)), softmax over the atoms, dropout on the attention weights,
  output projection. Init as torch: packed in-projection xavier-uniform over (3C, C), i.e.
  U(+-sqrt(6 / 4C)), zero in-projection and output biases, output weight U(+-1/sqrt(C)).

  Attributes:
    num_heads: attention heads.
    dropout_rate: dropout on the attention weights.
    dtype: compute dtype of the projections and products (None: float32); the softmax is float32.
  """

  num_heads: int = 4
  dropout_rate: float = 0.1
  dtype: Any = None

  @nn.compact
  def __call__(self, tokens: jax.Array, atoms: jax.Array, deterministic: bool, init_key=None) -> jax.Array:
    """tokens `[L, C]`, atoms `[A, C]` -> `[L, C]`. init_key: see `CategoryEncoder`."""
    c = tokens.shape[-1]
    hd = c // self.num_heads
    in_bound = math.sqrt(6.0 / (4 * c))

    def proj(name, tag):
      return nn.DenseGeneral((self.num_heads, hd), kernel_init=_shared(_uniform(in_bound), init_key, tag),
                             bias_init=nn.initializers.zeros, name=name, dtype=self.dtype)

    q = proj("query", 0)(tokens) / math.sqrt(hd)  # [L, h, hd]
    k = proj("key", 1)(atoms)  # [A, h, hd]
    v = proj("value", 2)(atoms)
    # The softmax in float32: bfloat16's exp of logits in the tens loses the small weights.
    weights = jax.nn.softmax(at_least_float32(jnp.einsum("lhd,ahd->hla", q, k)), axis=-1).astype(v.dtype)
    weights = nn.Dropout(self.dropout_rate)(weights, deterministic=deterministic)
    out = jnp.einsum("hla,ahd->lhd", weights, v)
    return nn.DenseGeneral(c, axis=(-2, -1), kernel_init=_shared(_uniform(1.0 / math.sqrt(c)), init_key, 3),
                           bias_init=nn.initializers.zeros, name="out", dtype=self.dtype)(out)


class CategoryEncoderLayer(nn.Module):
  """One post-norm block: t = LN1(t + Drop(Attn(t, A))); t = LN2(t + Drop(W2 Drop(ReLU(W1 t)))).

  Attributes:
    num_heads: attention heads.
    ffn_dim: hidden width of the feed-forward network.
    dropout_rate: attention-weight, residual and FFN dropout.
    dtype: compute dtype (None: float32); LayerNorm statistics are float32 either way.
  """

  num_heads: int = 4
  ffn_dim: int = 2048
  dropout_rate: float = 0.1
  dtype: Any = None

  @nn.compact
  def __call__(self, tokens: jax.Array, atoms: jax.Array, deterministic: bool, init_key=None) -> jax.Array:
    """tokens `[L, C]`, atoms `[A, C]` -> `[L, C]`. init_key: see `CategoryEncoder`."""
    c = tokens.shape[-1]
    drop = lambda y: nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)
    attn_key = None if init_key is None else jax.random.fold_in(init_key, 0)
    attention = CrossAttention(self.num_heads, self.dropout_rate, self.dtype, name="self_attn")
    u = attention(tokens, atoms, deterministic, attn_key)
    # Two-pass variance, as torch's LayerNorm: Flax's default E[x^2] - E[x]^2 loses digits to cancellation.
    t = nn.LayerNorm(epsilon=LN_EPS, name="norm1", dtype=self.dtype, use_fast_variance=False)(tokens + drop(u))
    h = drop(nn.relu(_torch_linear(self.ffn_dim, c, "linear1", 10, init_key, self.dtype)(t)))
    h = _torch_linear(c, self.ffn_dim, "linear2", 12, init_key, self.dtype)(h)
    return nn.LayerNorm(epsilon=LN_EPS, name="norm2", dtype=self.dtype, use_fast_variance=False)(t + drop(h))


class CategoryEncoder(nn.Module):
  """Category encoder (design.md §4.6): Y = X + T(X), T = num_layers cross-attention blocks over the atoms.

  Each pixel is a query token on its own (no pixel self-attention, no positional encoding); keys =
  values = the atoms proj_post(W), the same for every layer and every image. The layers start from
  identical weights (as the reference's deep copies).

  Attributes:
    num_layers: blocks (3).
    num_heads: attention heads (4; head dim C3 / 4).
    ffn_dim: feed-forward width (2048).
    dropout_rate: dropout everywhere in the blocks (0.1); off with `deterministic=True`.
    num_atoms: dictionary size (70 categories).
    num_known_categories: `num_atoms` = the dictionary comes from the category classifier (passed in);
      0 = a learned dictionary parameter `dictionary` `[num_atoms, dictionary_features]`, randomly
      initialised (U(+-1/sqrt(2 C4)), as clf_fc's weight) and trained only through this encoder.
    dictionary_features: C4, the atom width before projection; required when num_known_categories = 0.
    dtype: compute dtype of every layer (None: float32); parameters stay float32.
  """

  num_layers: int = 3
  num_heads: int = 4
  ffn_dim: int = 2048
  dropout_rate: float = 0.1
  num_atoms: int = NUM_CATEGORIES
  num_known_categories: int = NUM_CATEGORIES
  dictionary_features: int | None = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, dictionary: jax.Array | None = None, *, deterministic: bool) -> jax.Array:
    """Refines a feature map with the category dictionary.

    Args:
      x: `[N, H, W, C3]` classification-layer features (angle-modulated layer3).
      dictionary: `[num_atoms, C4]` from `CategoryClassifier.dictionary()`; None when
        num_known_categories = 0.
      deterministic: True disables dropout (tracking, evaluation); False needs a 'dropout' rng.

    Returns:
      `[N, H, W, C3]`.
    """
    if x.ndim != 4:
      raise ValueError(f"CategoryEncoder: x must be [N, H, W, C], got shape {x.shape}")
    c3 = x.shape[-1]
    if c3 % self.num_heads:
      raise ValueError(f"CategoryEncoder: channels {c3} not divisible by num_heads={self.num_heads}")
    if self.num_known_categories == self.num_atoms:
      if dictionary is None or dictionary.ndim != 2 or dictionary.shape[0] != self.num_atoms:
        raise ValueError(f"CategoryEncoder: dictionary must be [{self.num_atoms}, C4] (from the category "
                         f"classifier), got {None if dictionary is None else dictionary.shape}")
    elif self.num_known_categories == 0:
      if dictionary is not None:
        raise ValueError(
            "CategoryEncoder: num_known_categories=0 learns its own dictionary; pass dictionary=None")
      if not self.dictionary_features:
        raise ValueError("CategoryEncoder: num_known_categories=0 needs dictionary_features (C4)")
      c4 = self.dictionary_features
      dictionary = self.param("dictionary", _uniform(1.0 / math.sqrt(2 * c4)), (self.num_atoms, c4),
                              jnp.float32)
    else:
      raise ValueError(f"CategoryEncoder: num_known_categories must be {self.num_atoms} (classifier "
                       f"dictionary) or 0 (learned dictionary), got {self.num_known_categories}")
    atoms = _torch_linear(c3, dictionary.shape[1], "proj_post", dtype=self.dtype)(dictionary)  # [A, C3]
    # One key for every layer at init: identical initial weights (unused when applying).
    init_key = self.make_rng("params") if self.is_initializing() else None
    tokens = x.reshape(-1, c3)  # Pixels of all images are independent queries.
    t = tokens
    for i in range(self.num_layers):
      t = CategoryEncoderLayer(self.num_heads, self.ffn_dim, self.dropout_rate, self.dtype, name=f"layers_{i}")(
          t, atoms, deterministic, init_key)
    return (tokens + t).reshape(x.shape)

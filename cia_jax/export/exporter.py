"""`cia-jax export`: the tracker's jitted `init` / `step` as serialized StableHLO (`jax.export`) + weights + manifest.

    cia-jax export --tracker cia18 --checkpoint runs/cia18 --image-size 480x640 --out exported/cia18_480x640

The folder (read by `cia_jax/export/runtime.py`, copied into it as `cia_tracker_runtime.py`):
  * `init.jaxexport`: `init(weights, image, box_xywh, key) -> state`, `step.jaxexport`:
    `step(weights, state, image, key) -> {'state', 'box_xywh', 'max_score', 'flag'}`; `weights` is a tuple of the
    network's arrays, `state` a tuple of the tracker state's arrays (`TrackerState` flattened: the runtime needs
    no pytree class), `image` `[H, W, 3]` uint8, `box_xywh` `[4]` float32, `key` a raw `[2]` uint32 PRNG key;
  * `weights.npz`: the arrays `w0000`, `w0001`, ... in that order (names, shapes, dtypes in the manifest);
    separate from the programs so that the StableHLO stays small and new weights of the same network need no
    new export;
  * `manifest.json`: tracker preset, image size, every input and output (shape, dtype), platforms, jax version,
    the tracker settings and the network's attributes.

Restrictions: one export per frame size (`image` and the state have static shapes; `--image-size` must be the
frames' size) and per settings (they are compiled in). The programs are lowered for `platforms` (default CPU,
CUDA and TPU in one file; jax picks the one it runs on). Deserializing needs a jax at least as new as the one
that exported, within jax's serialization compatibility window (see the jax.export documentation).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import export as jax_export

from cia_jax.export import runtime
from cia_jax.track import tracker as trk
from cia_jax.track.params import TrackerSettings

DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")
IMAGE_DTYPE = np.uint8


def parse_image_size(text: str) -> tuple[int, int]:
  """'HxW' (e.g. '480x640': 480 rows, 640 columns) -> (H, W); ValueError otherwise."""
  parts = text.lower().replace(" ", "").split("x")
  try:
    h, w = (int(p) for p in parts)
  except ValueError:
    raise ValueError(f"image size {text!r}: expected HxW in pixels, e.g. 480x640 (height x width)") from None
  if h < 1 or w < 1:
    raise ValueError(f"image size {text!r}: height and width must be >= 1")
  return h, w


def _json_safe(x: Any) -> Any:
  """Settings / module attributes -> JSON (tuples as lists, non-finite floats as 'inf' / '-inf' / 'nan')."""
  if isinstance(x, Mapping):
    return {str(k): _json_safe(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_json_safe(v) for v in x]
  if isinstance(x, float) and not math.isfinite(x):
    return str(x)
  if isinstance(x, (np.generic,)):
    return _json_safe(x.item())
  return x if isinstance(x, (str, int, float, bool, type(None))) else repr(x)


def _entries(tree: Any, prefix: str = "") -> list[dict]:
  """One {'name', 'shape', 'dtype'} per leaf of a tree of arrays / ShapeDtypeStructs, named by its path."""
  out = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    name = jax.tree_util.keystr(path, simple=True, separator="/")
    out.append({"name": prefix + name, "shape": list(leaf.shape), "dtype": str(np.dtype(leaf.dtype))})
  return out


def module_attributes(net) -> dict:
  """The constructor attributes of a Flax module (what `build_model` takes), JSON-safe."""
  return _json_safe({f.name: getattr(net, f.name) for f in dataclasses.fields(net)
                     if f.name not in ("parent", "name")})


def tracker_programs(net, settings: TrackerSettings, weights: Sequence[Any], weights_def,
                     image_size: tuple[int, int]):
  """The functions to export and their abstract arguments.

  Args:
    net: the static Flax module; settings: the static tracker settings.
    weights: the network's variables as a flat list of arrays (or ShapeDtypeStructs), in `weights_def` order.
    weights_def: the treedef of the variables (`{'params': ..., 'batch_stats': ...}`).
    image_size: (H, W) of the frames.

  Returns:
    (init_fn, step_fn, init_args, step_args, state): the functions over flat tuples (see the module docstring),
    their `ShapeDtypeStruct` arguments, and the abstract `TrackerState` (for the state's names).
  """

  def model(weights):
    return trk.TrackingModel(net=net, variables=jax.tree.unflatten(weights_def, list(weights)))

  def init_state(weights, image, box, key):
    return trk.init(model(weights), settings, image, box, key)

  weights = tuple(jax.ShapeDtypeStruct(np.shape(w), w.dtype) for w in weights)
  image = jax.ShapeDtypeStruct((*image_size, 3), IMAGE_DTYPE)
  box = jax.ShapeDtypeStruct((4,), jnp.float32)
  key = jax.ShapeDtypeStruct((2,), jnp.uint32)
  state = jax.eval_shape(init_state, weights, image, box, key)
  state_def = jax.tree.structure(state)

  def init_fn(weights, image, box, key):
    return tuple(jax.tree.leaves(init_state(weights, image, box, key)))

  def step_fn(weights, state_leaves, image, key):
    new_state, out = trk.step(model(weights), settings, jax.tree.unflatten(state_def, list(state_leaves)), image,
                              key)
    return {"state": tuple(jax.tree.leaves(new_state)), **out}

  state_args = tuple(jax.tree.leaves(state))
  return init_fn, step_fn, (weights, image, box, key), (weights, state_args, image, key), state


def _write(path: str, data: bytes) -> None:
  with open(path, "wb") as f:
    f.write(data)


def export_tracker(model: trk.TrackingModel, settings: TrackerSettings, image_size: tuple[int, int], out_dir: str,
                   platforms: Sequence[str] = DEFAULT_PLATFORMS, info: Mapping[str, Any] | None = None) -> dict:
  """Writes an export folder (see the module docstring) and returns its manifest.

  Args:
    model: the network and its variables.
    settings: tracker settings (compiled into the programs).
    image_size: (H, W) of the frames the programs will take.
    out_dir: the folder (created; files of an earlier export there are replaced).
    platforms: jax platforms to lower for ('cpu', 'cuda', 'rocm', 'tpu').
    info: extra manifest entries (e.g. `tracker`, `source`).

  Returns:
    The manifest dict, also written to `<out_dir>/manifest.json`.
  """
  leaves, weights_def = jax.tree.flatten(model.variables)
  leaves = [np.asarray(w) for w in leaves]
  init_fn, step_fn, init_args, step_args, state = tracker_programs(model.net, settings, leaves, weights_def,
                                                                   image_size)
  init_exp = jax_export.export(jax.jit(init_fn), platforms=tuple(platforms))(*init_args)
  step_exp = jax_export.export(jax.jit(step_fn), platforms=tuple(platforms))(*step_args)
  os.makedirs(out_dir, exist_ok=True)
  _write(os.path.join(out_dir, runtime.INIT_FILE), bytes(init_exp.serialize()))
  _write(os.path.join(out_dir, runtime.STEP_FILE), bytes(step_exp.serialize()))
  keys = [f"w{i:04d}" for i in range(len(leaves))]
  np.savez(os.path.join(out_dir, runtime.WEIGHTS_FILE), **dict(zip(keys, leaves)))
  shutil.copyfile(runtime.__file__, os.path.join(out_dir, runtime.RUNTIME_FILE))
  manifest = _manifest(model.net, settings, image_size, platforms, leaves, weights_def, keys, state, step_exp, info)
  with open(os.path.join(out_dir, runtime.MANIFEST_FILE), "w", encoding="utf-8") as f:
    json.dump(manifest, f, indent=1)
    f.write("\n")
  return manifest


def _manifest(net, settings, image_size, platforms, leaves, weights_def, keys, state, step_exp, info) -> dict:
  """The manifest: what each program takes and returns, and how it was made."""
  weights = [dict(e, key=k) for e, k in zip(_entries(jax.tree.unflatten(weights_def, leaves)), keys)]
  state_entries = _entries(state)
  image = {"name": "image", "shape": [*image_size, 3], "dtype": np.dtype(IMAGE_DTYPE).name,
           "doc": "RGB frame, 0..255"}
  key = {"name": "key", "shape": [2], "dtype": "uint32",
         "doc": "raw PRNG key: jax.random.fold_in(jax.random.PRNGKey(seed), frame index), frame 0 for init"}
  weights_in = {"name": "weights", "tuple_of": len(weights), "doc": "the arrays of `weights`, in order"}
  state_io = {"name": "state", "tuple_of": len(state_entries), "doc": "the arrays of `state`, in order"}
  outs = jax.tree.unflatten(step_exp.out_tree, step_exp.out_avals)
  step_outs = [state_io] + _entries({k: v for k, v in outs.items() if k != "state"})
  return {
      "format": runtime.FORMAT, "format_version": runtime.FORMAT_VERSION, **_json_safe(dict(info or {})),
      "image_size": list(image_size), "platforms": list(platforms), "jax_version": jax.__version__,
      "init": {"file": runtime.INIT_FILE, "inputs": [weights_in, image, {"name": "box_xywh", "shape": [4],
                                                                        "dtype": "float32"}, key],
               "outputs": [state_io]},
      "step": {"file": runtime.STEP_FILE, "inputs": [weights_in, state_io, image, key],
               "outputs": step_outs, "output_structure": "dict: state (tuple) + the named arrays"},
      "state": state_entries,
      "weights": {"file": runtime.WEIGHTS_FILE, "arrays": weights},
      "settings": _json_safe(dataclasses.asdict(settings)),
      "model": module_attributes(net),
      "runtime": runtime.RUNTIME_FILE,
  }

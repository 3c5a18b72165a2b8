"""Tests for cia_jax.models.resnet against spec section 1 and a float64 NumPy reference."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.models import resnet
from cia_jax.models.resnet import LAYER_NAMES, BasicBlock, Bottleneck

EPS = 1e-5
MOMENTUM = 0.9  # weight of the old running statistic (PyTorch momentum 0.1)
# float32 JAX vs float64 NumPy: a handful of convs and BN normalisations accumulate ~1e-6 relative error.
RTOL, ATOL = 1e-4, 1e-4


# ----------------------------------------------------------------------------- float64 NumPy reference
def np_conv(x, w, stride, pad):
  """out[n, oy, ox, o] = sum_{i, j, c} xpad[n, s*oy + i, s*ox + j, c] * w[i, j, c, o]; symmetric zero pad."""
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  k = w.shape[0]
  ho = (x.shape[1] - k) // stride + 1
  wo = (x.shape[2] - k) // stride + 1
  out = np.zeros((x.shape[0], ho, wo, w.shape[-1]))
  for i in range(k):
    for j in range(k):
      patch = x[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride, :]
      out += patch @ w[i, j]
  return out


def np_bn(x, p, s, train):
  """BatchNorm2d -> (y, new_stats). Train: biased var normalises, unbiased var feeds the running var."""
  if train:
    mean = x.mean(axis=(0, 1, 2))
    var = x.var(axis=(0, 1, 2))
    n = x.size // x.shape[-1]
    new = {"mean": MOMENTUM * s["mean"] + (1 - MOMENTUM) * mean,
           "var": MOMENTUM * s["var"] + (1 - MOMENTUM) * var * n / (n - 1)}
  else:
    mean, var, new = s["mean"], s["var"], s
  return (x - mean) / np.sqrt(var + EPS) * p["scale"] + p["bias"], new


def np_maxpool(x):
  """3x3 / stride 2 / pad 1 with -inf padding."""
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  ho, wo = (x.shape[1] - 1) // 2 + 1, (x.shape[2] - 1) // 2 + 1
  out = np.full((x.shape[0], ho, wo, x.shape[3]), -np.inf)
  for i in range(3):
    for j in range(3):
      out = np.maximum(out, xp[:, i:i + 2 * (ho - 1) + 1:2, j:j + 2 * (wo - 1) + 1:2, :])
  return out


def relu(x):
  return np.maximum(x, 0)


def np_block(kind, x, p, s, stride, train):
  """BasicBlock / Bottleneck (stride on the 3x3 conv). Returns (y, new batch_stats of the block)."""
  new = {}

  def conv_bn(h, conv, bn, k, st):
    y, new[bn] = np_bn(np_conv(h, p[conv]["kernel"], st, k // 2), p[bn], s[bn], train)
    return y

  if kind == "basic":
    out = relu(conv_bn(x, "conv1", "bn1", 3, stride))
    out = conv_bn(out, "conv2", "bn2", 3, 1)
  else:
    out = relu(conv_bn(x, "conv1", "bn1", 1, 1))
    out = relu(conv_bn(out, "conv2", "bn2", 3, stride))
    out = conv_bn(out, "conv3", "bn3", 1, 1)
  shortcut = x
  if "downsample" in p:
    shortcut, ds = np_bn(np_conv(x, p["downsample"]["0"]["kernel"], stride, 0), p["downsample"]["1"],
                         s["downsample"]["1"], train)
    new["downsample"] = {"1": ds}
  return relu(out + shortcut), new


def np_resnet(kind, x, p, s, train):
  """Whole backbone; returns ({layer: features}, new batch_stats)."""
  outs, new = {}, {}
  y, new["bn1"] = np_bn(np_conv(x, p["conv1"]["kernel"], 2, 3), p["bn1"], s["bn1"], train)
  outs["conv1"] = y = relu(y)
  y = np_maxpool(y)
  for li in range(1, 5):
    name = f"layer{li}"
    new[name] = {}
    for b in sorted(p[name], key=int):
      stride = 2 if li > 1 and b == "0" else 1
      y, new[name][b] = np_block(kind, y, p[name][b], s[name][b], stride, train)
    outs[name] = y
  return outs, new


# ----------------------------------------------------------------------------- helpers
def random_variables(abstract, seed=0):
  """Concrete variables for an abstract tree (from `jax.eval_shape` of an init), drawn with NumPy.

  Conv kernels ~ N(0, sqrt(2 / (k * k * out))) as the real init; BN scale/var ~ U(0.5, 1.5) and bias/mean
  ~ N(0, 0.2) so eval mode is a real check. Avoids compiling the Flax init, whose threefry random draws take
  seconds to compile on CPU; `test_init_distribution` covers the real init.
  """
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == "kernel":
      kh, kw, _, out = leaf.shape
      value = rng.normal(0.0, np.sqrt(2.0 / (kh * kw * out)), leaf.shape)
    elif name in ("scale", "var"):
      value = rng.uniform(0.5, 1.5, leaf.shape)
    else:
      value = rng.normal(0.0, 0.2, leaf.shape)
    return jnp.asarray(value, jnp.float32)

  return jax.tree_util.tree_map_with_path(draw, abstract)


def to_np(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def assert_tree_close(a, b, rtol=RTOL, atol=ATOL):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def tiny(block, **kw):
  """Width 4, blocks (2, 1, 1, 1): layer1 has an identity-shortcut block too."""
  return resnet.ResNet(block=block, stage_sizes=(2, 1, 1, 1), width=4, **kw)


def tiny_variables(block):
  """All-layer variables of `tiny(block)` (any frozen_layers), see `random_variables`; a fresh dict."""
  abstract = jax.eval_shape(functools.partial(resnet.init_variables, tiny(block)), jax.random.key(0))
  return random_variables(abstract, seed=2)


def images(shape=(2, 32, 32, 3), seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


# ----------------------------------------------------------------------------- shapes (design.md §1.1)
CHANNELS = {"resnet18": (64, 64, 128, 256, 512), "resnet50": (64, 256, 512, 1024, 2048)}
SIZES = {288: (144, 72, 36, 18, 9), 352: (176, 88, 44, 22, 11)}


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
@pytest.mark.parametrize("size", [288, 352])
def test_full_size_shapes(arch, size):
  model = getattr(resnet, arch)()
  x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
  outs, _ = jax.eval_shape(functools.partial(model.init_with_output, output_layers=LAYER_NAMES),
                           jax.random.key(0), x)
  assert list(outs) == list(LAYER_NAMES)
  for name, hw, c in zip(LAYER_NAMES, SIZES[size], CHANNELS[arch]):
    assert outs[name].shape == (2, hw, hw, c), name
    assert size // resnet.LAYER_STRIDES[name] == hw
  block = "basic" if arch == "resnet18" else "bottleneck"
  assert tuple(resnet.layer_channels(block).values()) == CHANNELS[arch]


@pytest.mark.parametrize("arch,num_params", [("resnet18", 11_689_512 - 513_000),
                                             ("resnet50", 25_557_032 - 2_049_000)])
def test_param_count_matches_torchvision_without_fc(arch, num_params):
  variables = jax.eval_shape(functools.partial(resnet.init_variables, getattr(resnet, arch)()),
                             jax.random.key(0))
  assert sum(int(np.prod(a.shape)) for a in jax.tree.leaves(variables["params"])) == num_params


def test_param_names_follow_torch_keys():
  variables = jax.eval_shape(functools.partial(resnet.init_variables, resnet.resnet50()), jax.random.key(0))
  p, s = variables["params"], variables["batch_stats"]
  assert set(p) == {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4"}
  assert set(p["layer3"]) == {str(i) for i in range(6)}
  assert set(p["layer1"]["0"]) == {"conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "downsample"}
  # torch layer2.0.downsample.0.weight (512, 256, 1, 1) / .1.running_var (512,)
  assert p["layer2"]["0"]["downsample"]["0"]["kernel"].shape == (1, 1, 256, 512)
  assert s["layer2"]["0"]["downsample"]["1"]["var"].shape == (512,)
  assert "downsample" not in p["layer2"]["1"]
  r18 = jax.eval_shape(functools.partial(resnet.init_variables, resnet.resnet18()), jax.random.key(0))
  assert "downsample" not in r18["params"]["layer1"]["0"]  # 64 -> 64, stride 1: identity shortcut
  assert r18["params"]["layer4"]["0"]["conv1"]["kernel"].shape == (3, 3, 256, 512)


def test_init_distribution():
  """Random init (design.md §1.1): conv N(0, sqrt(2 / (k k out))), BN scale 1 / bias 0, running mean 0 / var 1."""
  block = BasicBlock(32, stride=2, use_downsample=True)
  variables = block.init(jax.random.key(0), jnp.zeros((1, 4, 4, 16)), use_running_average=True)
  p, s = variables["params"], variables["batch_stats"]
  for kernel in (p["conv1"]["kernel"], p["conv2"]["kernel"], p["downsample"]["0"]["kernel"]):
    kh, kw, cin, out = kernel.shape
    std = np.sqrt(2.0 / (kh * kw * out))
    tol = 4 * std / np.sqrt(2 * kernel.size)  # 4 standard errors of the sample std
    assert abs(float(jnp.std(kernel)) - std) < tol, kernel.shape
    assert abs(float(jnp.mean(kernel))) < 4 * std / np.sqrt(kernel.size)
  for path in (("bn1",), ("bn2",), ("downsample", "1")):
    bn_p, bn_s = functools.reduce(dict.get, path, p), functools.reduce(dict.get, path, s)
    np.testing.assert_array_equal(bn_p["scale"], 1.0)
    np.testing.assert_array_equal(bn_p["bias"], 0.0)
    np.testing.assert_array_equal(bn_s["mean"], 0.0)
    np.testing.assert_array_equal(bn_s["var"], 1.0)


# ----------------------------------------------------------------------------- numerics vs NumPy
BLOCK_CASES = [  # (cls, planes, stride, use_downsample, in_channels)
    (BasicBlock, 6, 2, True, 4),
    (BasicBlock, 4, 1, False, 4),
    (Bottleneck, 3, 2, True, 8),
    (Bottleneck, 3, 1, True, 5),
    (Bottleneck, 2, 1, False, 8),
]


@pytest.mark.parametrize("cls,planes,stride,use_downsample,cin", BLOCK_CASES)
@pytest.mark.parametrize("train", [True, False])
def test_block_matches_numpy(cls, planes, stride, use_downsample, cin, train):
  block = cls(planes, stride, use_downsample)
  x = images((3, 8, 8, cin), seed=1)  # even size: stride-2 padding asymmetry would show
  variables = random_variables(
      jax.eval_shape(functools.partial(block.init, use_running_average=False), jax.random.key(1), x), seed=1)
  y, updates = block.apply(variables, x, use_running_average=not train, mutable=["batch_stats"])
  kind = "basic" if cls is BasicBlock else "bottleneck"
  ref, ref_stats = np_block(kind, to_np(x), to_np(variables["params"]), to_np(variables["batch_stats"]),
                            stride, train)
  assert y.shape == ref.shape
  np.testing.assert_allclose(np.asarray(y), ref, rtol=RTOL, atol=ATOL)
  assert_tree_close(updates["batch_stats"], ref_stats)


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
@pytest.mark.parametrize("train", [True, False])
def test_tiny_resnet_matches_numpy(block, train):
  model = tiny(block)
  # 62 -> 31 -> 16 -> 8 -> 4 -> 2: odd and even sizes; layer4 keeps 8 values per channel for batch stats.
  x = images((2, 62, 62, 3))
  variables = tiny_variables(block)
  outs, updates = model.apply(variables, x, output_layers=LAYER_NAMES, train=train, mutable=["batch_stats"])
  ref, ref_stats = np_resnet(block, to_np(x), to_np(variables["params"]), to_np(variables["batch_stats"]),
                             train)
  for name in LAYER_NAMES:
    assert outs[name].shape == ref[name].shape, name
    np.testing.assert_allclose(np.asarray(outs[name]), ref[name], rtol=RTOL, atol=ATOL, err_msg=name)
  assert_tree_close(updates["batch_stats"], ref_stats)


def test_jit_matches_eager_and_is_finite():
  model = tiny("bottleneck")
  variables = tiny_variables("bottleneck")
  x = images((2, 48, 48, 3))
  eager = model.apply(variables, x, output_layers=("layer3", "layer4"))
  jitted = jax.jit(functools.partial(model.apply, output_layers=("layer3", "layer4")))(variables, x)
  assert eager["layer3"].shape == (2, 3, 3, 64) and eager["layer4"].shape == (2, 2, 2, 128)
  assert_tree_close(eager, jitted, rtol=1e-5, atol=1e-5)
  assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(eager))
  assert float(jnp.std(eager["layer4"])) > 0


# ----------------------------------------------------------------------------- padding conventions
def test_stem_conv_symmetric_padding_one_hot():
  """A centre-tap 7x7/2 kernel maps input pixel (2r, 2c) to output (r, c), as PyTorch (pad 3 each side).

  `padding='SAME'` on this even input would pad 2 before / 3 after and put the tap at input (2r+1, 2c+1).
  """
  model = tiny("basic")
  variables = tiny_variables("basic")
  kernel = np.zeros((7, 7, 3, 4), np.float32)
  kernel[3, 3, 0, 0] = 1.0
  variables["params"]["conv1"]["kernel"] = jnp.asarray(kernel)
  x = np.zeros((1, 16, 16, 3), np.float32)
  x[0, 6, 10, 0] = 1.0
  out = model.apply(variables, jnp.asarray(x), output_layers=("conv1",))["conv1"]
  assert out.shape == (1, 8, 8, 4)
  hot = np.argwhere(np.asarray(out[0, :, :, 0]) > 0.5)
  np.testing.assert_array_equal(hot, [[3, 5]])


def test_max_pool_pads_with_minus_inf_symmetrically():
  x = -1.0 - np.random.default_rng(0).uniform(size=(1, 6, 6, 2))  # all negative: zero padding would show
  x[0, 2, 4, 1] = 5.0
  out = np.asarray(resnet.max_pool_3x3_s2(jnp.asarray(x, jnp.float32)))
  np.testing.assert_allclose(out, np_maxpool(x), rtol=1e-6)
  assert out.shape == (1, 3, 3, 2) and np.all(out[..., 0] < 0)
  # Window o covers input 2o-1 .. 2o+1: row 2 -> rows {1}, col 4 -> cols {2} (SAME would give rows {0, 1}).
  np.testing.assert_array_equal(np.argwhere(out[0, :, :, 1] == 5.0), [[1, 2]])


@pytest.mark.parametrize("shape", [(1, 7, 9, 3), (2, 5, 4, 1), (1, 40, 40, 2)])
def test_max_pool_odd_and_even_sizes_and_gradient(shape):
  x = np.random.default_rng(1).standard_normal(shape)  # continuous values: no ties
  xj = jnp.asarray(x, jnp.float32)
  np.testing.assert_array_equal(np.asarray(resnet.max_pool_3x3_s2(xj)), np_maxpool(x.astype(np.float32)))
  # d sum(pool) / dx = how many windows take each element as their maximum (torch routes to the arg max).
  grad = np.asarray(jax.grad(lambda v: jnp.sum(resnet.max_pool_3x3_s2(v)))(xj))
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  count = np.zeros_like(xp)
  ho, wo = (shape[1] - 1) // 2 + 1, (shape[2] - 1) // 2 + 1
  for n in range(shape[0]):
    for c in range(shape[3]):
      for oy in range(ho):
        for ox in range(wo):
          win = xp[n, 2 * oy:2 * oy + 3, 2 * ox:2 * ox + 3, c]
          dy, dx = np.unravel_index(np.argmax(win), (3, 3))
          count[n, 2 * oy + dy, 2 * ox + dx, c] += 1
  np.testing.assert_array_equal(grad, count[:, 1:-1, 1:-1, :])


# ----------------------------------------------------------------------------- early stop
def test_stops_after_deepest_requested_layer():
  model = tiny("bottleneck")
  x = images()
  variables = tiny_variables("bottleneck")
  for collection in variables.values():
    del collection["layer3"], collection["layer4"]
  outs = model.apply(variables, x, output_layers=("layer2", "conv1"))
  assert list(outs) == ["conv1", "layer2"]
  with pytest.raises(Exception, match="layer3"):
    model.apply(variables, x, output_layers=("layer3",))


# ----------------------------------------------------------------------------- frozen layers
FROZEN = ("conv1", "layer1", "layer2")


def _grads_and_stats(model, variables, x, layers):
  def loss(params):
    outs, upd = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                            output_layers=layers, train=True, mutable=["batch_stats"])
    return sum(jnp.sum(jnp.sin(o)) for o in outs.values()), upd["batch_stats"]

  return jax.grad(loss, has_aux=True)(variables["params"])


def _max_abs(tree):
  return max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(tree))


def _changed(a, b):
  return any(not np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(jax.tree.leaves(a),
                                                                               jax.tree.leaves(b)))


def test_frozen_layers_get_no_gradient_and_keep_bn_stats():
  model = tiny("basic", frozen_layers=FROZEN)
  variables = tiny_variables("basic")
  x = images()
  # The frozen layer2 output is requested too: its gradient path must not reach conv1..layer2 either.
  grads, stats = _grads_and_stats(model, variables, x, ("layer2", "layer3"))
  for name in ("conv1", "bn1", "layer1", "layer2"):
    assert _max_abs(grads[name]) == 0.0, name
  for name in ("bn1", "layer1", "layer2"):  # conv1 has no batch_stats
    assert not _changed(stats[name], variables["batch_stats"][name]), name
  assert _max_abs(grads["layer3"]) > 0
  assert _changed(stats["layer3"], variables["batch_stats"]["layer3"])
  # Frozen BN runs on running statistics even with train=True.
  train_out = model.apply(variables, x, output_layers=("layer2",), train=True, mutable=["batch_stats"])[0]
  eval_out = model.apply(variables, x, output_layers=("layer2",), train=False)
  np.testing.assert_array_equal(np.asarray(train_out["layer2"]), np.asarray(eval_out["layer2"]))


def test_unfrozen_layers_train_everything():
  model = tiny("basic")
  variables = tiny_variables("basic")
  grads, stats = _grads_and_stats(model, variables, images(), ("layer3",))
  for name in ("conv1", "bn1", "layer1", "layer2", "layer3"):
    assert _max_abs(grads[name]) > 0, name
  for name in ("bn1", "layer1", "layer2", "layer3"):
    assert _changed(stats[name], variables["batch_stats"][name]), name
  # layer4 is not run when layer3 is the deepest output: zero gradient, untouched statistics.
  assert _max_abs(grads["layer4"]) == 0.0
  assert not _changed(stats["layer4"], variables["batch_stats"]["layer4"])


def test_frozen_mask():
  init = functools.partial(resnet.init_variables, tiny("basic"))
  params = jax.eval_shape(init, jax.random.key(0))["params"]
  mask = resnet.frozen_mask(params, FROZEN)
  for name, frozen in [("conv1", True), ("bn1", True), ("layer1", True), ("layer2", True),
                       ("layer3", False), ("layer4", False)]:
    assert set(jax.tree.leaves(mask[name])) == {frozen}, name
  assert jax.tree.structure(mask) == jax.tree.structure(params)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("shape", [(32, 32, 3), (1, 32, 32, 4), (1, 3, 32, 32)])
def test_bad_input_shape(shape):
  with pytest.raises(ValueError, match=r"expected images \[N, H, W, 3\]"):
    jax.eval_shape(functools.partial(tiny("basic").init, output_layers=("layer1",)), jax.random.key(0),
                   jax.ShapeDtypeStruct(shape, jnp.float32))


@pytest.mark.parametrize("kwargs,msg", [
    (dict(output_layers=("layer5",)), "output_layers"),
    (dict(output_layers=()), "output_layers"),
])
def test_bad_output_layers(kwargs, msg):
  with pytest.raises(ValueError, match=msg):
    tiny("basic").init(jax.random.key(0), images((1, 32, 32, 3)), **kwargs)


@pytest.mark.parametrize("model,msg", [
    (resnet.ResNet(block="resnext", stage_sizes=(1, 1, 1, 1)), "block"),
    (resnet.ResNet(block="basic", stage_sizes=(1, 1, 1)), "stage_sizes"),
    (resnet.ResNet(block="basic", stage_sizes=(1, 1, 1, 1), frozen_layers=("layer1",)), "prefix"),
    (resnet.ResNet(block="basic", stage_sizes=(1, 1, 1, 1), frozen_layers=("conv1", "layer2")), "prefix"),
])
def test_bad_config(model, msg):
  with pytest.raises(ValueError, match=msg):
    model.init(jax.random.key(0), images((1, 32, 32, 3)))


def test_bad_block_shortcut_and_layer_channels():
  with pytest.raises(ValueError, match="use_downsample"):
    BasicBlock(8, stride=2).init(jax.random.key(0), images((1, 8, 8, 8)), use_running_average=True)
  with pytest.raises(ValueError, match="use_downsample"):
    Bottleneck(4).init(jax.random.key(0), images((1, 8, 8, 8)), use_running_average=True)
  with pytest.raises(ValueError, match="block"):
    resnet.layer_channels("wide")


# ----------------------------------------------------------------------------- Winograd convolutions
@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_winograd_resnet_matches_numpy(block):
  """Width 32: the 3x3 stride-1 convs of 128+ input channels go through Winograd F(2x2, 3x3) (layer3 / layer4
  of the basic net, layer4 of the bottleneck one), from the kernels or from `prepare_variables`' transforms."""
  from cia_jax.ops import winograd  # pylint: disable=g-import-not-at-top
  direct = resnet.ResNet(block=block, stage_sizes=(1, 2, 2, 1), width=32)
  wino = direct.clone(winograd=128)
  abstract = jax.eval_shape(functools.partial(resnet.init_variables, direct), jax.random.key(0))
  variables = random_variables(abstract, seed=3)
  x = images((1, 48, 46, 3), seed=4)
  ref, _ = np_resnet(block, to_np(x), to_np(variables["params"]), to_np(variables["batch_stats"]), False)
  convs = lambda net: str(jax.make_jaxpr(  # noqa: E731
      lambda v: net.apply(v, x, output_layers=LAYER_NAMES))(variables)).count("conv_general_dilated")
  assert convs(wino) < convs(direct)  # the Winograd path is taken
  prepared = winograd.prepare_variables(variables)
  assert winograd.COLLECTION in prepared
  outs = {name: jax.jit(lambda v, net=net: net.apply(v, x, output_layers=LAYER_NAMES))(v)
          for name, net, v in (("direct", direct, variables), ("wino", wino, variables),
                               ("prepared", wino, prepared))}
  for layer in LAYER_NAMES:
    scale = np.abs(ref[layer]).max()
    errs = {k: np.abs(np.asarray(o[layer], np.float64) - ref[layer]).max() / scale for k, o in outs.items()}
    assert errs["wino"] < 1e-5 and errs["prepared"] < 1e-5, (layer, errs)
    assert errs["wino"] < 4 * errs["direct"] + 1e-7, (layer, errs)
  np.testing.assert_array_equal(np.asarray(outs["wino"]["layer4"]), np.asarray(outs["prepared"]["layer4"]))

"""LinearFilter (design.md §2): stage methods, separate BN batches for train/test frames, full-size shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cia_jax.models.dimp.classifier import LinearFilter
from cia_jax.models.dimp.filter import apply_filter

NTR, NTE, B, CIN, D = 3, 2, 2, 6, 4


def tiny(**kw):
  return LinearFilter(arch="r18", out_dim=D, in_dim=CIN, init_gauss_sigma=0.9, num_iter=3, **kw)


def inputs(seed=0, h=5, h_test=6):
  rng = np.random.default_rng(seed)
  train = jnp.asarray(rng.normal(size=(NTR, B, h, h, CIN)), jnp.float32)
  test = jnp.asarray(rng.normal(size=(NTE, B, h_test, h_test, CIN)) + 0.5, jnp.float32)
  wh = rng.uniform(20, 40, (NTR, B, 2))
  box = jnp.asarray(np.concatenate([rng.uniform(0, 40, (NTR, B, 2)), wh], -1), jnp.float32)
  return train, test, box


@pytest.fixture(scope="module")
def setup():
  m = tiny()
  train, test, box = inputs()
  v = jax.jit(lambda *a: m.init(jax.random.PRNGKey(0), *a, train=True))(train, test, box)
  return m, v, train, test, box


def test_training_forward_equals_stage_methods_with_two_bn_batches(setup):
  m, v, train, test, box = setup
  fwd = jax.jit(lambda v, *a: m.apply(v, *a, train=True, mutable=["batch_stats"]))
  scores, upd = fwd(v, train, test, box)
  assert scores.shape == (4, NTE, B, 7, 7)  # num_iter + 1 iterates, 6x6 test features -> 7x7

  @jax.jit
  def staged(v, train, test, box):
    """The stage methods by name and by function: train frames, then test frames, each its own BN batch."""
    tr_clf, s1 = m.apply(v, train, True, method="extract_classification_feat", mutable=["batch_stats"])
    te_clf, s2 = m.apply({**v, **s1}, test, True, method=LinearFilter.extract_classification_feat,
                         mutable=["batch_stats"])
    _, iterates, losses = m.apply(v, tr_clf, box, method="get_filter")
    return jnp.stack([m.apply(v, f, te_clf, method="classify") for f in iterates]), s2, losses

  ref, s2, losses = staged(v, train, test, box)
  np.testing.assert_allclose(np.asarray(scores), np.asarray(ref), rtol=1e-5, atol=1e-6)
  # Running statistics moved twice (train batch, then test batch), as two PyTorch forward calls do.
  for a, b in zip(jax.tree.leaves(upd), jax.tree.leaves(s2)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  assert losses.shape == (4,)

  # One joint batch would give different test features (the statistics differ: test frames are shifted).
  def extract(x):
    return m.apply(v, x, True, method="extract_classification_feat", mutable=["batch_stats"])[0]

  test5 = test[:, :, :5, :5]
  joint = extract(jnp.concatenate([train, test5]))[NTR:]
  assert not np.allclose(np.asarray(joint), np.asarray(extract(test5)), atol=1e-3)


def test_stage_methods(setup):
  m, v, train, test, box = setup

  @jax.jit
  def stages(v, train, box):
    clf = m.apply(v, train, False, method="extract_classification_feat")
    flat = m.apply(v, train.reshape(NTR * B, 5, 5, CIN), False, method="extract_classification_feat")
    f0 = m.apply(v, clf, box, method="init_filter")
    final, iterates, losses = m.apply(v, clf, box, method="get_filter", num_iter=2)
    again = m.apply(v, f0, clf, box, jnp.full((NTR,), 1 / NTR), 2, method="optimize_filter")[0]
    scores = m.apply(v, final, clf, method="classify")
    return clf, flat, f0, final, iterates, losses, again, scores

  clf, flat, f0, final, iterates, losses, again, scores = stages(v, train, box)
  assert clf.shape == (NTR, B, 5, 5, D) and flat.shape == (NTR * B, 5, 5, D)
  np.testing.assert_allclose(np.asarray(flat).reshape(clf.shape), np.asarray(clf), rtol=1e-6)
  assert f0.shape == (B, 4, 4, D) and iterates.shape == (3, B, 4, 4, D) and losses.shape == (3,)
  np.testing.assert_allclose(np.asarray(iterates[0]), np.asarray(f0), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(again), np.asarray(final), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.asarray(scores), np.asarray(apply_filter(clf, final)), rtol=1e-5, atol=1e-6)
  assert scores.shape == (NTR, B, 6, 6)


def test_gradients_reach_every_parameter_and_the_features(setup):
  m, v, train, test, box = setup

  def loss(params, train, test):
    scores, _ = m.apply({**v, "params": params}, train, test, box, train=True, mutable=["batch_stats"])
    return jnp.mean((scores - 0.3) ** 2)

  gp, gtr, gte = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(v["params"], train, test)
  for path, g in jax.tree_util.tree_leaves_with_path(gp) + [("train", gtr), ("test", gte)]:
    assert np.all(np.isfinite(np.asarray(g))), path
    assert np.abs(np.asarray(g)).max() > 0, path


@pytest.mark.parametrize("arch,cin,d,hw", [("r18", 256, 256, 18), ("r50", 1024, 512, 22)])
def test_full_size_shapes(arch, cin, d, hw):
  m = LinearFilter(arch=arch, out_dim=d, init_gauss_sigma=0.9)
  train = jax.ShapeDtypeStruct((3, 8, hw, hw, cin), jnp.float32)
  test = jax.ShapeDtypeStruct((3, 8, hw, hw, cin), jnp.float32)
  box = jax.ShapeDtypeStruct((3, 8, 4), jnp.float32)
  v = jax.eval_shape(lambda *a: m.init(jax.random.PRNGKey(0), *a, train=True), train, test, box)
  p = v["params"]
  assert p["filter_initializer"]["filter_conv"]["kernel"].shape == (3, 3, d, d)
  assert p["filter_optimizer"]["target_mask_predictor"]["0"]["kernel"].shape == (1, 1, 100, 1)
  fwd = lambda v, *a: m.apply(v, *a, train=True, mutable=["batch_stats"])[0]  # noqa: E731
  out = jax.eval_shape(fwd, v, train, test, box)
  assert out.shape == (6, 3, 8, hw + 1, hw + 1)


def test_errors(setup):
  m, v, train, test, box = setup
  with pytest.raises(ValueError, match="train_feat"):
    m.apply(v, train[0], test, box, train=False)
  with pytest.raises(ValueError, match="sequences"):
    m.apply(v, train, test[:, :1], box, train=False)
  with pytest.raises(ValueError, match=r"\[N, H, W, 6\]"):
    m.apply(v, train[..., :3], test[..., :3], box, train=False)
  with pytest.raises(ValueError, match="extract_classification_feat"):
    m.apply(v, train[0, 0], False, method="extract_classification_feat")

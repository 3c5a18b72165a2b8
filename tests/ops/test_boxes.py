"""The box conventions written down in cia_jax/ops/boxes.py."""

import jax.numpy as jnp
import numpy as np

from cia_jax.ops import boxes


def test_round_trips_numpy_and_jax():
  rng = np.random.default_rng(0)
  b = np.concatenate([rng.uniform(-50, 50, (10, 2)), rng.uniform(1, 40, (10, 2))], axis=1)
  for fwd, inv in [(boxes.xywh_to_xyxy, boxes.xyxy_to_xywh), (boxes.xywh_to_cxcywh, boxes.cxcywh_to_xywh)]:
    np.testing.assert_allclose(inv(fwd(b)), b, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(inv(fwd(jnp.asarray(b)))), b, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(boxes.xywh_from_center(boxes.center_xywh(b), b[:, 2:]), b, rtol=1e-12)


def test_pixel_centre_convention():
  # A box covering pixels 0..9 (w = 10) has its tracker centre at pixel 4.5; the
  # continuous corner convention puts x2 at 10 and the continuous centre at 5.
  b = np.array([0.0, 0.0, 10.0, 4.0])
  np.testing.assert_allclose(boxes.center_xywh(b), [4.5, 1.5])
  np.testing.assert_allclose(boxes.xywh_to_xyxy(b), [0, 0, 10, 4])
  np.testing.assert_allclose(boxes.xywh_to_cxcywh(b)[:2], [5.0, 2.0])


def test_iou_cases():
  a = np.array([0.0, 0.0, 10.0, 10.0])
  assert boxes.iou_xywh(a, a) == 1.0
  np.testing.assert_allclose(boxes.iou_xywh(a, np.array([5.0, 0.0, 10.0, 10.0])), 50 / 150)
  assert boxes.iou_xywh(a, np.array([20.0, 20.0, 5.0, 5.0])) == 0.0
  assert boxes.iou_xywh(np.zeros(4), np.zeros(4)) == 0.0  # empty union is defined as 0
  np.testing.assert_allclose(np.asarray(boxes.iou_xywh(jnp.asarray(a), jnp.asarray([5.0, 0.0, 10.0, 10.0]))),
                             1 / 3, rtol=1e-6)

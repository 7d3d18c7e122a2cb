"""Per-member loss selection."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hpjax import losses


def _batch():
  logits = jax.random.normal(jax.random.key(0), (5, 4))
  labels = jnp.array([0, 1, 2, 3, 1])
  return logits, labels


def test_selected_loss_is_the_one_computed():
  logits, labels = _batch()
  names = ("cross_entropy", "mse")
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  mse = jnp.mean(jnp.square(logits - jax.nn.one_hot(labels, 4)))
  assert float(losses.loss(0, names, logits, labels, 4)) == pytest.approx(float(ce), rel=1e-6)
  assert float(losses.loss(1, names, logits, labels, 4)) == pytest.approx(float(mse), rel=1e-6)
  # Under vmap with a per-member index.
  both = jax.vmap(lambda i: losses.loss(i, names, logits, labels, 4))(jnp.array([1, 0]))
  np.testing.assert_allclose(both, [mse, ce], rtol=1e-6)


def test_label_smoothing():
  logits, labels = _batch()
  smooth = optax.softmax_cross_entropy(
    logits, optax.smooth_labels(jax.nn.one_hot(labels, 4), 0.2)
  ).mean()
  got = losses.loss(0, ("cross_entropy",), logits, labels, 4, label_smoothing=0.2)
  assert float(got) == pytest.approx(float(smooth), rel=1e-6)
  assert float(got) != pytest.approx(float(losses.loss(0, ("cross_entropy",), logits, labels, 4)))


def test_regression_losses():
  pred = jnp.array([[0.0], [2.0], [-3.0]])
  y = jnp.array([0.5, 0.0, 0.0])
  names = ("mse", "huber")
  assert float(losses.loss(0, names, pred, y, 1)) == pytest.approx((0.25 + 4 + 9) / 3)
  huber = (0.5 * 0.25 + (2 - 0.5) + (3 - 0.5)) / 3
  assert float(losses.loss(1, names, pred, y, 1)) == pytest.approx(huber)


def test_weights_exclude_padding():
  logits, labels = _batch()
  w = jnp.array([1, 1, 0, 0, 0], jnp.float32)
  full = optax.softmax_cross_entropy_with_integer_labels(logits[:2], labels[:2]).mean()
  got = losses.loss(0, ("cross_entropy",), logits, labels, 4, weights=w)
  assert float(got) == pytest.approx(float(full), rel=1e-6)


def test_bad_loss_names():
  with pytest.raises(ValueError, match="loss: unknown value 'huber' for classification"):
    losses.check_losses(["huber"], "classification")
  with pytest.raises(ValueError, match="loss: unknown value 'cross_entropy' for regression"):
    losses.check_losses(["cross_entropy"], "regression")

"""A user's own training loss and validation metrics.

``config.loss = "experiments.examples.my_objectives:focal_loss"`` trains every
member with it; ``config.metric = "experiments.examples.my_objectives:METRICS"``
logs both metrics (``val_error``, ``val_top2``, ...) and ``config.fitness =
"error"`` ranks members by the first, minimised.
"""

import jax
import jax.numpy as jnp

import hpjax


def focal_loss(outputs, y, hp):
  """Focal loss (gamma 2): well-classified examples count less.

  Args:
    outputs: logits ``[B, K]``.
    y: int labels ``[B]``.
    hp: the member's hyperparameters (this loss reads none).

  Returns:
    ``[B]`` per-example losses.
  """
  del hp
  log_p = jnp.take_along_axis(jax.nn.log_softmax(outputs), y[:, None], axis=-1)[:, 0]
  return -jnp.square(1.0 - jnp.exp(log_p)) * log_p


def _error(outputs, y):
  return (jnp.argmax(outputs, axis=-1) != y).astype(jnp.float32)


def _top2(outputs, y):
  top = jnp.argsort(outputs, axis=-1)[:, -2:]
  return jnp.any(top == y[:, None], axis=-1).astype(jnp.float32)


# Per-example values; a split's metric is their mean. The first ranks by default.
METRICS = [hpjax.Metric("error", _error, "min"), hpjax.Metric("top2", _top2, "max")]

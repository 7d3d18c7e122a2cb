"""Losses selectable per member by a traced index.

Classification: ``cross_entropy`` (with a per-member ``label_smoothing``) and
``mse`` on (smoothed) one-hot targets. Regression: ``mse`` and ``huber``.
A group compiles only the candidate losses of its search space; each member's
index selects one (under ``vmap`` every candidate is computed and one is kept,
which costs little next to the network).

Training minimises each member's own loss; *validation* loss is one objective
for every member (:func:`validation`: cross-entropy without label
smoothing for classification, squared error for regression), so that a
validation loss ranks members fairly whatever each one trains with.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

CLASSIFICATION_LOSSES = ("cross_entropy", "mse")
REGRESSION_LOSSES = ("mse", "huber")


def check_losses(names: Sequence[str], task: str) -> tuple[str, ...]:
  """Validates loss names for a task ('classification' or 'regression')."""
  allowed = CLASSIFICATION_LOSSES if task == "classification" else REGRESSION_LOSSES
  names = tuple(names)
  if not names:
    raise ValueError(f"loss: at least one loss is needed; allowed for {task}: {', '.join(allowed)}")
  for n in names:
    if n not in allowed:
      raise ValueError(f"loss: unknown value {n!r} for {task}; allowed: {', '.join(allowed)}")
  return names


def per_example_loss(
  name: str,
  outputs: jax.Array,
  targets: jax.Array,
  num_classes: int,
  label_smoothing: jax.Array = 0.0,
) -> jax.Array:
  """One named loss per example.

  Args:
    name: loss name.
    outputs: logits ``[B, K]`` (classification) or predictions ``[B, 1]`` /
      ``[B]`` (regression).
    targets: int labels ``[B]`` or float targets ``[B]``.
    num_classes: K (classification); 1 for regression.
    label_smoothing: smoothing of the one-hot targets (classification).

  Returns:
    ``[B]`` losses.
  """
  if name in ("cross_entropy",) or (name == "mse" and num_classes > 1):
    onehot = optax.smooth_labels(jax.nn.one_hot(targets, num_classes), label_smoothing)
    if name == "cross_entropy":
      return optax.softmax_cross_entropy(outputs, onehot)
    return jnp.mean(jnp.square(outputs - onehot), axis=-1)
  # A reshape, not outputs[..., 0], which of [B] predictions is the first one.
  pred = outputs.reshape(targets.shape)
  if name == "mse":
    return jnp.square(pred - targets)
  if name == "huber":
    return optax.huber_loss(pred, targets, delta=1.0)
  raise ValueError(f"loss: unknown value {name!r}")


def validation(outputs: jax.Array, targets: jax.Array) -> jax.Array:
  """The validation loss per example, the same objective for every member.

  Members may train with different losses (cross-entropy or MSE, any label
  smoothing; MSE or Huber), whose values are not on one scale: a
  cross-entropy member smoothed by 0.2 reports about 1.0 at 98% accuracy,
  an MSE member 0.08 at 43%. Validation loss therefore is plain
  cross-entropy on the labels for classification and squared error for
  regression, whatever the member trains with.

  Args:
    outputs: logits ``[B, K]`` with ``K > 1`` (classification, int labels)
      or predictions ``[B, 1]`` / ``[B]`` (regression).
    targets: int labels ``[B]`` or float targets ``[B]``.

  Returns:
    ``[B]`` losses.
  """
  if outputs.ndim == targets.ndim + 1 and outputs.shape[-1] > 1:
    return optax.softmax_cross_entropy_with_integer_labels(outputs, targets)
  return jnp.square(outputs.reshape(targets.shape) - targets)


def builtin(outputs: jax.Array, targets: jax.Array, hp) -> jax.Array:
  """The built-in training loss, chosen per member: the default ``loss`` of hpjax.

  Reads ``hp["loss"]`` (a traced choice among :data:`CLASSIFICATION_LOSSES`
  or :data:`REGRESSION_LOSSES`) and ``hp["label_smoothing"]``.

  Args:
    outputs: logits ``[B, K]`` or predictions ``[B, 1]`` / ``[B]`` (regression).
    targets: int labels ``[B]`` or float targets ``[B]``.
    hp: the member's :class:`hpjax.hparams.HParams`.

  Returns:
    ``[B]`` losses.
  """
  choice = hp["loss"]
  # [B] predictions have no class axis: their last dimension is B, not K.
  num_classes = outputs.shape[-1] if outputs.ndim > targets.ndim else 1
  return total_per_example(
    choice.index, choice.values, outputs, targets, num_classes, hp["label_smoothing"]
  )


def loss(
  index: jax.Array,
  names: Sequence[str],
  outputs: jax.Array,
  targets: jax.Array,
  num_classes: int,
  label_smoothing: jax.Array = 0.0,
  weights: jax.Array | None = None,
) -> jax.Array:
  """Mean of the member's selected loss over the batch.

  Args:
    index: traced index into ``names``.
    names: candidate loss names (static).
    outputs, targets, num_classes, label_smoothing: see :func:`per_example_loss`.
    weights: optional ``[B]`` example weights (1 real, 0 padding).

  Returns:
    Scalar loss (weighted mean).
  """
  per = total_per_example(index, names, outputs, targets, num_classes, label_smoothing)
  if weights is None:
    return jnp.mean(per)
  return jnp.sum(per * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def total_per_example(index, names, outputs, targets, num_classes, label_smoothing=0.0):
  """Per-example values of the member's selected loss (``[B]``)."""
  values = [per_example_loss(n, outputs, targets, num_classes, label_smoothing) for n in names]
  if len(values) == 1:
    return values[0]
  idx = jnp.clip(jnp.asarray(index, jnp.int32), 0, len(values) - 1)
  return jnp.select([idx == i for i in range(len(values) - 1)], values[:-1], values[-1])

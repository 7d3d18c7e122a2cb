"""A multi-layer perceptron: for vector data (e.g. the diabetes regression)
and as the simplest image baseline (inputs are flattened)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
from flax import nnx

from hpjax.models import layers


class MLP(nnx.Module):
  """``depth`` hidden layers of ``width`` units, then the output layer."""

  def __init__(self, input_shape: Sequence[int], num_outputs: int, *,
               activations: Sequence[str], depth: int = 2, width: int = 64,
               batch_norm: bool = False, rngs: nnx.Rngs, **unused):
    del unused  # kernel_size etc. do not apply to an MLP
    fan_in = int(math.prod(input_shape))
    self.activations = tuple(activations)
    hidden, norms = [], []
    for _ in range(depth):
      hidden.append(nnx.Linear(fan_in, width, use_bias=not batch_norm, rngs=rngs))
      norms.append(nnx.BatchNorm(width, momentum=0.9, rngs=rngs) if batch_norm else None)
      fan_in = width
    self.hidden = nnx.List(hidden)
    self.norms = nnx.List(norms)
    self.out = nnx.Linear(fan_in, num_outputs, rngs=rngs)

  def __call__(self, x: jax.Array, ctx: layers.Context) -> jax.Array:
    x = x.reshape(x.shape[0], -1)
    for dense, norm in zip(self.hidden, self.norms):
      x = dense(x)
      if norm is not None:
        x = norm(x, use_running_average=not ctx.train)
      x = layers.activation(x, ctx.activation, self.activations)
      x = layers.dropout(x, ctx.dropout, ctx.next_key(), ctx.train)
    return self.out(x)

"""A multi-layer perceptron: for vector data (e.g. the diabetes regression)
and as the simplest image baseline (inputs are flattened)."""

from __future__ import annotations

from collections.abc import Sequence
import math

from flax import nnx
import jax

from hpjax import nn
from hpjax.models.arch import Arch


class MLP(nnx.Module):
  """``depth`` hidden layers of ``width`` units, then the output layer.

  Called as ``model(x, hp)``; reads ``hp["activation"]`` and ``hp["dropout"]``.
  """

  def __init__(self, arch: Arch, *, input_shape: Sequence[int], num_outputs: int, rngs: nnx.Rngs):
    fan_in = int(math.prod(input_shape))
    width, bn, dt = arch.width, arch.batch_norm, arch.dtype
    hidden, norms = [], []
    for _ in range(arch.depth):
      hidden.append(nnx.Linear(fan_in, width, use_bias=not bn, dtype=dt, rngs=rngs))
      norms.append(nnx.BatchNorm(width, momentum=0.9, dtype=dt, rngs=rngs) if bn else None)
      fan_in = width
    self.hidden = nnx.List(hidden)
    self.norms = nnx.List(norms)
    self.out = nnx.Linear(fan_in, num_outputs, dtype=dt, rngs=rngs)
    self.arch = arch

  def __call__(self, x: jax.Array, hp) -> jax.Array:
    x = x.reshape(x.shape[0], -1)
    for dense, norm in zip(self.hidden, self.norms):
      x = dense(x)
      if norm is not None:
        x = norm(x)
      x = nn.activation(x, hp["activation"])
      x = nn.dropout(x, hp["dropout"], hp.next_key(), hp.train)
    return self.arch.logits(self.out(x))

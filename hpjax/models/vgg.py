"""VGG-style CNN: stages of same-width convolutions, each followed by pooling.

``depth`` stages, stage ``s`` having ``width * 2**s`` channels and
``convs_per_stage`` convolutions of ``kernel_size``; then one hidden dense
layer and the output layer. ``depth=2, width=16, dense=64`` is the project's
bench CNN (conv16-pool-conv32-pool-dense64-out).
"""

from __future__ import annotations

from collections.abc import Sequence

from flax import nnx
import jax

from hpjax import nn
from hpjax.models.arch import Arch


class VGG(nnx.Module):
  """One member's VGG-style network (the population vmaps over its state).

  Called as ``model(x, hp)``; reads ``hp["activation"]`` and ``hp["dropout"]``.
  """

  def __init__(self, arch: Arch, *, input_shape: Sequence[int], num_outputs: int, rngs: nnx.Rngs):
    h, w, c = input_shape
    k, bn, dt = arch.kernel_size, arch.batch_norm, arch.dtype
    convs, norms = [], []
    for s in range(arch.depth):
      out = arch.width * 2**s
      for _ in range(arch.convs_per_stage):
        convs.append(nn.Conv(c, out, (k, k), impl=arch.conv, use_bias=not bn, dtype=dt, rngs=rngs))
        norms.append(nnx.BatchNorm(out, momentum=0.9, dtype=dt, rngs=rngs) if bn else None)
        c = out
      h, w = (h // 2 if h >= 2 else h), (w // 2 if w >= 2 else w)
    self.convs = nnx.List(convs)
    self.norms = nnx.List(norms)
    self.convs_per_stage = arch.convs_per_stage
    self.hidden = nnx.Linear(h * w * c, arch.dense, dtype=dt, rngs=rngs)
    self.out = nnx.Linear(arch.dense, num_outputs, dtype=dt, rngs=rngs)
    self.arch = arch

  def __call__(self, x: jax.Array, hp) -> jax.Array:
    act = hp["activation"]
    for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
      x = conv(x)
      if norm is not None:
        x = norm(x)
      x = nn.activation(x, act)
      if (i + 1) % self.convs_per_stage == 0:
        x = nn.max_pool(x, 2)
    x = x.reshape(x.shape[0], -1)
    x = nn.activation(self.hidden(x), act)
    x = nn.dropout(x, hp["dropout"], hp.next_key(), hp.train)
    return self.arch.logits(self.out(x))

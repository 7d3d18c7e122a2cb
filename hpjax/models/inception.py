"""Inception-style CNN: a stem convolution, then blocks of parallel branches.

A 3x3 stem convolution with ``width`` channels, then ``depth`` Inception
blocks. Block ``b`` has branch width ``n = width * 2**b`` and four parallel
branches, concatenated on channels (``4 * n`` channels out):

* 1x1 convolution, ``n`` channels;
* 1x1 reduce to ``n``, then 3x3 to ``n``;
* 1x1 reduce to ``max(n // 2, 1)``, then 5x5 to ``n`` (the 5x5 reduce is
  narrower, as in GoogLeNet, since the 5x5 is the costly convolution);
* 3x3 stride-1 'SAME' max pool, then 1x1 to ``n``.

Every convolution is followed by BatchNorm (when enabled) and the activation.
Between blocks sits a 2x2 max pool, skipped where it would make the spatial
size smaller than 2. Then global average pooling, dropout and the output layer.
"""

from __future__ import annotations

from collections.abc import Sequence

from flax import nnx
import jax
import jax.numpy as jnp

from hpjax import nn
from hpjax.models.arch import Arch


class ConvUnit(nnx.Module):
  """Convolution, optional BatchNorm, activation."""

  def __init__(
    self,
    in_features: int,
    out_features: int,
    kernel_size: int,
    *,
    batch_norm: bool,
    conv_impl: str,
    dtype=None,
    rngs: nnx.Rngs,
  ):
    self.conv = nn.Conv(
      in_features,
      out_features,
      (kernel_size, kernel_size),
      use_bias=not batch_norm,
      impl=conv_impl,
      dtype=dtype,
      rngs=rngs,
    )
    self.norm = (
      nnx.BatchNorm(out_features, momentum=0.9, dtype=dtype, rngs=rngs) if batch_norm else None
    )

  def __call__(self, x: jax.Array, act) -> jax.Array:
    x = self.conv(x)
    if self.norm is not None:
      x = self.norm(x)
    return nn.activation(x, act)


class InceptionBlock(nnx.Module):
  """Four parallel branches (1x1; 1x1-3x3; 1x1-5x5; pool-1x1), concatenated."""

  def __init__(
    self,
    in_features: int,
    branch_width: int,
    *,
    batch_norm: bool,
    conv_impl: str,
    dtype=None,
    rngs: nnx.Rngs,
  ):
    n = branch_width
    kw = dict(batch_norm=batch_norm, conv_impl=conv_impl, dtype=dtype, rngs=rngs)
    self.b1 = ConvUnit(in_features, n, 1, **kw)
    self.b3_reduce = ConvUnit(in_features, n, 1, **kw)
    self.b3 = ConvUnit(n, n, 3, **kw)
    r5 = max(n // 2, 1)
    self.b5_reduce = ConvUnit(in_features, r5, 1, **kw)
    self.b5 = ConvUnit(r5, n, 5, **kw)
    self.pool_proj = ConvUnit(in_features, n, 1, **kw)
    self.out_features = 4 * n

  def __call__(self, x: jax.Array, act) -> jax.Array:
    y1 = self.b1(x, act)
    y3 = self.b3(self.b3_reduce(x, act), act)
    y5 = self.b5(self.b5_reduce(x, act), act)
    yp = self.pool_proj(nn.max_pool_same(x, 3), act)
    return jnp.concatenate([y1, y3, y5, yp], axis=-1)


class Inception(nnx.Module):
  """One member's Inception-style network (the population vmaps over its state).

  Called as ``model(x, hp)``; reads ``hp["activation"]`` and ``hp["dropout"]``.
  """

  def __init__(self, arch: Arch, *, input_shape: Sequence[int], num_outputs: int, rngs: nnx.Rngs):
    h, w, c = input_shape
    kw = dict(batch_norm=arch.batch_norm, conv_impl=arch.conv, dtype=arch.dtype, rngs=rngs)
    self.stem = ConvUnit(c, arch.width, 3, **kw)
    c = arch.width
    blocks, pool_after = [], []
    for b in range(arch.depth):
      block = InceptionBlock(c, arch.width * 2**b, **kw)
      blocks.append(block)
      c = block.out_features
      pool = b < arch.depth - 1 and h // 2 >= 2 and w // 2 >= 2
      pool_after.append(pool)
      if pool:
        h, w = h // 2, w // 2
    self.blocks = nnx.List(blocks)
    self.pool_after = tuple(pool_after)
    self.out = nnx.Linear(c, num_outputs, dtype=arch.dtype, rngs=rngs)
    self.arch = arch

  def __call__(self, x: jax.Array, hp) -> jax.Array:
    act = hp["activation"]
    x = self.stem(x, act)
    for block, pool in zip(self.blocks, self.pool_after):
      x = block(x, act)
      if pool:
        x = nn.max_pool(x, 2)
    x = x.mean(axis=(1, 2))
    x = nn.dropout(x, hp["dropout"], hp.next_key(), hp.train)
    return self.arch.logits(self.out(x))

"""ResNet-style CNN: a stem convolution, stages of basic residual blocks.

A stem convolution of ``kernel_size`` with ``width`` channels, then ``depth``
stages; stage ``s`` has ``width * 2**s`` channels and ``convs_per_stage``
basic blocks (two ``kernel_size`` convolutions with the activation between
them and after the residual add). The first block of every stage after the
first halves the spatial size (stride 2) and, since its shape changes, takes a
1x1 stride-2 projection on the shortcut. Then global average pooling, dropout
and the output layer.
"""

from __future__ import annotations

from collections.abc import Sequence

from flax import nnx
import jax

from hpjax import nn
from hpjax.models.arch import Arch


class BasicBlock(nnx.Module):
  """Two convolutions and a shortcut (identity, or a 1x1 projection)."""

  def __init__(
    self,
    in_features: int,
    out_features: int,
    kernel_size: int,
    *,
    stride: int,
    batch_norm: bool,
    conv_impl: str,
    dtype=None,
    rngs: nnx.Rngs,
  ):
    def conv(cin, k, s):
      return nn.Conv(
        cin,
        out_features,
        (k, k),
        strides=(s, s),
        use_bias=not batch_norm,
        impl=conv_impl,
        dtype=dtype,
        rngs=rngs,
      )

    def norm():
      return (
        nnx.BatchNorm(out_features, momentum=0.9, dtype=dtype, rngs=rngs) if batch_norm else None
      )

    self.conv1 = conv(in_features, kernel_size, stride)
    self.norm1 = norm()
    self.conv2 = conv(out_features, kernel_size, 1)
    self.norm2 = norm()
    if stride != 1 or in_features != out_features:
      self.proj = conv(in_features, 1, stride)
      self.proj_norm = norm()
    else:
      self.proj = None
      self.proj_norm = None

  def __call__(self, x: jax.Array, act) -> jax.Array:
    y = self.conv1(x)
    if self.norm1 is not None:
      y = self.norm1(y)
    y = nn.activation(y, act)
    y = self.conv2(y)
    if self.norm2 is not None:
      y = self.norm2(y)
    shortcut = x
    if self.proj is not None:
      shortcut = self.proj(x)
      if self.proj_norm is not None:
        shortcut = self.proj_norm(shortcut)
    return nn.activation(y + shortcut, act)


class ResNet(nnx.Module):
  """One member's ResNet-style network (the population vmaps over its state).

  Called as ``model(x, hp)``; reads ``hp["activation"]`` and ``hp["dropout"]``.
  """

  def __init__(self, arch: Arch, *, input_shape: Sequence[int], num_outputs: int, rngs: nnx.Rngs):
    _, _, c = input_shape
    k, bn, width, dt = arch.kernel_size, arch.batch_norm, arch.width, arch.dtype
    self.stem = nn.Conv(c, width, (k, k), use_bias=not bn, impl=arch.conv, dtype=dt, rngs=rngs)
    self.stem_norm = nnx.BatchNorm(width, momentum=0.9, dtype=dt, rngs=rngs) if bn else None
    c = width
    blocks = []
    for s in range(arch.depth):
      out = width * 2**s
      for b in range(arch.convs_per_stage):
        stride = 2 if (s > 0 and b == 0) else 1
        blocks.append(
          BasicBlock(
            c, out, k, stride=stride, batch_norm=bn, conv_impl=arch.conv, dtype=dt, rngs=rngs
          )
        )
        c = out
    self.blocks = nnx.List(blocks)
    self.out = nnx.Linear(c, num_outputs, dtype=dt, rngs=rngs)
    self.arch = arch

  def __call__(self, x: jax.Array, hp) -> jax.Array:
    act = hp["activation"]
    x = self.stem(x)
    if self.stem_norm is not None:
      x = self.stem_norm(x)
    x = nn.activation(x, act)
    for block in self.blocks:
      x = block(x, act)
    x = x.mean(axis=(1, 2))
    x = nn.dropout(x, hp["dropout"], hp.next_key(), hp.train)
    return self.arch.logits(self.out(x))

"""Max pooling whose gradient is one fast elementwise select, under ``vmap`` too.

``max_pool``'s usual gradient (select-and-scatter) is slow on XLA:CPU: here
the windows that tile the input are compared position by position
(elementwise passes XLA fuses), and the gradient is a select by the recorded
first maximum. Each window's gradient goes to its first maximum in row-major
order, as in PyTorch and ``lax.reduce_window``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
  """Output size and (low, high) padding of XLA's 'SAME' convention."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return out, total // 2, total - total // 2


def _pool_windows(h: int, w: int, window: int) -> tuple[int, int]:
  # A side shorter than the window is left as it is (window 1 on that side),
  # so models can track shapes side by side.
  return (window if h >= window else 1), (window if w >= window else 1)


def _replaces(s: jax.Array, y: jax.Array) -> jax.Array:
  """Where a later window position ``s`` replaces the running maximum ``y``.

  Strictly greater, so that the first of tied maxima stays; a NaN counts as
  above every number, so that it propagates as through ``max`` (the first
  NaN stays).
  """
  return (s > y) | (jnp.isnan(s) & ~jnp.isnan(y))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool_tiled(x: jax.Array, wh: int, ww: int) -> jax.Array:
  return _max_pool_fwd(x, wh, ww)[0]


def _max_pool_fwd(x, wh, ww):
  # Each window's maximum and the position of its first occurrence, by a
  # chain of comparisons over the window positions (each a [B, Ho, Wo, C]
  # slice): elementwise passes that XLA fuses, faster than a max reduction
  # over the window axes of the 6-D view. The backward then needs only the
  # small position array, not x and the output.
  b, h, w, c = x.shape
  xr = x.reshape(b, h // wh, wh, w // ww, ww, c)
  dtype = jnp.int8 if wh * ww <= 127 else jnp.int32
  y = first = None
  for i in range(wh):
    for j in range(ww):
      s = xr[:, :, i, :, j, :]
      if y is None:
        y, first = s, jnp.zeros(s.shape, dtype)
      else:
        take = _replaces(s, y)
        y = jnp.where(take, s, y)
        first = jnp.where(take, jnp.asarray(i * ww + j, dtype), first)
  return y, first


def _max_pool_bwd(wh, ww, first, g):
  # The window's gradient goes to its first maximum alone, as in PyTorch and
  # lax.reduce_window. Giving it to every tied maximum (the rule before)
  # multiplied it by the number of ties, and uint8 images' flat backgrounds
  # tie often. An equal split among the ties (JAX's rule for max) measured
  # 2-4x slower pooling alone, 15% more per training step
  # (experiments/bench_pool.py, docs/benchmarks.md).
  b, ho, wo, c = g.shape
  pos = jnp.arange(wh * ww, dtype=first.dtype).reshape(1, 1, wh, 1, ww, 1)
  gx = jnp.where(
    pos == first[:, :, None, :, None, :], g[:, :, None, :, None, :], jnp.zeros((), g.dtype)
  )
  return (gx.reshape(b, ho * wh, wo * ww, c),)


_max_pool_tiled.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool(x: jax.Array, window: int = 2) -> jax.Array:
  """Non-overlapping max pooling (window = stride), 'VALID' like PyTorch.

  Written as elementwise passes over the window positions with a custom
  gradient, avoiding select-and-scatter (slow on XLA:CPU). Each window's
  gradient goes to its first maximum in row-major order, as in PyTorch and
  ``lax.reduce_window`` (Flax's ``max_pool``): tied maxima are common (flat
  image backgrounds, ReLU zeros) and only one of them receives it. A NaN
  counts as the maximum, as with ``jnp.max`` (the first NaN takes the
  gradient).

  Args:
    x: ``[B, H, W, C]``.
    window: pooling window and stride.

  Returns:
    ``[B, H // window, W // window, C]``; trailing rows/columns are dropped; a
    side shorter than ``window`` is not pooled.
  """
  b, h, w, c = x.shape
  wh, ww = _pool_windows(h, w, window)
  ho, wo = h // wh, w // ww
  return _max_pool_tiled(x[:, : ho * wh, : wo * ww, :], wh, ww)


def max_pool_same(x: jax.Array, window: int = 3) -> jax.Array:
  """Stride-1 max pooling with 'SAME' padding, as a max over shifted slices.

  Used by the Inception-style pool branch; like :func:`conv2d`, slices keep
  the gradient a cheap elementwise select instead of select-and-scatter.
  Separable: a max along each row's window, then along the column of those.
  The gradient follows the same rule as :func:`max_pool` and
  ``lax.reduce_window``: each window's first maximum in row-major order
  receives it (the first row holding the maximum, and its first column
  there). A chain of ``jnp.maximum``, used before, did not: autodiff splits a
  tie of ``maximum(a, b)`` 0.5 / 0.5, so a window of tied values gave the
  last one half the gradient, the one before a quarter, and so on.

  Args:
    x: ``[B, H, W, C]``.
    window: pooling window, the same along both spatial axes.

  Returns:
    ``[B, H, W, C]``, the maximum over each ``window x window`` neighbourhood
    (NaN where it holds a NaN; the first NaN takes the gradient).
  """
  b, h, w, c = x.shape
  _, lo, hi = _same_padding(h, window, 1)
  _, wlo, whi = _same_padding(w, window, 1)
  xp = jnp.pad(x, ((0, 0), (lo, hi), (wlo, whi), (0, 0)), constant_values=-jnp.inf)

  def running_max(slices):
    # On a tie the earlier slice stays, and with it the gradient. (Selects
    # also measured faster to differentiate than jnp.maximum.)
    out = None
    for s in slices:
      out = s if out is None else jnp.where(_replaces(s, out), s, out)
    return out

  rows = running_max(xp[:, :, j : j + w, :] for j in range(window))
  return running_max(rows[:, i : i + h, :, :] for i in range(window))

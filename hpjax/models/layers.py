"""Layers shared by the population models, written for speed under ``vmap``.

Every model in :mod:`hpjax.models` describes *one* member; the population is
made by ``jax.vmap`` over the members' parameters. How a layer is written
decides what XLA runs once it is vmapped:

* ``lax.conv_general_dilated`` with a per-member kernel becomes a *grouped*
  convolution, which XLA:CPU runs on a slow path (about 40x slower than one
  member at a time). :func:`conv2d` therefore defaults to an
  im2col built from shifted slices (pure data movement) followed by one matrix
  product, which vmap turns into a batched matmul, the fastest primitive
  available on CPU. The XLA convolution stays available (``impl='xla'``) for
  backends where it wins.
* ``max_pool``'s gradient (select-and-scatter) is slow on XLA:CPU; pooling
  windows that tile the input are compared position by position (elementwise
  passes), and the gradient is a select by the recorded first maximum.
* Activations are chosen per member by a traced index (:func:`activation`), so
  one compiled program serves members with different activations.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

# Every activation hpjax knows, by name. A model receives the *candidate* names
# (the choices of the search space) and a per-member index into them.
ACTIVATIONS = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "gelu": jax.nn.gelu,
    "elu": jax.nn.elu,
    "leaky_relu": jax.nn.leaky_relu,
    "swish": jax.nn.swish,
}

CONV_IMPLS = ("slices", "xla")


def check_activations(names: Sequence[str]) -> tuple[str, ...]:
  """Validates a tuple of activation names.

  Args:
    names: activation names, each a key of :data:`ACTIVATIONS`.

  Returns:
    The names as a tuple.

  Raises:
    ValueError: on an empty list or an unknown name.
  """
  names = tuple(names)
  if not names:
    raise ValueError("activations: at least one activation is needed; allowed: "
                     + ", ".join(ACTIVATIONS))
  for n in names:
    if n not in ACTIVATIONS:
      raise ValueError(f"activations: unknown activation {n!r}; allowed: "
                       + ", ".join(ACTIVATIONS))
  return names


# Activations that are affine maps of one tanh: act(x) = (c0 + c1 * tanh(s1*x + s3*x^3)) * (x if
# times_x else 1). A population mixing them computes a single tanh per element
# instead of one transcendental per candidate.
_TANH_FORMS = {
    "tanh": (1.0, 0.0, 0.0, 1.0, 0.0),
    "sigmoid": (0.5, 0.0, 0.5, 0.5, 0.0),
    "swish": (0.5, 0.0, 0.5, 0.5, 1.0),
    "gelu": (math.sqrt(2 / math.pi), math.sqrt(2 / math.pi) * 0.044715, 0.5, 0.5, 1.0),
}


def activation(x: jax.Array, choice, names: Sequence[str] | None = None) -> jax.Array:
  """Applies the member's activation to ``x``.

  ``choice`` is what a model receives as ``hp["activation"]``: a traced
  choice (its ``index`` and candidate ``values``, see
  :class:`hpjax.hparams.TracedChoice`), or a plain activation name. With
  ``names`` given, ``choice`` is the index into them.

  With one candidate this is the plain function. With several, each
  member's index selects among them; under ``vmap`` every candidate would run
  for every member, so the candidates that are affine forms of ``tanh``
  (tanh, sigmoid, swish, gelu) share a single ``tanh`` evaluation with
  per-member coefficients, and the piecewise-linear ones (relu, leaky_relu)
  and elu are cheap selects. Only the search space's candidates are compiled.

  Args:
    x: input array.
    choice: a traced choice, an activation name, or (with ``names``) an
      integer scalar index, clipped to range.
    names: the candidate activation names (static), when ``choice`` is an index.

  Returns:
    The activated array, same shape and dtype as ``x``.
  """
  if isinstance(choice, str):
    return ACTIVATIONS[choice](x)
  index = choice
  if names is None:
    index, names = choice.index, choice.values
  names = tuple(names)
  if len(names) == 1:
    return ACTIVATIONS[names[0]](x)
  index = jnp.clip(jnp.asarray(index, jnp.int32), 0, len(names) - 1)

  def pick(values):  # a per-member constant chosen by index (a tiny gather)
    return jnp.asarray(values, x.dtype)[index]

  outputs, selectors = [], []
  tanh_names = [n for n in names if n in _TANH_FORMS]
  if tanh_names:
    rows = [_TANH_FORMS.get(n, (0.0, 0.0, 0.0, 0.0, 0.0)) for n in names]
    s1, s3, c0, c1, tx = (pick([r[k] for r in rows]) for k in range(5))
    u = s1 * x
    if any(_TANH_FORMS[n][1] for n in tanh_names):
      u = u + s3 * x * x * x
    y = c0 + c1 * jnp.tanh(u)
    if any(_TANH_FORMS[n][4] for n in tanh_names):
      y = y * jnp.where(tx > 0, x, jnp.ones_like(x))
    outputs.append(y)
    selectors.append(pick([n in _TANH_FORMS for n in names]) > 0)
  for n in names:
    if n not in _TANH_FORMS:
      outputs.append(ACTIVATIONS[n](x))
      selectors.append(index == names.index(n))
  out = outputs[-1]
  for sel, y in zip(selectors[-2::-1], outputs[-2::-1]):
    out = jnp.where(sel, y, out)
  return out


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
  """Output size and (low, high) padding of XLA's 'SAME' convention."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return out, total // 2, total - total // 2


def conv2d(x: jax.Array, kernel: jax.Array, stride: int = 1,
           impl: str = "slices") -> jax.Array:
  """2-D convolution with 'SAME' padding, NHWC input and HWIO kernel.

  Args:
    x: input ``[B, H, W, C]``.
    kernel: weights ``[k, k, C, O]``.
    stride: the same stride along both spatial axes.
    impl: ``'slices'`` (im2col from shifted slices + one matmul) or ``'xla'``
      (``lax.conv_general_dilated``).

  Returns:
    ``[B, ceil(H/stride), ceil(W/stride), O]``.
  """
  if impl == "xla":
    return lax.conv_general_dilated(
        x, kernel, (stride, stride), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  if impl != "slices":
    raise ValueError(f"conv_impl: unknown value {impl!r}; allowed: {', '.join(CONV_IMPLS)}")
  kh, kw, cin, cout = kernel.shape
  b, h, w, c = x.shape
  if c != cin:
    raise ValueError(f"conv2d: input has {c} channels, kernel expects {cin}")
  ho, ph_lo, ph_hi = _same_padding(h, kh, stride)
  wo, pw_lo, pw_hi = _same_padding(w, kw, stride)
  if kh == 1 and kw == 1:
    patches = x[:, ::stride, ::stride, :]
  else:
    xp = jnp.pad(x, ((0, 0), (ph_lo, ph_hi), (pw_lo, pw_hi), (0, 0)))
    # Patch features are ordered (i, j, c), matching kernel.reshape(k*k*C, O).
    cols = [xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride, :]
            for i in range(kh) for j in range(kw)]
    patches = jnp.concatenate(cols, axis=-1)
  out = patches.reshape(b * ho * wo, kh * kw * cin) @ kernel.reshape(kh * kw * cin, cout)
  return out.reshape(b, ho, wo, cout)


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
  gx = jnp.where(pos == first[:, :, None, :, None, :], g[:, :, None, :, None, :],
                 jnp.zeros((), g.dtype))
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
  return _max_pool_tiled(x[:, :ho * wh, :wo * ww, :], wh, ww)


def avg_pool(x: jax.Array, window: int = 2) -> jax.Array:
  """Non-overlapping average pooling (window = stride), 'VALID'."""
  b, h, w, c = x.shape
  wh, ww = _pool_windows(h, w, window)
  ho, wo = h // wh, w // ww
  x = x[:, :ho * wh, :wo * ww, :]
  return x.reshape(b, ho, wh, wo, ww, c).mean(axis=(2, 4))


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

  rows = running_max(xp[:, :, j:j + w, :] for j in range(window))
  return running_max(rows[:, i:i + h, :, :] for i in range(window))


def dropout(x: jax.Array, rate: jax.Array, key: jax.Array | None, train: bool) -> jax.Array:
  """Inverted dropout with a traced, per-member ``rate``.

  Args:
    x: input.
    rate: drop probability (traced scalar, clipped to [0, 0.95]); 0 keeps all.
    key: PRNG key; may be None when ``train`` is False.
    train: apply dropout only when True.

  Returns:
    ``x`` with dropped units zeroed and kept ones scaled by ``1 / (1 - rate)``.
  """
  if not train or key is None:
    return x
  keep = 1.0 - jnp.clip(jnp.asarray(rate, x.dtype), 0.0, 0.95)
  mask = jax.random.bernoulli(key, keep, x.shape)
  return jnp.where(mask, x / keep, jnp.zeros_like(x))


class Conv(nnx.Module):
  """A 'SAME' 2-D convolution layer using :func:`conv2d`."""

  def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, *,
               stride: int = 1, use_bias: bool = True, impl: str = "slices",
               rngs: nnx.Rngs):
    if impl not in CONV_IMPLS:
      raise ValueError(f"conv_impl: unknown value {impl!r}; allowed: {', '.join(CONV_IMPLS)}")
    init = nnx.initializers.lecun_normal()
    self.kernel = nnx.Param(init(rngs.params(), (kernel_size, kernel_size, in_features, out_features)))
    self.bias = nnx.Param(jnp.zeros((out_features,))) if use_bias else None
    self.stride = stride
    self.impl = impl

  def __call__(self, x: jax.Array) -> jax.Array:
    y = conv2d(x, self.kernel[...], self.stride, self.impl)
    if self.bias is not None:
      y = y + self.bias[...]
    return y


class Context:
  """Per-call, per-member inputs of a model's forward pass.

  Attributes:
    activation: traced integer index into the model's activation names.
    dropout: traced dropout rate.
    train: static flag (dropout on, BatchNorm in training mode).
    key: PRNG key for dropout (split as layers consume it), or None.
  """

  def __init__(self, activation, dropout=0.0, *, train: bool = False, key=None):
    self.activation = activation
    self.dropout = dropout
    self.train = train
    self._key = key

  def next_key(self):
    """Returns a fresh key for one dropout layer (None when not training)."""
    if self._key is None or not self.train:
      return None
    self._key, sub = jax.random.split(self._key)
    return sub


def fan_in_flat(shape: Sequence[int]) -> int:
  """Number of features after flattening a per-example shape."""
  return int(math.prod(shape))

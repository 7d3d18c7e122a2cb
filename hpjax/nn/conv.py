"""A 2-D convolution that stays fast when vmapped over a population's members.

Why: a population is ``jax.vmap`` over the members' parameters. A stock
``lax.conv_general_dilated`` (or ``nnx.Conv``) whose kernel is vmapped becomes
one *grouped* convolution (``feature_group_count = members``), which XLA:CPU
runs on a slow path. :func:`conv` computes the same thing but chooses its
own implementation when it is vmapped.

How the dispatch works (``impl='auto'``):

* Three functions, each a ``jax.custom_batching.custom_vmap``: the forward
  ``y = conv(x, kernel)``, the input gradient ``dx(g, kernel)`` and the kernel
  gradient ``dk(x, g)``. Unbatched, each is one XLA convolution: the forward
  is exactly ``nnx.Conv``'s, the two gradients are the convolutions JAX's
  autodiff would emit (bit-identical results) with their operands transposed
  into the canonical NHWC/HWIO layout. That transpose matters inside loops:
  XLA:CPU (jax 0.10.2) does not canonicalise a convolution's layout inside a
  ``while`` body (``lax.scan``, ``lax.map``; a known issue,
  https://github.com/jax-ml/jax/issues/12868), and there JAX's own backward
  convolutions ran 36x (input gradient) and 50x (kernel gradient) slower
  than outside it; these do not. Training one member alone in a
  ``lax.scan`` is therefore faster with this layer than with ``nnx.Conv``.
* Their vmap rules look at which arguments carry the member axis:

  - the kernel is per member (the kernel argument of the forward and of
    ``dx``; for ``dk``, any batched argument, since every member has its own
    kernel gradient): a loop over members (``lax.map``), each running the
    unbatched function, i.e. one plain convolution per member;
  - only the data is per member (a kernel shared by all members): the member
    axis is folded into the batch axis and one convolution runs on
    ``members * batch`` examples;
  - two exceptions, measured, where an im2col beats XLA's convolution: the
    forward of an input with one channel (a grey-scale first layer; XLA:CPU's
    convolution is slow with one input channel) is the im2col batched over
    members; and the kernel gradient of an input shared by all members (one
    minibatch for everyone) with at least 128 patch features
    (``kh * kw * in_channels``) is one matmul of the input's patches, built
    once, with all members' output gradients.

  Inside the loop (and after folding) the function called is the same
  custom_vmap function, and the im2col is plain ``lax`` code, so an outer
  vmap (vmap of vmap, as with member chunks) dispatches again on its own
  axis and never reaches the grouped convolution.
* ``custom_vmap`` alone has no reverse-mode autodiff, so the public function
  is a ``jax.custom_vjp`` whose forward and backward call the three
  custom_vmap functions. Under ``vmap`` JAX batches a custom_vjp by vmapping
  its forward and its backward; the residuals (the input and the kernel) keep
  their own batching, and the backward's custom_vmap functions dispatch on it.
  The rules always return each member's own value (batched), never a sum over
  members, so ``vmap(grad(f))`` and ``grad(vmap(f))`` are both right (in the
  latter, JAX sums the cotangent of an unbatched input itself).

Why a loop rather than the batched im2col this started from: measured on a
2-core CPU (``experiments/bench_conv.py``, 32 members, 28x28x16->32, batch
32), forward plus both gradients took 0.54 s looping over members against
1.37 s for im2col from shifted slices with one matmul batched over members
and 4.31 s for the grouped convolution. The batched im2col materialises every
member's patches at once (460 MB here), far beyond cache; one member at a
time stays in cache, and a single member's XLA convolution beats its im2col.
The im2col remains available as ``impl='slices'``; its input gradient is a
col2im (the transpose of the slicing), measured about 2x faster than the
convolution-free alternative (an im2col of the zero-dilated output gradient
with the flipped kernel).

What composes (all tested): ``jit``, ``grad``/``value_and_grad``,
``vmap`` with any combination of batched input and kernel, vmap of vmap,
``lax.scan`` and ``lax.map`` over vmapped code, and ``jax.shard_map`` with
the member axis split over devices, with or without its varying-axes check
(a cotangent that varies over devices while its primal, e.g. a replicated
minibatch, does not is summed over them, as JAX's own rules do).
Not supported: forward-mode autodiff (``jax.jvp``, ``jacfwd``, ``hessian``),
as for any ``custom_vjp``, and, under ``impl='auto'``, second derivatives
(grad of grad: the backward's custom_vmap functions have no derivatives of
their own, "Linearization failed"). ``impl='xla'`` supports both.

Backends: ``impl='xla'`` always runs ``lax.conv_general_dilated`` (the stock
behaviour, grouped under vmap), for backends where XLA's grouped convolution
is fast. On an NVIDIA H200 (jax 0.11.2, 2026-11-30) it was not, in float32:
the built-in models trained 2.4-6.5x faster with ``impl='slices'`` at 64
members (docs/benchmarks.md, "The GPU check on an H200"); in bfloat16 the
ResNet's grouped convolution was 1.17x faster than the im2col. The per-member
dispatch of ``impl='auto'`` was not timed there. ``impl='slices'`` always
runs the im2col, even alone.

Options outside the fast path (``feature_group_count > 1``, input or kernel
dilation, ``preferred_element_type``, inputs that are not 2-D images) run
``lax.conv_general_dilated`` under ``impl='auto'`` (correct, just as slow
under vmap as the stock layer) and raise ``ValueError`` under
``impl='slices'``.

Note: ``hpjax.nn`` exports the function :func:`conv`, which hides this
module's name as an attribute of the package; ``importlib.import_module(
"hpjax.nn.conv")`` reaches the module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import functools
from types import MappingProxyType
from typing import Any

from flax import nnx
from flax.nnx.nn import dtypes
from flax.nnx.nn import linear as nnx_linear
import jax
from jax import lax
import jax.numpy as jnp

IMPLS = ("auto", "xla", "slices")

# NHWC input, HWIO kernel, NHWC output: the layout of nnx.Conv for images.
_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


@dataclasses.dataclass(frozen=True)
class _Geometry:
  """Static description of one 2-D convolution (hashable: functions are cached by it)."""

  strides: tuple[int, int]
  padding: tuple[tuple[int, int], tuple[int, int]]
  precision: Any


def _out_size(size: int, kernel: int, stride: int, pad: tuple[int, int]) -> int:
  return (size + pad[0] + pad[1] - kernel) // stride + 1


def _out_hw(geo: _Geometry, hw: Sequence[int], khw: Sequence[int]) -> tuple[int, int]:
  return tuple(_out_size(n, k, s, p) for n, k, s, p in zip(hw, khw, geo.strides, geo.padding))


# ---------------------------------------------------------------------------
# One member, as im2col: shifted slices (data movement) and one matmul
# (impl='slices'). Under vmap these become matmuls batched over members.


def _patches(x: jax.Array, khw: Sequence[int], geo: _Geometry) -> jax.Array:
  """im2col of ``x [B, H, W, C]``: ``[B, Ho, Wo, kh*kw*C]``, features (i, j, c)."""
  (kh, kw), (sh, sw) = khw, geo.strides
  b, h, w, c = x.shape
  ho, wo = _out_hw(geo, (h, w), khw)
  if any(p for pair in geo.padding for p in pair):
    # lax.pad: negative explicit padding crops, as in lax.conv_general_dilated.
    x = lax.pad(
      x,
      jnp.zeros((), x.dtype),
      ((0, 0, 0), geo.padding[0] + (0,), geo.padding[1] + (0,), (0, 0, 0)),
    )
  cols = [
    lax.slice(x, (0, i, j, 0), (b, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c), (1, sh, sw, 1))
    for i in range(kh)
    for j in range(kw)
  ]
  return cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)


def _matmul(a: jax.Array, b: jax.Array, contract: tuple[int, int], precision) -> jax.Array:
  return lax.dot_general(a, b, (((contract[0],), (contract[1],)), ((), ())), precision=precision)


def _slices_fwd(x: jax.Array, kernel: jax.Array, geo: _Geometry) -> jax.Array:
  kh, kw, cin, cout = kernel.shape
  p = _patches(x, (kh, kw), geo)
  y = _matmul(
    p.reshape(-1, kh * kw * cin), kernel.reshape(kh * kw * cin, cout), (1, 0), geo.precision
  )
  return y.reshape(p.shape[:3] + (cout,))


def _slices_dk(x: jax.Array, g: jax.Array, khw: tuple[int, int], geo: _Geometry) -> jax.Array:
  """Kernel gradient: patches^T @ g."""
  cin, cout = x.shape[-1], g.shape[-1]
  p = _patches(x, khw, geo)
  dk = _matmul(p.reshape(-1, p.shape[-1]), g.reshape(-1, cout), (0, 0), geo.precision)
  return dk.reshape(tuple(khw) + (cin, cout))


def _slices_dx(g: jax.Array, kernel: jax.Array, hw: tuple[int, int], geo: _Geometry) -> jax.Array:
  """Input gradient: (g @ kernel^T) then col2im, the transpose of :func:`_patches`."""
  kh, kw, cin, cout = kernel.shape
  b, ho, wo, _ = g.shape
  (sh, sw), (ph, pw) = geo.strides, geo.padding
  hp, wp = hw[0] + ph[0] + ph[1], hw[1] + pw[0] + pw[1]
  dp = _matmul(g.reshape(-1, cout), kernel.reshape(kh * kw * cin, cout), (1, 1), geo.precision)
  dp = dp.reshape(b, ho, wo, kh * kw, cin)
  zero = jnp.zeros((), g.dtype)
  dxp = None
  for i in range(kh):
    for j in range(kw):
      # Transpose of a strided slice: place the block at its offset, with
      # stride-1 zeros between rows/columns (interior padding).
      block = lax.pad(
        dp[:, :, :, i * kw + j, :],
        zero,
        (
          (0, 0, 0),
          (i, hp - i - sh * (ho - 1) - 1, sh - 1),
          (j, wp - j - sw * (wo - 1) - 1, sw - 1),
          (0, 0, 0),
        ),
      )
      dxp = block if dxp is None else dxp + block
  # Transpose of the padding: crop it (negative padding), or zero-fill rows
  # that a negative (cropping) padding had dropped.
  return lax.pad(dxp, zero, ((0, 0, 0), (-ph[0], -ph[1], 0), (-pw[0], -pw[1], 0), (0, 0, 0)))


def _slices_dx_flipped(
  g: jax.Array, kernel: jax.Array, hw: tuple[int, int], geo: _Geometry
) -> jax.Array:
  """Input gradient without col2im: im2col of the zero-dilated ``g``, flipped kernel.

  Kept for the benchmark (``experiments/bench_conv.py``), which measured it
  slower than :func:`_slices_dx` on CPU.
  """
  kh, kw, cin, cout = kernel.shape
  _, ho, wo, _ = g.shape
  (sh, sw), (ph, pw) = geo.strides, geo.padding
  # dx[y] = sum_i gd[y + lo - i] k[i], gd the g dilated by the stride: a
  # stride-1 'VALID' correlation of gd padded by (kh-1-lo, H+lo-len(gd)) with
  # the kernel flipped in space and transposed (in <-> out).
  gp = lax.pad(
    g,
    jnp.zeros((), g.dtype),
    (
      (0, 0, 0),
      (kh - 1 - ph[0], hw[0] + ph[0] - sh * (ho - 1) - 1, sh - 1),
      (kw - 1 - pw[0], hw[1] + pw[0] - sw * (wo - 1) - 1, sw - 1),
      (0, 0, 0),
    ),
  )
  flipped = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)
  unit = _Geometry((1, 1), ((0, 0), (0, 0)), geo.precision)
  return _slices_fwd(gp, flipped, unit)


# ---------------------------------------------------------------------------
# One member, as XLA's convolution and its transposes (what nnx.Conv runs).


def _xla_fwd(x: jax.Array, kernel: jax.Array, geo: _Geometry) -> jax.Array:
  return lax.conv_general_dilated(
    x,
    kernel,
    geo.strides,
    geo.padding,
    dimension_numbers=_DIMENSION_NUMBERS,
    precision=geo.precision,
  )


def _xla_dx(g: jax.Array, kernel: jax.Array, hw: tuple[int, int], geo: _Geometry) -> jax.Array:
  """Input gradient as one convolution (the transpose of :func:`_xla_fwd` in ``x``).

  ``dx[y] = sum_i gd[y + lo - i] k[i]``, ``gd`` the output gradient dilated by
  the stride: a stride-1 convolution of ``gd`` (``lhs_dilation``) padded by
  ``(kh - 1 - lo, H + lo - len(gd))`` with the kernel flipped in space and its
  in/out channels swapped. The swap is an explicit transpose so that the
  convolution has the canonical NHWC/HWIO layout: XLA:CPU canonicalises other
  layouts outside loops but not inside a ``while`` body (``lax.scan``), where
  JAX's own transpose of the convolution ran 36x slower than this one
  (jax 0.10.2). Written on the arrays themselves (not with
  ``jax.linear_transpose`` of an abstract input), their ``shard_map``
  varying-axes types combine as for any convolution.
  """
  kh, kw = kernel.shape[:2]
  pads = [
    (k - 1 - lo, n + lo - (s * (m - 1) + 1))
    for n, k, s, (lo, _), m in zip(hw, (kh, kw), geo.strides, geo.padding, g.shape[1:3])
  ]
  flipped = jnp.swapaxes(lax.rev(kernel, (0, 1)), 2, 3)
  return lax.conv_general_dilated(
    g,
    flipped,
    (1, 1),
    pads,
    lhs_dilation=geo.strides,
    dimension_numbers=_DIMENSION_NUMBERS,
    precision=geo.precision,
  )


def _xla_dk(x: jax.Array, g: jax.Array, khw: tuple[int, int], geo: _Geometry) -> jax.Array:
  """Kernel gradient as one convolution (the transpose of :func:`_xla_fwd` in the kernel).

  ``dk[i, c, o] = sum_{b, t} xpad[b, s*t + i, c] g[b, t, o]``: a convolution of
  ``x`` with ``g`` as the kernel dilated by the stride (``rhs_dilation``), the
  examples contracted as features and the input channels as the batch. The
  operands are transposed explicitly into the canonical NHWC/HWIO layout:
  inside a ``while`` body XLA:CPU does not do it, and JAX's own transpose ran
  about 50x slower there (see :func:`_xla_dx`).
  """
  pads = [
    (lo, k - 1 + s * (m - 1) + 1 - n - lo)
    for n, k, s, (lo, _), m in zip(x.shape[1:3], khw, geo.strides, geo.padding, g.shape[1:3])
  ]
  dk = lax.conv_general_dilated(
    jnp.transpose(x, (3, 1, 2, 0)),
    jnp.transpose(g, (1, 2, 0, 3)),
    (1, 1),
    pads,
    rhs_dilation=geo.strides,
    dimension_numbers=_DIMENSION_NUMBERS,
    precision=geo.precision,
  )
  return jnp.transpose(dk, (1, 2, 0, 3))  # [C, kh, kw, O] -> [kh, kw, C, O]


# ---------------------------------------------------------------------------
# The custom_vmap functions (cached per static geometry: one Python function
# object per configuration, so that jit caches hit).


def _fold_batch(a: jax.Array) -> jax.Array:
  """``[P, B, ...]`` -> ``[P * B, ...]``: members as more examples."""
  return a.reshape((a.shape[0] * a.shape[1],) + a.shape[2:])


def _unfold_batch(a: jax.Array, p: int) -> jax.Array:
  return a.reshape((p, a.shape[0] // p) + a.shape[1:])


# From this many patch features (kh * kw * in_channels) on, the kernel
# gradient of a shared input (members fed one minibatch) is taken from its
# im2col patches, built once, in one matmul with every member's output
# gradient, rather than one convolution per member. One-off timings at 32
# members, 28x28, batch 32, 3x3 -> 32 channels: 16 input channels (144
# features) 1.3-2.4x faster this way, 8 (72) even, 1 and 3 (the usual first
# layer) 1.4-1.7x slower.
_SHARED_PATCHES_MIN = 128


def _per_member(fn, in_batched: Sequence[bool], *args) -> jax.Array:
  """``fn`` on one member at a time (``lax.map``); unbatched arguments are shared.

  ``fn`` is the custom_vmap function itself, so that an outer vmap (vmap of
  vmap) dispatches again on its own axis inside the loop.
  """

  def one(mapped):
    it = iter(mapped)
    return fn(*[next(it) if b else a for a, b in zip(args, in_batched)])

  return lax.map(one, [a for a, b in zip(args, in_batched) if b])


def _dispatching(base: Callable, fast: Callable) -> Callable:
  """``base`` as a ``custom_vmap`` function whose batching rule tries ``fast`` first.

  ``fast(fn, axis_size, in_batched, *args)`` returns the batched result in
  the cases it has a faster way for, else None: then one member at a time
  (:func:`_per_member`). ``fn`` is the dispatching function itself, so that
  calling it again (on members folded into the batch, or per member)
  dispatches again under an outer ``vmap``.
  """
  fn = jax.custom_batching.custom_vmap(base)

  @fn.def_vmap
  def rule(axis_size, in_batched, *args):
    out = fast(fn, axis_size, in_batched, *args)
    return (_per_member(fn, in_batched, *args) if out is None else out), True

  return fn


def _shared_kernel(fn: Callable, axis_size: int, a: jax.Array, kernel: jax.Array) -> jax.Array:
  """``fn(a, kernel)`` for every member with one kernel: members are more examples."""
  return _unfold_batch(fn(_fold_batch(a), kernel), axis_size)


@functools.lru_cache(maxsize=None)
def _fwd_fn(geo: _Geometry):
  """``y = conv(x, kernel)``, dispatching on which arguments are vmapped."""

  def fast(fwd, axis_size, in_batched, x, kernel):
    if not in_batched[1]:
      return _shared_kernel(fwd, axis_size, x, kernel)
    if x.shape[-1] == 1:
      # One input channel (a grey-scale first layer): XLA:CPU's convolution
      # is slow there (measured 1.5-2.5x slower than im2col alone), and the
      # im2col has only kh*kw features: slices, one matmul batched over members.
      slices = jax.vmap(
        functools.partial(_slices_fwd, geo=geo), in_axes=(0 if in_batched[0] else None, 0)
      )
      return slices(x, kernel)
    return None

  return _dispatching(lambda x, kernel: _xla_fwd(x, kernel, geo), fast)


@functools.lru_cache(maxsize=None)
def _dx_fn(geo: _Geometry, hw: tuple[int, int]):
  """``dx(g, kernel)``: the input gradient (``hw``: the input's spatial size)."""

  def fast(dx, axis_size, in_batched, g, kernel):
    return None if in_batched[1] else _shared_kernel(dx, axis_size, g, kernel)

  return _dispatching(lambda g, kernel: _xla_dx(g, kernel, hw, geo), fast)


@functools.lru_cache(maxsize=None)
def _dk_fn(geo: _Geometry, khw: tuple[int, int]):
  """``dk(x, g)``: the kernel gradient (``khw``: the kernel's spatial size)."""

  def fast(dk, axis_size, in_batched, x, g):
    # Every member has its own kernel gradient (summing over members, when
    # the kernel is shared, is left to JAX: under vmap of grad it must not
    # happen).
    del dk, axis_size
    if in_batched == [False, True] and khw[0] * khw[1] * x.shape[-1] >= _SHARED_PATCHES_MIN:
      # A shared input with many patch features: its patches once, then one
      # matmul against all members' output gradients.
      shared_dk = jax.vmap(functools.partial(_slices_dk, khw=khw, geo=geo), in_axes=(None, 0))
      return shared_dk(x, g)
    return None

  return _dispatching(lambda x, g: _xla_dk(x, g, khw, geo), fast)


def _varying_axes(a: jax.Array) -> frozenset:
  """The ``shard_map`` mesh axes along which ``a`` varies (empty outside one)."""
  mat = getattr(jax.typeof(a), "mat", None)
  return getattr(mat, "varying", frozenset())


def _cotangent_like(ct: jax.Array, primal: jax.Array) -> jax.Array:
  """Sums ``ct`` over the mesh axes along which it varies and ``primal`` does not.

  Inside ``shard_map`` (with its varying-axes check), a value replicated over
  devices (the shared minibatch) that meets per-device members gets a
  per-device cotangent; a custom_vjp must return the cotangent with the
  primal's type, i.e. summed over those devices, as JAX's own rules do.
  """
  extra = _varying_axes(ct) - _varying_axes(primal)
  return lax.psum(ct, tuple(sorted(extra))) if extra else ct


@functools.lru_cache(maxsize=None)
def _auto_fn(geo: _Geometry):
  """The differentiable ``impl='auto'`` convolution of one geometry."""

  @jax.custom_vjp
  def f(x, kernel):
    return _fwd_fn(geo)(x, kernel)

  def f_fwd(x, kernel):
    return _fwd_fn(geo)(x, kernel), (x, kernel)

  def f_bwd(res, g):
    x, kernel = res
    dx = _dx_fn(geo, tuple(x.shape[1:3]))(g, kernel)
    dk = _dk_fn(geo, tuple(kernel.shape[:2]))(x, g)
    return _cotangent_like(dx, x), _cotangent_like(dk, kernel)

  f.defvjp(f_fwd, f_bwd)
  return f


@functools.lru_cache(maxsize=None)
def _slices_fn(geo: _Geometry):
  """The differentiable ``impl='slices'`` convolution: im2col everywhere."""

  @jax.custom_vjp
  def f(x, kernel):
    return _slices_fwd(x, kernel, geo)

  def f_fwd(x, kernel):
    return _slices_fwd(x, kernel, geo), (x, kernel)

  def f_bwd(res, g):
    x, kernel = res
    dx = _slices_dx(g, kernel, tuple(x.shape[1:3]), geo)
    dk = _slices_dk(x, g, tuple(kernel.shape[:2]), geo)
    return _cotangent_like(dx, x), _cotangent_like(dk, kernel)

  f.defvjp(f_fwd, f_bwd)
  return f


# ---------------------------------------------------------------------------
# Public API.


def _as_tuple(value, n: int, name: str) -> tuple[int, ...]:
  if value is None:  # nnx.Conv's sentinel for 1
    value = 1
  if isinstance(value, int):
    return (value,) * n
  value = tuple(value)
  if len(value) != n:
    raise ValueError(f"{name}: expected an int or {n} ints, got {value!r}")
  return value


def _hashable_precision(precision):
  if isinstance(precision, list):
    return tuple(precision)
  return precision


def _unsupported(
  ndim_spatial: int,
  input_dilation,
  kernel_dilation,
  feature_group_count: int,
  preferred_element_type,
  padding,
) -> str | None:
  """The first option that the fast path does not cover, or None."""
  if ndim_spatial != 2:
    return f"{ndim_spatial}-D convolution"
  if any(d != 1 for d in _as_tuple(input_dilation, 2, "input_dilation")):
    return "input_dilation"
  if any(d != 1 for d in _as_tuple(kernel_dilation, 2, "kernel_dilation")):
    return "kernel_dilation"
  if feature_group_count != 1:
    return "feature_group_count"
  if preferred_element_type is not None:
    return "preferred_element_type"
  if isinstance(padding, str) and padding not in ("SAME", "SAME_LOWER", "VALID"):
    return f"padding={padding!r}"
  return None


def _channels_last(ndim: int) -> lax.ConvDimensionNumbers:
  """Dimension numbers of an input ``[N, spatial..., C]`` and kernel ``[spatial..., I, O]``."""
  spatial = tuple(range(1, ndim - 1))
  kernel_spatial = tuple(range(ndim - 2))
  return lax.ConvDimensionNumbers(
    (0, ndim - 1) + spatial, (ndim - 1, ndim - 2) + kernel_spatial, (0, ndim - 1) + spatial
  )


def conv(
  x: jax.Array,
  kernel: jax.Array,
  strides: int | Sequence[int] = 1,
  padding: str | int | Sequence = "SAME",
  *,
  input_dilation: int | Sequence[int] = 1,
  kernel_dilation: int | Sequence[int] = 1,
  feature_group_count: int = 1,
  precision: Any = None,
  preferred_element_type: Any = None,
  impl: str = "auto",
) -> jax.Array:
  """Channels-last convolution, fast alone and when vmapped over members.

  Computes what ``lax.conv_general_dilated`` computes for an NHWC input and
  an HWIO kernel. See the module docstring for how ``impl='auto'`` chooses an
  implementation when vmapped.

  Args:
    x: input ``[B, H, W, C]`` (other ranks: ``[B, spatial..., C]``, plain
      ``lax.conv_general_dilated``).
    kernel: ``[kh, kw, C // feature_group_count, O]``.
    strides: an int or one int per spatial axis.
    padding: ``'SAME'``, ``'SAME_LOWER'``, ``'VALID'``, an int, or one int or
      ``(low, high)`` pair per spatial axis (as ``nnx.Conv`` accepts).
    input_dilation: not in the fast path (see below).
    kernel_dilation: not in the fast path.
    feature_group_count: not in the fast path when > 1.
    precision: passed to the convolution and to the matmuls of the im2col.
    preferred_element_type: not in the fast path when set.
    impl: ``'auto'`` (XLA's convolution alone; vmapped over members, one
      convolution per member in a loop, or one for all members when they share
      the kernel), ``'xla'`` (always ``lax.conv_general_dilated``, grouped under
      vmap: for backends where that is fast; on an H200 it was slower than the
      im2col in float32) or ``'slices'`` (always im2col).

  Returns:
    ``[B, Ho, Wo, O]``.

  Raises:
    ValueError: on an unknown ``impl``, or with ``impl='slices'``, on an
      option outside the fast path (inputs that are not 2-D images, input or
      kernel dilation, ``feature_group_count > 1``, ``preferred_element_type``);
      ``impl='auto'`` runs those with ``lax.conv_general_dilated``.
  """
  if impl not in IMPLS:
    raise ValueError(f"impl: unknown value {impl!r}; allowed: {', '.join(IMPLS)}")
  nsp = x.ndim - 2
  if kernel.ndim != x.ndim:
    raise ValueError(
      f"conv: input of rank {x.ndim} needs a kernel of rank {x.ndim}, got {kernel.ndim}"
    )
  if isinstance(padding, str):
    lax_padding = padding
  else:
    lax_padding = [tuple(p) for p in nnx_linear.canonicalize_padding(padding, nsp)]
  option = _unsupported(
    nsp, input_dilation, kernel_dilation, feature_group_count, preferred_element_type, lax_padding
  )
  if impl == "slices" and option is not None:
    raise ValueError(f"conv: impl='slices' does not support {option}; use impl='auto'")
  if impl == "xla" or option is not None:
    dilations = (input_dilation, kernel_dilation, feature_group_count)
    return _lax_conv(x, kernel, strides, lax_padding, dilations, precision, preferred_element_type)
  geo = _geometry(x, kernel, strides, lax_padding, precision)
  dtype = jnp.result_type(x, kernel)
  fn = _auto_fn(geo) if impl == "auto" else _slices_fn(geo)
  return fn(x.astype(dtype), kernel.astype(dtype))


def _lax_conv(
  x, kernel, strides, lax_padding, dilations, precision, preferred_element_type
) -> jax.Array:
  """:func:`conv` as ``lax.conv_general_dilated`` (``dilations``: input, kernel, groups)."""
  nsp = x.ndim - 2
  input_dilation, kernel_dilation, feature_group_count = dilations
  kw = {} if preferred_element_type is None else {"preferred_element_type": preferred_element_type}
  return lax.conv_general_dilated(
    x,
    kernel,
    _as_tuple(strides, nsp, "strides"),
    lax_padding,
    lhs_dilation=_as_tuple(input_dilation, nsp, "input_dilation"),
    rhs_dilation=_as_tuple(kernel_dilation, nsp, "kernel_dilation"),
    dimension_numbers=_channels_last(x.ndim),
    feature_group_count=feature_group_count,
    precision=precision,
    **kw,
  )


def _geometry(x: jax.Array, kernel: jax.Array, strides, lax_padding, precision) -> _Geometry:
  """The fast path's geometry of a 2-D convolution, its shapes checked."""
  if x.shape[-1] != kernel.shape[2]:
    raise ValueError(f"conv: input has {x.shape[-1]} channels, kernel expects {kernel.shape[2]}")
  strides = _as_tuple(strides, 2, "strides")
  if isinstance(lax_padding, str):
    lax_padding = lax.padtype_to_pads(x.shape[1:3], kernel.shape[:2], strides, lax_padding)
  geo = _Geometry(
    strides, tuple(tuple(int(v) for v in p) for p in lax_padding), _hashable_precision(precision)
  )
  if min(_out_hw(geo, x.shape[1:3], kernel.shape[:2])) < 1:
    raise ValueError(
      f"conv: kernel {kernel.shape[:2]} does not fit the padded input "
      f"{x.shape[1:3]} (padding {geo.padding})"
    )
  return geo


class Conv(nnx.Conv):
  """``nnx.Conv`` whose 2-D convolution stays fast when vmapped over members.

  A drop-in replacement: same constructor (plus ``impl``), same parameters
  (``kernel [kh, kw, in, out]``, ``bias [out]``) drawn from ``rngs`` in the same
  order, same call. It subclasses ``nnx.Conv`` (``isinstance`` checks keep
  working) and replaces the convolution by :func:`conv`. Calls outside the
  fast path (see :func:`conv`: 1-D/3-D kernels, dilations, feature groups,
  ``preferred_element_type``, a custom ``conv_general_dilated``,
  ``out_sharding``, ``'CAUSAL'`` padding) run ``nnx.Conv``'s own call with
  ``impl='auto'`` and raise ``ValueError`` with ``impl='slices'``; ``mask`` and
  ``'CIRCULAR'``/``'REFLECT'`` padding are in the fast path.

  Args:
    in_features: input channels.
    out_features: output channels.
    kernel_size: an int or a tuple (an int means a 1-D kernel, as in nnx.Conv).
    strides: an int or one per spatial axis.
    padding: ``'SAME'``, ``'VALID'``, ``'CIRCULAR'``, ``'REFLECT'``, ``'CAUSAL'``
      (1-D), an int, or one int or ``(low, high)`` pair per spatial axis.
    input_dilation: input dilation (outside the fast path unless 1).
    kernel_dilation: kernel dilation (outside the fast path unless 1).
    feature_group_count: feature groups (outside the fast path unless 1).
    use_bias: add a bias.
    mask: multiplies the kernel (same shape as the kernel).
    dtype: computation dtype (default: inferred from input and params).
    param_dtype: parameter dtype.
    precision: ``lax.Precision`` of the convolution and matmuls.
    kernel_init: kernel initializer.
    bias_init: bias initializer.
    conv_general_dilated: a custom convolution function (outside the fast
      path unless ``lax.conv_general_dilated``).
    promote_dtype: dtype promotion function of ``(inputs, kernel, bias)``.
    preferred_element_type: output type of the convolution (outside the fast
      path when set).
    rngs: the parameters' keys.
    kernel_metadata: metadata of the kernel ``Param``.
    bias_metadata: metadata of the bias ``Param``.
    impl: ``'auto'``, ``'xla'`` or ``'slices'`` (see :func:`conv`).
  """

  def __init__(
    self,
    in_features: int,
    out_features: int,
    kernel_size: int | Sequence[int],
    strides: None | int | Sequence[int] = 1,
    *,
    padding: Any = "SAME",
    input_dilation: None | int | Sequence[int] = 1,
    kernel_dilation: None | int | Sequence[int] = 1,
    feature_group_count: int = 1,
    use_bias: bool = True,
    mask: jax.Array | None = None,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
    precision: Any = None,
    kernel_init: Any = nnx_linear.default_kernel_init,
    bias_init: Any = nnx_linear.default_bias_init,
    conv_general_dilated: Any = lax.conv_general_dilated,
    promote_dtype: Any = dtypes.promote_dtype,
    preferred_element_type: Any = None,
    rngs: nnx.Rngs,
    kernel_metadata: Any = MappingProxyType({}),
    bias_metadata: Any = MappingProxyType({}),
    impl: str = "auto",
  ):
    if impl not in IMPLS:
      raise ValueError(f"impl: unknown value {impl!r}; allowed: {', '.join(IMPLS)}")
    # nnx.Conv's own constructor: the same parameter draws in the same order.
    super().__init__(
      in_features,
      out_features,
      kernel_size,
      strides,
      padding=padding,
      input_dilation=input_dilation,
      kernel_dilation=kernel_dilation,
      feature_group_count=feature_group_count,
      use_bias=use_bias,
      mask=mask,
      dtype=dtype,
      param_dtype=param_dtype,
      precision=precision,
      kernel_init=kernel_init,
      bias_init=bias_init,
      conv_general_dilated=conv_general_dilated,
      promote_dtype=promote_dtype,
      preferred_element_type=preferred_element_type,
      rngs=rngs,
      kernel_metadata=kernel_metadata,
      bias_metadata=bias_metadata,
    )
    self.impl = impl

  def _unsupported(self, out_sharding) -> str | None:
    """The first option of this layer or call outside the fast path, or None."""
    padding = self.padding if isinstance(self.padding, str) else "VALID"
    if padding in ("CIRCULAR", "REFLECT"):
      padding = "VALID"  # applied to the input first, as nnx.Conv does
    option = _unsupported(
      len(self.kernel_size),
      self.input_dilation,
      self.kernel_dilation,
      self.feature_group_count,
      self.preferred_element_type,
      padding,
    )
    if option is None and self.conv_general_dilated is not lax.conv_general_dilated:
      option = "a custom conv_general_dilated"
    if option is None and out_sharding is not None:
      option = "out_sharding"
    return option

  def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
    """Applies the convolution.

    Args:
      inputs: ``[*batch, H, W, C]`` (any number of batch axes, as nnx.Conv).
      out_sharding: as ``nnx.Conv`` (outside the fast path when set).

    Returns:
      ``[*batch, Ho, Wo, out_features]``.
    """
    option = self._unsupported(out_sharding)
    if option is not None and self.impl == "slices":
      raise ValueError(f"Conv: impl='slices' does not support {option}; use impl='auto'")
    if self.impl == "xla" or option is not None:
      return super().__call__(inputs, out_sharding=out_sharding)
    kernel_size = self.kernel_size
    batch_shape = inputs.shape[: inputs.ndim - 3]
    if len(batch_shape) != 1:  # one batch axis for the convolution, as nnx.Conv
      inputs = inputs.reshape((-1,) + inputs.shape[len(batch_shape) :])
    padding = self.padding
    if isinstance(padding, str) and padding in ("CIRCULAR", "REFLECT"):
      pads = [(0, 0)] + [((k - 1) // 2, k // 2) for k in kernel_size] + [(0, 0)]
      inputs = jnp.pad(inputs, pads, mode="wrap" if padding == "CIRCULAR" else "reflect")
      padding = "VALID"
    if self.mask is not None and self.mask.shape != self.kernel_shape:
      raise ValueError(
        "Mask needs to have the same shape as weights. "
        f"Shapes are: {self.mask.shape}, {self.kernel_shape}"
      )
    kernel = self.kernel[...]
    if self.mask is not None:
      kernel = kernel * self.mask
    bias = self.bias[...] if self.bias is not None else None
    inputs, kernel, bias = self.promote_dtype((inputs, kernel, bias), dtype=self.dtype)
    y = conv(inputs, kernel, self.strides, padding, precision=self.precision, impl=self.impl)
    if bias is not None:
      y = y + bias
    if len(batch_shape) != 1:
      y = y.reshape(batch_shape + y.shape[1:])
    return y

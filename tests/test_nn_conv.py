"""hpjax.nn.conv / hpjax.nn.Conv against lax.conv_general_dilated and nnx.Conv.

Values and gradients are compared alone, under vmap over members (kernel
batched with the input batched or shared, input batched with the kernel
shared), vmap of vmap, jit + lax.scan / lax.map, shard_map on two simulated
devices, and for a small NNX model vmapped over members. Unbatched,
``impl='auto'`` runs the same XLA convolutions as JAX's own autodiff, so those
results are compared for equality; elsewhere the order of float32 sums may
differ (rtol 1e-5).
"""

import inspect
import os
import re
import subprocess
import sys
import textwrap

from flax import nnx
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

import hpjax.nn
from hpjax.nn import Conv
from hpjax.nn import conv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RTOL, ATOL = 1e-5, 1e-6
P, B, H, W, C, O = 3, 2, 7, 6, 3, 4

# (kernel (kh, kw), strides, padding)
GEOMETRIES = [
  ((3, 3), 1, "SAME"),
  ((3, 3), 2, "SAME"),
  ((3, 3), 2, "VALID"),
  ((1, 1), 1, "SAME"),
  ((3, 2), (2, 1), ((2, 0), (1, 3))),
  ((2, 3), 2, 1),
]


def _ref(x, kernel, strides=1, padding="SAME"):
  """The stock convolution (NHWC, HWIO), with padding as nnx.Conv accepts it."""
  strides = (strides, strides) if isinstance(strides, int) else strides
  if isinstance(padding, int):
    padding = ((padding, padding),) * 2
  return lax.conv_general_dilated(
    x, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
  )


def _data(kshape=(3, 3), members=P, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(members, B, H, W, C)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(members,) + tuple(kshape) + (C, O)), jnp.float32)
  return x, k


def _loss(fn):
  # A nonlinear scalar of the output, so that the output gradient varies.
  return lambda x, k: jnp.sum(jnp.sin(fn(x, k)))


def _close(a, b, rtol=RTOL, atol=ATOL):
  """Elementwise rtol, plus rtol of the leaf's largest magnitude.

  Sums of float32 products in another order differ by about 1e-7 of their
  terms' magnitude, so an element that nearly cancels is judged against the
  scale of the whole array.
  """
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    u, v = np.asarray(u), np.asarray(v)
    scale = float(np.max(np.abs(v))) if v.size else 0.0
    np.testing.assert_allclose(u, v, rtol=rtol, atol=atol + rtol * scale)


# ---------------------------------------------------------------------------
# The functional conv.


@pytest.mark.parametrize("kshape,strides,padding", GEOMETRIES)
def test_alone_matches_lax_conv(kshape, strides, padding):
  x, k = _data(kshape)
  x, k = x[0], k[0]
  ref = jax.jit(jax.value_and_grad(_loss(lambda a, b: _ref(a, b, strides, padding)), (0, 1)))
  want = ref(x, k)
  # 'auto' alone is XLA's convolution and JAX's own transposes, re-laid out.
  got = jax.jit(jax.value_and_grad(_loss(lambda a, b: conv(a, b, strides, padding)), (0, 1)))(x, k)
  for u, v in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
  for impl in ("slices", "xla"):
    fn = _loss(lambda a, b, impl=impl: conv(a, b, strides, padding, impl=impl))
    _close(jax.jit(jax.value_and_grad(fn, (0, 1)))(x, k), want)


@pytest.mark.parametrize("impl", ["auto", "slices"])
@pytest.mark.parametrize(
  "in_axes", [(0, 0), (None, 0), (0, None)], ids=["x_and_kernel", "shared_x", "shared_kernel"]
)
@pytest.mark.parametrize("kshape,strides,padding", [GEOMETRIES[0], GEOMETRIES[2], GEOMETRIES[4]])
def test_vmap_over_members(kshape, strides, padding, in_axes, impl):
  xs, ks = _data(kshape)
  x = xs if in_axes[0] == 0 else xs[0]
  k = ks if in_axes[1] == 0 else ks[0]
  ours = _loss(lambda a, b: conv(a, b, strides, padding, impl=impl))
  stock = _loss(lambda a, b: _ref(a, b, strides, padding))

  def vmap_of_grad(f):
    return jax.jit(jax.vmap(jax.value_and_grad(f, (0, 1)), in_axes=in_axes))(x, k)

  def grad_of_vmap(f):
    # An unbatched argument's gradient is the sum over members here.
    total = lambda a, b: jax.vmap(f, in_axes=in_axes)(a, b).sum()
    return jax.jit(jax.value_and_grad(total, (0, 1)))(x, k)

  _close(vmap_of_grad(ours), vmap_of_grad(stock))
  _close(grad_of_vmap(ours), grad_of_vmap(stock))


@pytest.mark.parametrize("channels", [16, 1])
def test_paths_chosen_by_input_channels(channels):
  # 16 channels (3x3x16 = 144 patch features): the kernel gradient of a shared
  # input takes the im2col path (patches once, one matmul over members).
  # 1 channel: the forward of per-member kernels is an im2col.
  rng = np.random.default_rng(5)
  xs = jnp.asarray(rng.normal(size=(P, B, 5, 5, channels)), jnp.float32)
  ks = jnp.asarray(rng.normal(size=(2, P, 3, 3, channels, O)) * 0.2, jnp.float32)
  ours = _loss(lambda a, b: conv(a, b, 2, "SAME"))
  stock = _loss(lambda a, b: _ref(a, b, 2, "SAME"))
  for x_axis in (None, 0):
    x = xs if x_axis == 0 else xs[0]
    run = lambda f, x=x, x_axis=x_axis: jax.jit(
      jax.vmap(jax.value_and_grad(f, (0, 1)), in_axes=(x_axis, 0))
    )(x, ks[0])
    _close(run(ours), run(stock))
    total = lambda f, x=x, x_axis=x_axis: jax.jit(
      jax.grad(lambda a, b: jax.vmap(f, in_axes=(x_axis, 0))(a, b).sum(), (0, 1))
    )(x, ks[0])
    _close(total(ours), total(stock))
    # Nested: an outer vmap over the kernels only.
    nested = lambda f, x=x, x_axis=x_axis: jax.jit(
      jax.vmap(jax.vmap(jax.value_and_grad(f, (0, 1)), in_axes=(x_axis, 0)), in_axes=(None, 0))
    )(x, ks)
    _close(nested(ours), nested(stock))


def _group_counts(fn, *args) -> list[int]:
  """feature/batch group counts of every convolution in ``jit(fn)``'s StableHLO."""
  text = jax.jit(fn).lower(*args).as_text()
  return [int(n) for n in re.findall(r"(?:feature|batch)_group_count = (\d+)", text)]


def test_vmapped_auto_runs_no_grouped_convolution():
  xs, ks = _data()
  for in_axes in [(0, 0), (None, 0), (0, None)]:
    x = xs if in_axes[0] == 0 else xs[0]
    k = ks if in_axes[1] == 0 else ks[0]
    step = lambda f, in_axes=in_axes: jax.vmap(jax.value_and_grad(f, (0, 1)), in_axes=in_axes)
    counts = _group_counts(step(_loss(conv)), x, k)
    assert counts and set(counts) == {1}, (in_axes, counts)
    assert not _group_counts(step(_loss(lambda a, b: conv(a, b, impl="slices"))), x, k)
  # The check can see a grouped convolution: the stock one under vmap.
  assert max(_group_counts(step(_loss(_ref), (0, 0)), xs, ks)) == P


def test_vmap_of_vmap():
  # Outer axis Q, inner axis P; every batching of x and kernel on each level.
  q = 2
  rng = np.random.default_rng(1)
  xs = jnp.asarray(rng.normal(size=(q, P, B, H, W, C)), jnp.float32)
  ks = jnp.asarray(rng.normal(size=(q, P, 3, 3, C, O)), jnp.float32)
  ours = _loss(lambda a, b: conv(a, b, 2, "SAME"))
  stock = _loss(lambda a, b: _ref(a, b, 2, "SAME"))
  for outer in [(0, 0), (None, 0), (0, None)]:
    for inner in [(0, 0), (None, 0), (0, None)]:
      x = xs if outer[0] == 0 else xs[0]
      k = ks if outer[1] == 0 else ks[0]
      x = x if inner[0] == 0 else (x[:, 0] if outer[0] == 0 else x[0])
      k = k if inner[1] == 0 else (k[:, 0] if outer[1] == 0 else k[0])

      def run(f, outer=outer, inner=inner, x=x, k=k):
        g = jax.vmap(jax.value_and_grad(f, (0, 1)), in_axes=inner)
        return jax.jit(jax.vmap(g, in_axes=outer))(x, k)

      _close(run(ours), run(stock))


def test_jit_scan_and_lax_map():
  xs, ks = _data()

  def train(f, x_axis):
    """Three SGD steps of every member's kernel in a lax.scan."""
    step = jax.vmap(jax.value_and_grad(f, 1), in_axes=(x_axis, 0))

    def body(k, t):
      loss, g = step(xs if x_axis == 0 else xs[0] * t, k)
      return k - 0.01 * g, loss

    return jax.jit(lambda k: lax.scan(body, k, jnp.arange(1.0, 4.0)))(ks)

  ours, stock = _loss(conv), _loss(_ref)
  for x_axis in (0, None):
    _close(train(ours, x_axis), train(stock, x_axis))

  def chunked(f):
    """Members in chunks of one: lax.map over chunks of a vmapped function."""
    run = jax.vmap(jax.value_and_grad(f, (0, 1)))
    chunks = jax.tree.map(lambda a: a.reshape((P, 1) + a.shape[1:]), (xs, ks))
    return jax.jit(lambda c: lax.map(lambda a: run(*a), c))(chunks)

  _close(chunked(ours), chunked(stock))


_SHARD_MAP = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jax import lax
    from jax.sharding import Mesh, PartitionSpec as PS
    from hpjax.nn import conv
    assert jax.device_count() == 2, jax.devices()
    ref = lambda x, k: lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.normal(size=(4, 2, 6, 5, 3)), jnp.float32)
    ks = jnp.asarray(rng.normal(size=(4, 3, 3, 3, 4)), jnp.float32)
    mesh = Mesh(np.array(jax.devices()), ("m",))
    def close(a, b):
      for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        v = np.asarray(v)
        np.testing.assert_allclose(np.asarray(u), v, rtol=1e-5, atol=1e-5 * np.abs(v).max())
    for check_vma in (True, False):
      for shared in (False, True):
        x = xs[0] if shared else xs
        xspec = PS() if shared else PS("m")
        def members(fn, x, k):  # per device: its members, vmapped
          f = lambda a, b: jnp.sum(jnp.sin(fn(a, b)))
          return jax.vmap(jax.value_and_grad(f, 1), in_axes=(None if shared else 0, 0))(x, k)
        def sharded(fn):
          return jax.jit(jax.shard_map(lambda a, b: members(fn, a, b), mesh=mesh,
                                       in_specs=(xspec, PS("m")), out_specs=PS("m"),
                                       check_vma=check_vma))(x, ks)
        close(sharded(conv), sharded(ref))
        # Differentiating through shard_map: the replicated input's gradient.
        def outer(fn):
          s = jax.shard_map(lambda a, b: jax.vmap(lambda u, v: jnp.sum(jnp.sin(fn(u, v))),
                                                  in_axes=(None if shared else 0, 0))(a, b),
                            mesh=mesh, in_specs=(xspec, PS("m")), out_specs=PS("m"),
                            check_vma=check_vma)
          return jax.jit(jax.grad(lambda a, b: s(a, b).sum(), (0, 1)))(x, ks)
        close(outer(conv), outer(ref))
    print("shard_map OK")
    """)


def test_shard_map_on_two_devices():
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="2")
  r = subprocess.run(
    [sys.executable, "-c", _SHARD_MAP],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert r.returncode == 0, r.stderr[-4000:]
  assert "shard_map OK" in r.stdout


def test_fallback_options_and_errors():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(B, H, W, 4)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, 4, O)), jnp.float32)
  dn = ("NHWC", "HWIO", "NHWC")
  cases = {
    "kernel_dilation": (dict(kernel_dilation=2), dict(rhs_dilation=(2, 2))),
    # (lax has no 'SAME' with input dilation: explicit pads.)
    "input_dilation": (
      dict(input_dilation=2, padding=((1, 1), (1, 1))),
      dict(lhs_dilation=(2, 2), padding=((1, 1), (1, 1))),
    ),
    "feature_group_count": (dict(feature_group_count=2), dict(feature_group_count=2)),
  }
  for name, (ours_kw, lax_kw) in cases.items():
    kk = k[:, :, :2] if name == "feature_group_count" else k
    lax_kw = dict(dict(padding="SAME"), **lax_kw)
    want = lax.conv_general_dilated(x, kk, (1, 1), dimension_numbers=dn, **lax_kw)
    np.testing.assert_array_equal(np.asarray(conv(x, kk, 1, **ours_kw)), np.asarray(want))
    # Under vmap too (the plain, grouped convolution: correct, not fast).
    got = jax.vmap(lambda b, kk=kk, kw=ours_kw: conv(x, b, **kw))(jnp.stack([kk, kk]))
    _close(got, jnp.stack([want, want]))
    with pytest.raises(ValueError, match=name):
      conv(x, kk, impl="slices", **ours_kw)
  # 1-D and 3-D inputs: lax's convolution with channels-last dimensions.
  x1, k1 = x[:, 0], k[0]
  want = lax.conv_general_dilated(x1, k1, (2,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"))
  np.testing.assert_array_equal(np.asarray(conv(x1, k1, 2)), np.asarray(want))
  with pytest.raises(ValueError, match="1-D convolution"):
    conv(x1, k1, impl="slices")
  with pytest.raises(ValueError, match="impl: unknown value 'fast'"):
    conv(x, k, impl="fast")
  with pytest.raises(ValueError, match="channels"):
    conv(x, k[:, :, :3])


# ---------------------------------------------------------------------------
# The nnx layer.


def test_conv_is_nnx_conv_with_the_same_constructor_and_init():
  ours = inspect.signature(Conv.__init__).parameters
  stock = inspect.signature(nnx.Conv.__init__).parameters
  assert list(ours) == list(stock) + ["impl"]
  for name, p in stock.items():
    assert ours[name].kind == p.kind, name
    assert ours[name].default is p.default or ours[name].default == p.default, name
  assert {"Conv", "conv"} <= set(hpjax.nn.__all__)
  # (An int kernel_size is a 1-D kernel, in nnx.Conv and here.)
  for kw in [
    dict(),
    dict(kernel_size=(3, 2), strides=2, padding="VALID", use_bias=False),
    dict(kernel_init=nnx.initializers.normal(1.0), bias_init=nnx.initializers.ones),
    dict(kernel_size=(3,)),
    dict(feature_group_count=3, in_features=6),
  ]:
    kw = dict(dict(in_features=3, out_features=4, kernel_size=(3, 3)), **kw)
    a = Conv(**kw, rngs=nnx.Rngs(params=7))
    b = nnx.Conv(**kw, rngs=nnx.Rngs(params=7))
    assert isinstance(a, nnx.Conv)
    sa, sb = nnx.state(a, nnx.Param), nnx.state(b, nnx.Param)
    assert jax.tree.structure(sa) == jax.tree.structure(sb)
    for u, v in zip(jax.tree.leaves(sa), jax.tree.leaves(sb)):
      np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
  # The same Rngs stream advances the same way: the next draw agrees too.
  ra, rb = nnx.Rngs(3), nnx.Rngs(3)
  Conv(3, 4, (3, 3), rngs=ra), nnx.Conv(3, 4, (3, 3), rngs=rb)
  np.testing.assert_array_equal(
    np.asarray(jax.random.key_data(ra.params())), np.asarray(jax.random.key_data(rb.params()))
  )
  with pytest.raises(ValueError, match="impl: unknown value"):
    Conv(3, 4, 3, impl="grouped", rngs=nnx.Rngs(0))


@pytest.mark.parametrize(
  "options",
  [
    dict(),
    dict(strides=2, padding="VALID"),
    dict(kernel_size=(3, 2), padding=((1, 0), (2, 1)), use_bias=False),
    dict(padding="CIRCULAR", strides=(1, 2)),
    dict(padding="REFLECT", mask=jnp.tril(jnp.ones((3, 3, C, O)))),
    dict(padding=2, bias_init=nnx.initializers.normal(1.0)),
  ],
  ids=["default", "stride2_valid", "explicit_pairs", "circular", "reflect_mask", "int_pad"],
)
def test_layer_matches_nnx_conv(options):
  kw = dict(dict(in_features=C, out_features=O, kernel_size=(3, 3)), **options)
  x = _data()[0][0]

  def value_and_grads(cls, x):
    layer = cls(**kw, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(layer)
    f = lambda p, x: jnp.sum(jnp.sin(nnx.merge(graphdef, p)(x)))
    return jax.jit(jax.value_and_grad(f, (0, 1)))(params, x)

  _close(value_and_grads(Conv, x), value_and_grads(nnx.Conv, x))
  # No batch axis, and two batch axes, as nnx.Conv allows.
  for xx in (x[0], x.reshape((1,) + x.shape)):
    a, b = Conv(**kw, rngs=nnx.Rngs(0)), nnx.Conv(**kw, rngs=nnx.Rngs(0))
    _close(a(xx), b(xx))


def test_layer_fallbacks_match_nnx_conv_and_slices_names_the_option():
  rng = np.random.default_rng(3)
  cases = {
    "kernel_dilation": (
      dict(in_features=4, out_features=O, kernel_size=(3, 3), kernel_dilation=2),
      (B, H, W, 4),
    ),
    "input_dilation": (
      dict(in_features=4, out_features=O, kernel_size=(3, 3), input_dilation=2, padding=1),
      (B, H, W, 4),
    ),
    "feature_group_count": (
      dict(in_features=4, out_features=O, kernel_size=(3, 3), feature_group_count=2),
      (B, H, W, 4),
    ),
    "1-D convolution": (
      dict(in_features=4, out_features=O, kernel_size=(3,), padding="CAUSAL"),
      (B, W, 4),
    ),
    "3-D convolution": (
      dict(in_features=4, out_features=O, kernel_size=(2, 2, 2)),
      (B, 4, H, W, 4),
    ),
    "preferred_element_type": (
      dict(in_features=4, out_features=O, kernel_size=(3, 3), preferred_element_type=jnp.float32),
      (B, H, W, 4),
    ),
    "custom conv_general_dilated": (
      dict(
        in_features=4,
        out_features=O,
        kernel_size=(3, 3),
        conv_general_dilated=lambda *a, **k: lax.conv_general_dilated(*a, **k),
      ),
      (B, H, W, 4),
    ),
  }
  for name, (kw, shape) in cases.items():
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    want = nnx.Conv(**kw, rngs=nnx.Rngs(0))(x)
    np.testing.assert_array_equal(np.asarray(Conv(**kw, rngs=nnx.Rngs(0))(x)), np.asarray(want))
    with pytest.raises(ValueError, match=name):
      Conv(**kw, impl="slices", rngs=nnx.Rngs(0))(x)
  # impl='xla' is nnx.Conv's own call.
  x = jnp.asarray(rng.normal(size=(B, H, W, C)), jnp.float32)
  kw = dict(in_features=C, out_features=O, kernel_size=(3, 3), strides=2)
  np.testing.assert_array_equal(
    np.asarray(Conv(**kw, impl="xla", rngs=nnx.Rngs(0))(x)),
    np.asarray(nnx.Conv(**kw, rngs=nnx.Rngs(0))(x)),
  )
  # Reduced precision follows nnx.Conv's dtype promotion.
  kw = dict(in_features=C, out_features=O, kernel_size=(3, 3), dtype=jnp.bfloat16)
  a = Conv(**kw, rngs=nnx.Rngs(0))(x)
  b = nnx.Conv(**kw, rngs=nnx.Rngs(0))(x)
  assert a.dtype == b.dtype == jnp.bfloat16
  _close(a.astype(jnp.float32), b.astype(jnp.float32), rtol=2e-2, atol=2e-2)


class _Net(nnx.Module):
  """conv -> relu -> dense, with the conv class as a parameter."""

  def __init__(self, conv_cls, rngs: nnx.Rngs):
    self.conv = conv_cls(C, O, (3, 3), strides=2, rngs=rngs)
    self.dense = nnx.Linear(4 * 3 * O, 2, rngs=rngs)

  def __call__(self, x):
    h = jax.nn.relu(self.conv(x))
    return self.dense(h.reshape(h.shape[0], -1))


@pytest.mark.parametrize("shared_batch", [True, False], ids=["shared_batch", "own_batch"])
def test_nnx_model_vmapped_over_members(shared_batch):
  keys = jax.random.split(jax.random.key(0), P)
  rng = np.random.default_rng(4)
  xs = jnp.asarray(rng.normal(size=(P, B, H, W, C)), jnp.float32)
  ys = jnp.asarray(rng.normal(size=(P, B, 2)), jnp.float32)
  x_axis = None if shared_batch else 0
  x, y = (xs[0], ys[0]) if shared_batch else (xs, ys)

  def members(conv_cls):
    """Each member's params (stacked) and the loss's value and gradients."""
    graphdef = nnx.split(_Net(conv_cls, nnx.Rngs(0)))[0]
    params = jax.vmap(lambda k: nnx.split(_Net(conv_cls, nnx.Rngs(k)))[1])(keys)

    def loss(p, x, y):
      return jnp.mean((nnx.merge(graphdef, p)(x) - y) ** 2)

    step = jax.vmap(jax.value_and_grad(loss), in_axes=(0, x_axis, x_axis))
    return params, jax.jit(step)(params, x, y)

  p_ours, got = members(Conv)
  p_stock, want = members(nnx.Conv)
  for u, v in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_stock), strict=True):
    np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
  _close(got, want)


def test_documented_autodiff_limits():
  x, k = _data()
  x, k = x[0], k[0] * 0.1
  f = lambda impl: lambda k: jnp.sum(jnp.sin(conv(x, k, impl=impl)))
  with pytest.raises(TypeError, match="forward-mode"):
    jax.jvp(f("auto"), (k,), (k,))
  with pytest.raises(ValueError, match="Linearization failed"):
    jax.grad(lambda k: jnp.sum(jax.grad(f("auto"))(k) ** 2))(k)
  # impl='xla' is plain lax: second derivatives and forward mode work.
  second = lambda fn: jax.grad(lambda k: jnp.sum(jax.grad(fn)(k) ** 2))(k)
  _close(second(f("xla")), second(lambda k: jnp.sum(jnp.sin(_ref(x, k)))))
  jax.jvp(f("xla"), (k,), (k,))

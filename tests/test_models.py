"""Tests of the model families and the vmap-friendly layers they are built from.

XLA:CPU compilation dominates the cost of these tests, so every forward pass
goes through a few shared ``jax.jit`` functions (cached across tests by the
model's graphdef and input shape) compiled with the backend optimisation level
at 0, which compiles about 3x faster and computes the same values.
"""

from __future__ import annotations

import dataclasses
import functools

from flax import nnx
import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpjax import hparams as hp_lib
from hpjax import models
from hpjax import nn
from hpjax.hparams import HParams
from hpjax.hparams import TracedChoice
from hpjax.models import ACTIVATIONS
from hpjax.models import builtin
from hpjax.models import FAMILIES

NAMES = ("relu", "tanh", "sigmoid")
IMAGE_FAMILIES = ("vgg", "resnet", "inception")
IMAGE_SHAPES = ((8, 8, 1), (28, 28, 1), (32, 32, 3))
BATCH = 2

_FAST = {"xla_backend_optimization_level": 0}
fast_jit = functools.partial(jax.jit, compiler_options=_FAST)


def _rngs(seed):
  # 'rbg' keys: eager initialisation compiles one small program per parameter
  # shape, and rbg's are several times cheaper to compile than threefry's.
  return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def _model(family, input_shape, *, seed=0, **kw):
  return builtin(
    family=family,
    depth=2,
    width=4,
    dense=8,
    **kw,
    input_shape=input_shape,
    num_outputs=10,
    rngs=_rngs(seed),
  )


def _hp(act, rate=0.0, *, train=False, key=None):
  """What the population hands a model: the member's traced hyperparameters."""
  return HParams({"activation": TracedChoice(act, NAMES), "dropout": rate}, train=train, key=key)


def _mode(model, train):
  # The population runs the graph in train or eval mode (BatchNorm, dropout).
  if train:
    model.train()
  else:
    model.eval()
  return model


def _inputs(shape, batch=BATCH, seed=0):
  return jax.random.normal(jax.random.key(seed), (batch,) + tuple(shape))


@functools.partial(fast_jit, static_argnames=("graphdef", "train"))
def _apply(graphdef, params, stats, x, act, rate=0.0, key=None, *, train=False):
  """One member's forward pass; returns the output and the new BatchStats."""
  model = _mode(nnx.merge(graphdef, params, stats), train)
  y = model(x, _hp(act, rate, train=train, key=key))
  return y, nnx.state(model, nnx.BatchStat)


def _run(model, x, act=0, rate=0.0, key=None, *, train=False):
  graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  return _apply(graphdef, params, stats, x, act, rate, key, train=train)


def _copy(tree):
  return jax.tree.map(np.array, tree)


# --------------------------------------------------------------------------- models


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_output_shape_and_finite(family, shape):
  model = _model(family, shape)
  y, _ = _run(model, _inputs(shape))
  assert y.shape == (BATCH, 10)
  assert np.all(np.isfinite(y))


def test_mlp_vector_input():
  model = _model("mlp", (10,))
  y, _ = _run(model, _inputs((10,), batch=3), 1)
  assert y.shape == (3, 10)
  assert np.all(np.isfinite(y))


@pytest.mark.parametrize("family", IMAGE_FAMILIES)
def test_image_family_rejects_vector_input(family):
  with pytest.raises(ValueError, match=r"family.*image inputs"):
    _model(family, (10,))


def test_bad_family_is_rejected():
  with pytest.raises(ValueError, match=r"family.*'bogus'.*vgg, resnet, inception, mlp"):
    _model("bogus", (8, 8, 1))


def test_unknown_structural_name_is_one_clear_error():
  with pytest.raises(ValueError, match=r"^widht: not a structural .*allowed: family, depth, width"):
    _model("vgg", (8, 8, 1), widht=4)
  with pytest.raises(ValueError, match=r"^conv_impl: unknown value 'fast'; allowed: auto, slices"):
    _model("vgg", (8, 8, 1), conv_impl="fast")


def test_hparam_table_takes_the_arch_fields_and_defaults():
  # One home: the table's structural model entries are Arch's fields (plus
  # ``family``), with Arch's defaults.
  assert set(hp_lib.MODEL_STRUCTURAL) == {"family", *models.ARCH_FIELDS}
  for f in dataclasses.fields(models.Arch):
    assert hp_lib.BUILTIN[f.name].default == f.default, f.name
  assert hp_lib.BUILTIN["conv_impl"].choices == models.CONV_IMPLS
  assert hp_lib.BUILTIN["compute_dtype"].choices == models.COMPUTE_DTYPES


@pytest.mark.parametrize("family", FAMILIES)
def test_family_built_from_its_arch_directly(family):
  # A family is an ordinary module: its class built from an Arch equals builtin's model.
  cls, images = FAMILIES[family]
  shape = (8, 8, 1) if images else (5,)
  arch = models.Arch(depth=2, width=4, dense=8, conv_impl="slices")
  direct = cls(arch, input_shape=shape, num_outputs=10, rngs=_rngs(0))
  via = _model(family, shape, conv_impl="slices")
  a, b = nnx.state(direct, nnx.Param), nnx.state(via, nnx.Param)
  assert jax.tree.all(jax.tree.map(lambda u, v: bool((u == v).all()), a, b))


@pytest.mark.parametrize("family", ("resnet", "inception"))
def test_deep_models_on_small_inputs(family):
  # More stages/blocks than the spatial size can halve: strided SAME convs stop
  # at 1x1 (7x5 -> 4x3 -> 2x2 -> 1x1), Inception skips pools that would go
  # below 2 (7x5 -> 3x2, then none). Shapes only (tracing).
  shape = (7, 5, 2)
  model = nnx.eval_shape(
    lambda: builtin(
      family=family,
      depth=4,
      width=2,
      convs_per_stage=2,
      batch_norm=True,
      input_shape=shape,
      num_outputs=3,
      rngs=nnx.Rngs(0),
    )
  )
  graphdef, state = nnx.split(model)

  def forward(state, x):
    return _mode(nnx.merge(graphdef, state), True)(x, _hp(2, train=True))

  y = jax.eval_shape(forward, state, _inputs(shape))
  assert y.shape == (BATCH, 3)


def test_resnet_structure():
  model = _model("resnet", (8, 8, 1), convs_per_stage=2)
  blocks = list(model.blocks)
  assert len(blocks) == 4
  # Only the first block of the second stage changes shape: stride 2 + projection.
  assert [b.conv1.strides for b in blocks] == [(1, 1), (1, 1), (2, 2), (1, 1)]
  assert [b.proj is not None for b in blocks] == [False, False, True, False]
  assert blocks[2].proj.kernel.shape == (1, 1, 4, 8)
  assert model.out.in_features == 8


def test_inception_structure():
  model = _model("inception", (8, 8, 1))
  blocks = list(model.blocks)
  assert [b.out_features for b in blocks] == [16, 32]
  assert blocks[1].b1.conv.kernel.shape == (1, 1, 16, 8)
  assert blocks[1].b5.conv.kernel.shape == (5, 5, 4, 8)
  assert model.pool_after == (True, False)
  assert model.out.in_features == 32
  deep = nnx.eval_shape(
    lambda: builtin(
      family="inception", depth=4, width=2, input_shape=(8, 8, 1), num_outputs=10, rngs=nnx.Rngs(0)
    )
  )
  assert deep.pool_after == (True, True, False, False)  # 8 -> 4 -> 2, then no pool


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_stats_update_only_in_train_mode(family):
  model = _model(family, (8, 8, 1), batch_norm=True)
  x = _inputs((8, 8, 1)) + 1.0
  before = _copy(nnx.state(model, nnx.BatchStat))
  assert jax.tree.leaves(before), "batch_norm=True should create BatchStat state"

  _, after_eval = _run(model, x, train=False)
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after_eval)):
    np.testing.assert_array_equal(a, b)

  _, after_train = _run(model, x, train=True)
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after_train)):
    assert not np.allclose(a, b)


@pytest.mark.parametrize("family", FAMILIES)
def test_no_batch_stats_without_batch_norm(family):
  model = _model(family, (8, 8, 1))
  assert not jax.tree.leaves(nnx.state(model, nnx.BatchStat))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("batch_norm,train", ((False, False), (True, True)))
def test_vmap_population_matches_members(family, batch_norm, train):
  shape = (8, 8, 1)
  x = _inputs(shape)
  members = [_model(family, shape, seed=i, batch_norm=batch_norm) for i in range(3)]
  acts = jnp.array([0, 1, 2])  # a different activation per member
  expected = [_run(m, x, i, train=train)[0] for i, m in enumerate(members)]

  splits = [nnx.split(m, nnx.Param, nnx.BatchStat) for m in members]
  graphdef = splits[0][0]
  assert all(s[0] == graphdef for s in splits)
  stack = lambda *a: jnp.stack(a)
  params = jax.tree.map(stack, *[s[1] for s in splits])
  stats = jax.tree.map(stack, *[s[2] for s in splits])

  @fast_jit
  @jax.vmap
  def population(p, s, act):
    model = _mode(nnx.merge(graphdef, p, s), train)
    return model(x, _hp(act, train=train))

  got = population(params, stats, acts)
  assert got.shape == (3, BATCH, 10)
  for i in range(3):
    np.testing.assert_allclose(got[i], expected[i], rtol=1e-5, atol=1e-5)
  assert not np.allclose(got[0], got[1])


@pytest.mark.parametrize("family", FAMILIES)
def test_activation_index_changes_output(family):
  model = _model(family, (8, 8, 1))
  x = _inputs((8, 8, 1))
  outs = [_run(model, x, i)[0] for i in range(len(NAMES))]
  for i in range(len(outs)):
    for j in range(i + 1, len(outs)):
      assert not np.allclose(outs[i], outs[j])


@pytest.mark.parametrize("family", ("resnet", "inception"))
def test_conv_impls_agree(family):
  shape = (8, 8, 3)
  x = _inputs(shape)
  ys = [_run(_model(family, shape, conv_impl=impl), x, 1)[0] for impl in ("auto", "slices", "xla")]
  for y in ys[1:]:
    np.testing.assert_allclose(y, ys[0], rtol=1e-4, atol=1e-5)


@functools.partial(fast_jit, static_argnames=("graphdef",))
def _loss_and_grad(graphdef, params, stats, x, labels):
  """One member's training loss (float32 cross-entropy) and its parameter gradients."""

  model = _mode(nnx.merge(graphdef, params, stats), True)  # BatchNorm's batch statistics

  def loss(model):
    logits = model(x, _hp(1, train=True, key=jax.random.key(0)))
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1)), logits

  grad_fn = nnx.value_and_grad(loss, argnums=nnx.DiffState(0, nnx.Param), has_aux=True)
  (value, logits), grads = grad_fn(model)
  return value, logits, grads


@pytest.mark.parametrize("family", FAMILIES)
def test_bfloat16_compute_keeps_float32_parameters_logits_and_gradients(family):
  # compute_dtype='bfloat16': the same float32 parameters (same draws), float32
  # logits and gradients, values near float32's but computed in bfloat16.
  shape = (8, 8, 3) if FAMILIES[family][1] else (10,)
  x, labels = _inputs(shape, batch=4), jnp.array([0, 3, 5, 9])
  runs = {}
  for dtype in models.COMPUTE_DTYPES:
    model = _model(family, shape, compute_dtype=dtype, batch_norm=True)
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype("float32")}
    runs[dtype] = (params, _loss_and_grad(graphdef, params, stats, x, labels))
  (p32, (loss32, logits32, g32)), (p16, (loss16, logits16, g16)) = runs.values()
  assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), p32, p16))
  assert logits16.dtype == loss16.dtype == jnp.float32
  assert {leaf.dtype for leaf in jax.tree.leaves(g16)} == {jnp.dtype("float32")}
  assert not np.array_equal(logits16, logits32)  # bfloat16 really computed
  np.testing.assert_allclose(logits16, logits32, atol=0.1 * float(jnp.abs(logits32).max()))
  np.testing.assert_allclose(loss16, loss32, rtol=0.05)
  flat32, flat16 = (jnp.concatenate([g.ravel() for g in jax.tree.leaves(g)]) for g in (g32, g16))
  cosine = float(flat32 @ flat16 / (jnp.linalg.norm(flat32) * jnp.linalg.norm(flat16)))
  assert cosine > 0.99, cosine


def test_unknown_compute_dtype_is_one_clear_error():
  with pytest.raises(
    ValueError, match=r"^compute_dtype: unknown value 'float16'; allowed: float32, bfloat16$"
  ):
    _model("vgg", (8, 8, 1), compute_dtype="float16")


@pytest.mark.parametrize("family", FAMILIES)
def test_dropout_in_model(family):
  model = _model(family, (8, 8, 1))
  x = _inputs((8, 8, 1))
  key = jax.random.key(1)
  base, _ = _run(model, x, 0, 0.5, train=False)
  # Rate 0 in train mode leaves the output unchanged; rate 0.5 does not.
  same, _ = _run(model, x, 0, 0.0, key, train=True)
  np.testing.assert_allclose(same, base, rtol=1e-6, atol=1e-6)
  dropped, _ = _run(model, x, 0, 0.5, key, train=True)
  assert not np.allclose(dropped, base)


# --------------------------------------------------------------------------- layers


ALL_NAMES = tuple(ACTIVATIONS)


def test_activation_matches_table_python_index():
  x = jnp.linspace(-3.0, 3.0, 31)

  @fast_jit
  def all_activations(x):
    ours = [nn.activation(x, i, ALL_NAMES) for i in range(len(ALL_NAMES))]
    single = [nn.activation(x, 0, (n,)) for n in ALL_NAMES]  # one candidate
    table = [ACTIVATIONS[n](x) for n in ALL_NAMES]
    return ours, single, table

  ours, single, table = all_activations(x)
  for i in range(len(ALL_NAMES)):
    np.testing.assert_allclose(ours[i], table[i], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(single[i], table[i], rtol=1e-5, atol=1e-6)
  # Eagerly, with a plain Python int.
  np.testing.assert_allclose(
    nn.activation(x, 2, ALL_NAMES), ACTIVATIONS[ALL_NAMES[2]](x), rtol=1e-5, atol=1e-6
  )


def test_activation_matches_table_under_vmap():
  x = jnp.linspace(-3.0, 3.0, 31)
  idx = jnp.arange(len(ALL_NAMES))
  got = fast_jit(jax.vmap(lambda i: nn.activation(x, i, ALL_NAMES)))(idx)
  for i, name in enumerate(ALL_NAMES):
    np.testing.assert_allclose(got[i], ACTIVATIONS[name](x), rtol=1e-5, atol=1e-6)
  # Batched x too (one row per member).
  xs = jnp.stack([x * (i + 1) for i in range(len(ALL_NAMES))])
  got = fast_jit(jax.vmap(lambda xi, i: nn.activation(xi, i, ALL_NAMES)))(xs, idx)
  for i, name in enumerate(ALL_NAMES):
    np.testing.assert_allclose(got[i], ACTIVATIONS[name](xs[i]), rtol=1e-5, atol=1e-6)


def _value_and_grad_of_squares(pool):
  return fast_jit(lambda x: (pool(x), jax.grad(lambda x: jnp.sum(pool(x) ** 2))(x)))


@pytest.mark.parametrize("hw", ((8, 8), (7, 9)))
def test_max_pool_matches_flax(hw):
  x = _inputs((*hw, 3), seed=4)  # random normals: no ties, so gradients are unique
  ours = _value_and_grad_of_squares(lambda x: nn.max_pool(x, 2))(x)
  ref = _value_and_grad_of_squares(
    lambda x: flax.linen.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
  )(x)
  np.testing.assert_array_equal(ours[0], ref[0])
  np.testing.assert_array_equal(ours[0], nnx.max_pool(x, (2, 2), (2, 2), "VALID"))
  np.testing.assert_allclose(ours[1], ref[1], rtol=1e-6, atol=1e-6)


def _first_max_pool(x, window=2):
  """Reference max pool, 'VALID': ``jax.grad`` sends each window's gradient to
  its first maximum in row-major order (``argmax`` takes the first)."""
  b, h, w, c = x.shape
  ho, wo = h // window, w // window
  win = x[:, : ho * window, : wo * window, :].reshape(b, ho, window, wo, window, c)
  win = win.transpose(0, 1, 3, 5, 2, 4).reshape(b, ho, wo, c, window * window)
  first = jnp.argmax(win, axis=-1)[..., None]
  return jnp.take_along_axis(win, first, axis=-1)[..., 0]


def _tied_windows(x, window=2):
  """Fraction of the 'VALID' windows whose maximum occurs more than once."""
  x = np.asarray(x)
  b, h, w, c = x.shape
  ho, wo = h // window, w // window
  win = x[:, : ho * window, : wo * window, :].reshape(b, ho, window, wo, window, c)
  return np.mean((win == win.max(axis=(2, 4), keepdims=True)).sum(axis=(2, 4)) > 1)


def _weighted_sum_grad(pool):
  # Random weights per output: each window passes on a different gradient.
  def loss(x):
    y = pool(x)
    return jnp.sum(y * jax.random.normal(jax.random.key(9), y.shape))

  return fast_jit(jax.grad(loss))


def _tied_inputs(digits):
  """uint8-valued inputs with flat regions: digits images (0 background) and
  a crafted array of plateaus, both ``[4, 8, 8, 1]`` floats."""
  images = np.asarray(digits.x_train[:4], np.float32)
  crafted = np.zeros((4, 8, 8, 1), np.float32)
  crafted[:, 2:6, 1:7] = 128.0  # a plateau, windows straddling its edge
  crafted[:, 3, 3] = 255.0  # one peak inside it
  crafted[1, 0:2, 4:6] = 7.0  # a flat window of its own
  return images, crafted


def test_max_pool_ties_gradient_goes_to_the_first_maximum(digits):
  # uint8 images have flat backgrounds: many windows tie. Each window's
  # gradient must reach one input (the first maximum, as in PyTorch and
  # lax.reduce_window), not every tied one.
  for x in _tied_inputs(digits):
    assert _tied_windows(x) > 0.2
    ours = _weighted_sum_grad(lambda x: nn.max_pool(x, 2))(x)
    np.testing.assert_array_equal(nn.max_pool(x, 2), _first_max_pool(x))
    np.testing.assert_allclose(ours, _weighted_sum_grad(_first_max_pool)(x), rtol=1e-6, atol=1e-6)
    flax_grad = _weighted_sum_grad(
      lambda x: flax.linen.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
    )(x)
    np.testing.assert_allclose(ours, flax_grad, rtol=1e-6, atol=1e-6)
    # One nonzero per window: the gradient's total is the pooled gradient's.
    assert np.count_nonzero(ours) == np.prod(nn.max_pool(x, 2).shape)


def test_max_pool_ties_under_vmap(digits):
  images, crafted = _tied_inputs(digits)
  members = jnp.stack([images, crafted, images[::-1] * 0.5 + 3.0])  # 3 members
  ours = jax.vmap(_weighted_sum_grad(lambda x: nn.max_pool(x, 2)))(members)
  ref = _weighted_sum_grad(_first_max_pool)
  for i in range(members.shape[0]):
    np.testing.assert_allclose(ours[i], ref(members[i]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("act", range(len(NAMES)))
def test_max_pool_ties_first_conv_kernel_gradient(digits, monkeypatch, act):
  # End to end on normalized digits (the engine's input): the first conv's
  # kernel gradient with max_pool equals the one with the reference pool.
  # Giving every tied maximum the gradient made it differ by a relative
  # error of 0.07-0.16 (bench CNN, 256 images at 8x8; 0.56-1.85 at 28x28).
  model = _model("vgg", (8, 8, 1))
  graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  x = (np.asarray(digits.x_train[:16], np.float32) - digits.mean) / digits.std
  y = np.asarray(digits.y_train[:16])

  def kernel_grad():
    def loss(p):
      out = _mode(nnx.merge(graphdef, p, stats), False)(x, _hp(act))
      return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(out), y[:, None], axis=1))

    # A fresh jit: traced with whichever max_pool the model finds now.
    return fast_jit(jax.grad(loss))(params)["convs"][0]["kernel"][...]

  ours = kernel_grad()
  monkeypatch.setattr(nn, "max_pool", _first_max_pool)
  ref = kernel_grad()
  assert np.linalg.norm(ref) > 0
  np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())


def test_max_pool_nan_propagates_and_takes_the_gradient():
  x = np.zeros((1, 4, 4, 1), np.float32)
  x[0, 1, 0, 0] = x[0, 1, 1, 0] = np.nan  # window (0, 0): its first NaN wins
  y, vjp = jax.vjp(lambda x: nn.max_pool(x, 2), x)
  np.testing.assert_array_equal(y, nnx.max_pool(x, (2, 2), (2, 2), "VALID"))
  assert np.isnan(y[0, 0, 0, 0]) and np.isnan(y).sum() == 1
  (grad,) = vjp(jnp.arange(1.0, 5.0).reshape(1, 2, 2, 1))
  np.testing.assert_array_equal(
    grad[0, :, :, 0], [[0, 0, 2, 0], [1, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]]
  )


def test_max_pool_same_ties_match_reduce_window():
  # jnp.maximum splits a tie 0.5 / 0.5; max_pool_same gives each window's
  # gradient to its first maximum, as lax.reduce_window does.
  np.testing.assert_array_equal(jax.grad(jnp.maximum, argnums=(0, 1))(1.0, 1.0), (0.5, 0.5))
  x = np.zeros((2, 6, 7, 2), np.float32)
  x[:, 1:4, 2:6] = 9.0
  x[0, 4, 0] = 3.0
  ours = _weighted_sum_grad(lambda x: nn.max_pool_same(x, 3))(x)
  ref = _weighted_sum_grad(
    lambda x: flax.linen.max_pool(x, (3, 3), strides=(1, 1), padding="SAME")
  )(x)
  np.testing.assert_array_equal(
    nn.max_pool_same(x, 3), flax.linen.max_pool(x, (3, 3), strides=(1, 1), padding="SAME")
  )
  np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)
  x[1, 2, 3, 1] = np.nan  # a NaN propagates to its windows, as with jnp.maximum
  out = np.asarray(nn.max_pool_same(x, 3))
  assert np.isnan(out[1, 1:4, 2:5, 1]).all() and np.isnan(out).sum() == 9


@pytest.mark.parametrize("hw", ((8, 8), (5, 7), (1, 3)))
def test_max_pool_same_matches_flax(hw):
  x = _inputs((*hw, 3), seed=6)
  ours = _value_and_grad_of_squares(lambda x: nn.max_pool_same(x, 3))(x)
  ref = _value_and_grad_of_squares(
    lambda x: flax.linen.max_pool(x, (3, 3), strides=(1, 1), padding="SAME")
  )(x)
  np.testing.assert_array_equal(ours[0], ref[0])
  np.testing.assert_allclose(ours[1], ref[1], rtol=1e-6, atol=1e-6)


def test_dropout():
  x = jnp.ones((200, 100))
  key = jax.random.key(0)
  train = fast_jit(lambda x, rate, key: nn.dropout(x, rate, key, True))
  np.testing.assert_array_equal(train(x, 0.0, key), x)
  np.testing.assert_array_equal(nn.dropout(x, 0.5, key, False), x)
  np.testing.assert_array_equal(nn.dropout(x, 0.5, None, False), x)
  y = train(x, 0.5, key)
  assert abs(float(jnp.mean(y == 0)) - 0.5) < 0.02
  assert abs(float(jnp.mean(y)) - 1.0) < 0.04  # inverted dropout keeps the mean
  np.testing.assert_allclose(y[y != 0], 2.0)


def test_dropout_per_member_rate_under_vmap():
  x = jnp.ones((100, 100))
  rates = jnp.array([0.0, 0.25, 0.5])
  keys = jax.random.split(jax.random.key(1), 3)
  y = fast_jit(jax.vmap(lambda r, k: nn.dropout(x, r, k, True)))(rates, keys)
  np.testing.assert_array_equal(y[0], x)
  for i, r in enumerate([0.0, 0.25, 0.5]):
    assert abs(float(jnp.mean(y[i] == 0)) - r) < 0.03
    assert abs(float(jnp.mean(y[i])) - 1.0) < 0.05


def test_hparams_keys():
  hp = _hp(0, 0.1, train=True, key=jax.random.key(0))
  k1, k2 = hp.next_key(), hp.next_key()
  assert not np.array_equal(jax.random.key_data(k1), jax.random.key_data(k2))
  assert _hp(0, 0.1, train=False, key=jax.random.key(0)).next_key() is None
  assert _hp(0, 0.1, train=True).next_key() is None


def test_compute_dtype_is_a_config_model_field_checked_in_one_line():
  # The launcher's config.model takes compute_dtype like any built-in
  # structural field; a bad value is one line naming the field and the values.
  from hpjax import config as config_lib  # pylint: disable=g-import-not-at-top

  cfg = config_lib.defaults()
  assert cfg["model"]["compute_dtype"] == "float32"
  cfg["model"]["compute_dtype"] = "bfloat16"
  assert config_lib.validate(cfg)["model"]["compute_dtype"] == "bfloat16"
  cfg["model"]["compute_dtype"] = "float16"
  with pytest.raises(ValueError, match=r"config.model.compute_dtype.*float16.*float32, bfloat16"):
    config_lib.validate(cfg)

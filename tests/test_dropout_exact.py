"""hpjax.nn.dropout against a from-scratch inverted dropout.

Reference: keep each unit where a float32 uniform draw is below ``keep = 1 -
rate`` and scale it by ``1 / keep`` (what ``jax.random.bernoulli`` with a
float32 probability and ``nnx.Dropout`` do). In float32 the layer must be
exactly that; in bfloat16 the same mask (drawn in float32), the scale
computed in float32 and the result rounded once to bfloat16; any rate the
hyperparameter table allows is applied as given.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpjax import hparams as hp_lib
from hpjax.nn import dropout

N = 1_000_000
KEY = jax.random.key(0)


def _reference(x, rate, key):
  """Inverted dropout from scratch, in float32 (numpy for the arithmetic)."""
  keep = np.float32(1) - np.float32(rate)
  u = np.asarray(jax.random.uniform(key, x.shape, jnp.float32))
  mask = u < keep
  xs = np.asarray(x, np.float32)
  return np.where(mask, xs / keep, np.float32(0)), mask, keep


def _old(x, rate, key, train):
  """The layer before this fix: keep in x's dtype, the rate capped at 0.95."""
  del train
  keep = 1.0 - jnp.clip(jnp.asarray(rate, x.dtype), 0.0, 0.95)
  return jnp.where(jax.random.bernoulli(key, keep, x.shape), x / keep, jnp.zeros_like(x))


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8, 0.95])
def test_float32_is_unchanged_bit_for_bit_and_is_the_reference(rate):
  x = jax.random.normal(jax.random.key(1), (4096,), jnp.float32)
  r = jnp.float32(rate)
  got = jax.jit(dropout, static_argnums=3)(x, r, KEY, True)
  # Bit for bit what the layer computed before, compiled and op by op.
  np.testing.assert_array_equal(got, jax.jit(_old, static_argnums=3)(x, r, KEY, True))
  np.testing.assert_array_equal(dropout(x, r, KEY, True), _old(x, r, KEY, True))
  # The reference's mask exactly; its quotient up to one rounding (XLA may
  # compute x / keep as x * (1 / keep)).
  want, mask, _ = _reference(x, rate, KEY)
  np.testing.assert_array_equal(np.asarray(got) != 0, mask)
  np.testing.assert_allclose(np.asarray(got), want, rtol=2.5e-7, atol=0)


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.8, 0.95])
def test_bfloat16_keeps_the_float32_mask_and_is_unbiased(rate):
  x = jnp.ones((N,), jnp.bfloat16)
  y = jax.jit(dropout, static_argnums=3)(x, jnp.float32(rate), KEY, True)
  assert y.dtype == jnp.bfloat16
  want, mask, keep = _reference(x, rate, KEY)
  # The very mask float32 draws, and each kept unit the float32 scale rounded once.
  np.testing.assert_array_equal(np.asarray(y) != 0, mask)
  np.testing.assert_array_equal(
    np.asarray(y, np.float32), want.astype(jnp.bfloat16).astype(np.float32)
  )
  kept = float(np.mean(mask))
  sigma = np.sqrt(keep * (1 - keep) / N)
  assert abs(kept - keep) < 5 * sigma, (kept, keep)  # bf16 draws kept 5.47% at rate 0.95
  # E[y] = keep * bf16(1 / keep): 1 up to sampling and bfloat16's one rounding of the
  # scale (half an ulp, 2**-9); the bf16 draw was off by 8% at rate 0.95.
  mean = float(np.mean(np.asarray(y, np.float64)))
  scale = float(want.max())
  assert abs(mean - keep * scale) < 5 * sigma * scale
  assert abs(mean - 1.0) < 2**-9 + 5 * sigma * scale


@pytest.mark.parametrize("rate", [0.97, 0.99, 0.999])
def test_a_rate_the_table_allows_is_applied_as_given(rate):
  assert hp_lib.BUILTIN["dropout"].check(rate) == rate
  x = jnp.ones((N,), jnp.float32)
  y = np.asarray(jax.jit(dropout, static_argnums=3)(x, jnp.float32(rate), KEY, True))
  want, mask, keep = _reference(x, rate, KEY)
  np.testing.assert_array_equal(y != 0, mask)
  np.testing.assert_allclose(y, want, rtol=2.5e-7, atol=0)
  assert abs(float(np.mean(mask)) - keep) < 5 * np.sqrt(keep * (1 - keep) / N)
  assert y.max() == pytest.approx(1 / (1 - rate), rel=1e-4)  # was capped at 20 (rate 0.95)


def test_the_tables_range_ends_below_one_and_one_drops_everything():
  with pytest.raises(ValueError, match=r"^dropout: must be in \[0, 1\), got 1.0$"):
    hp_lib.BUILTIN["dropout"].check(1.0)
  # The largest float32 below 1 is a legal stored rate: finite, scaled by 2**24.
  top = float(np.nextafter(np.float32(1), np.float32(0)))
  y = dropout(jnp.ones((N,)), jnp.float32(top), KEY, True)
  assert np.isfinite(np.asarray(y)).all()
  # A traced 1 (not a legal value, but a traced value cannot raise) is that
  # largest rate below 1: finite values and gradients, not 0 / 0.
  x = jnp.arange(1.0, 5.0)
  y, grad = jax.value_and_grad(lambda x: jnp.sum(dropout(x, jnp.float32(1.0), KEY, True)))(x)
  assert float(y) == 0.0  # 4 units, each kept with probability 2**-24
  np.testing.assert_array_equal(np.asarray(grad), np.zeros(4))

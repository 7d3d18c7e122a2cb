"""Dropout whose rate is a traced, per-member hyperparameter.

Stock ``nnx.Dropout`` fixes its rate at construction (a structural value,
fine too). :func:`dropout` takes the member's rate at the call
(``hp["dropout"]``) and a key from ``hp.next_key()``, so members with
different rates share one program and PBT may change the rate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def dropout(x: jax.Array, rate: jax.Array, key: jax.Array | None, train: bool) -> jax.Array:
  """Inverted dropout with a traced, per-member ``rate``.

  The mask is drawn and the scale computed in float32 (float64 for a float64
  ``x``) whatever ``x``'s dtype, then the result is cast to it: in bfloat16 a
  keep probability and a uniform draw have 8 bits (128 levels below 1), which
  kept 5.47% of the units at a rate of 0.95 instead of 5% and scaled them by
  the rounded ``1 / keep``, biasing E[y] by 8%.

  Args:
    x: input.
    rate: drop probability (traced scalar), applied as given: the
      hyperparameter table allows ``[0, 1)``, so a member reporting 0.99
      drops 99% (an earlier cap at 0.95 changed such rates silently). A
      traced value outside ``[0, 1)`` cannot raise; it is clipped to the
      nearest rate inside (1 and above: the largest float below 1). A Python
      number 0 returns ``x`` without drawing a mask (the same values as a
      traced 0, in a smaller program).
    key: PRNG key; may be None when ``train`` is False.
    train: apply dropout only when True.

  Returns:
    ``x`` with dropped units zeroed and kept ones scaled by ``1 / (1 - rate)``.
  """
  if not train or key is None or (isinstance(rate, (int, float)) and rate == 0):
    return x
  wide = jnp.promote_types(x.dtype, jnp.float32)
  rate = jnp.asarray(rate, wide)
  # The largest rate below 1 bounds a traced value the table could not check:
  # keep stays > 0, so x / keep (and its gradient) stays finite.
  keep = 1.0 - jnp.clip(rate, 0.0, jnp.nextafter(jnp.ones((), wide), 0))
  # bernoulli draws its uniform in keep's dtype: float32 at least.
  mask = jax.random.bernoulli(key, keep, x.shape)
  # x / keep as before in float32, bit for bit (XLA may fold it into a multiply
  # by 1 / keep; a different denominator expression would change the bits).
  scaled = x.astype(wide) / keep
  return jnp.where(mask, scaled.astype(x.dtype), jnp.zeros_like(x))

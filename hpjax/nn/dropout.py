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

  Args:
    x: input.
    rate: drop probability (traced scalar, clipped to [0, 0.95]); 0 keeps all.
      A Python number 0 returns ``x`` without drawing a mask (the same
      values as a traced 0, in a smaller program).
    key: PRNG key; may be None when ``train`` is False.
    train: apply dropout only when True.

  Returns:
    ``x`` with dropped units zeroed and kept ones scaled by ``1 / (1 - rate)``.
  """
  if not train or key is None or (isinstance(rate, (int, float)) and rate == 0):
    return x
  keep = 1.0 - jnp.clip(jnp.asarray(rate, x.dtype), 0.0, 0.95)
  mask = jax.random.bernoulli(key, keep, x.shape)
  return jnp.where(mask, x / keep, jnp.zeros_like(x))

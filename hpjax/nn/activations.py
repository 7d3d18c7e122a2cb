"""The activation a member uses, chosen by a traced index: one program for every choice.

:func:`activation` applies the member's activation (``hp["activation"]``, a
:class:`hpjax.hparams.TracedChoice`): under ``vmap`` every candidate runs for
every member and one is kept, so the candidates that are affine forms of one
``tanh`` (tanh, sigmoid, swish, gelu) share a single ``tanh`` evaluation
(choosing the activation per member costs about 5% of a step). Only the
search space's candidates are compiled.
"""

from __future__ import annotations

from collections.abc import Sequence
import math

import jax
import jax.numpy as jnp

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

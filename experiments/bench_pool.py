r"""Max pooling's gradient rule for tied maxima, side by side in one run.

Images with flat backgrounds (digits, MNIST) give pooling windows whose
maxima tie. This script times where the gradient of such a window goes,
with ``hpjax.nn.max_pool`` traced under each rule:

* ``all``: every tied maximum receives the whole gradient (hpjax's rule
  before issue 12: a window with two tied maxima passed on twice its
  gradient); a reshape and ``max``, the backward a select on ``x == y``;
* ``split``: the tied maxima share it equally (JAX's rule for ``max``); same
  forward, the backward counts the ties;
* ``first``: the first maximum in row-major window order receives it all
  (PyTorch's rule, and ``lax.reduce_window``'s); same forward, the backward
  finds the first tie position by position;
* ``first, position kept``: the same rule, as hpjax now computes it: the
  forward compares the window positions in turn and keeps the first
  maximum's position (int8), the backward selects by it.

Two parts, each compiled and warmed up first, then the variants take turns
(alternating rounds, so that load on the shared machine hits all alike):

* ``pool``: pooling alone, vmapped over ``--population`` members, on the
  bench CNN's two pooling inputs (batch 32, 28x28x16 and 14x14x32 at
  ``--image_size=28``) computed from digits images by a random convolution
  and ReLU per member: forward + backward and forward alone, median of
  ``--rounds`` x ``--pool_reps`` calls. Also ``max_pool_same`` (3x3,
  stride 1, the Inception pool branch) before (a chain of ``jnp.maximum``
  over the 9 shifted slices) and now (separable: selects that keep the
  first maximum along rows, then along columns).
* ``train``: training epochs of the bench CNN population (mixed learning
  rates, activations relu/tanh/sigmoid and optimizers sgd/rmsprop/adam,
  batch 32), the engine's own ``train_epoch`` traced with each rule; wall
  time (member-steps/s) and process CPU time per step, each also as the
  median over rounds of its ratio to the rule before (robust to load that
  changes between rounds). ``--max_train`` shortens the epochs so that the
  rules take turns more often.

Launch::

  python -m experiments.bench_pool --image_size=28 --population=32
  python -m experiments.bench_pool --parts=train --max_train=320 --rounds=15
"""

from __future__ import annotations

import contextlib
import functools
import platform
import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

import hpjax
from hpjax import nn
from hpjax import population as pop_lib
from hpjax.nn import pooling

_POP = flags.DEFINE_integer("population", 32, "Members trained side by side.")
_SIZE = flags.DEFINE_integer("image_size", 28, "Digits are resized to this size (8 = native).")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Alternating rounds per part.")
_POOL_REPS = flags.DEFINE_integer("pool_reps", 10, "Timed pooling calls per rule and round.")
_PARTS = flags.DEFINE_list("parts", ["pool", "train"], "Parts to run: pool, train.")
_MAX_TRAIN = flags.DEFINE_integer(
  "max_train",
  None,
  "Train part: keep this many training examples (shorter epochs, so "
  "that the rules take turns more often on a noisy machine); default all.",
)

ACTS = ("relu", "tanh", "sigmoid")
OPTS = ("sgd", "rmsprop", "adam")


def _bwd_all(xr, y, g):
  # The rule before issue 12, as it was: one select on the 6-D window view.
  hit = xr == y[:, :, None, :, None, :]
  return jnp.where(hit, g[:, :, None, :, None, :], jnp.zeros((), g.dtype))


def _window_slices(xr):
  """The window positions of ``xr`` in row-major order, each ``[B, Ho, Wo, C]``."""
  _, _, wh, _, ww, _ = xr.shape
  return [[xr[:, :, i, :, j, :] for j in range(ww)] for i in range(wh)]


def _stack(rows):
  """Inverse of :func:`_window_slices`."""
  return jnp.stack([jnp.stack(cols, axis=3) for cols in rows], axis=2)


def _bwd_split(xr, y, g):
  # Unrolled over the window positions: a count then a select per position,
  # elementwise passes that XLA fuses (a sum over the 6-D view's window axes
  # measured 2x slower).
  hits = [[s == y for s in cols] for cols in _window_slices(xr)]
  count = sum(h.astype(g.dtype) for cols in hits for h in cols)
  share = g / count
  zero = jnp.zeros((), g.dtype)
  return _stack([[jnp.where(h, share, zero) for h in cols] for cols in hits])


def _bwd_first(xr, y, g):
  # A position wins when it equals the maximum and no earlier one did.
  seen = None
  rows = []
  zero = jnp.zeros((), g.dtype)
  for cols in _window_slices(xr):
    out = []
    for s in cols:
      hit = s == y
      out.append(jnp.where(hit if seen is None else hit & ~seen, g, zero))
      seen = hit if seen is None else seen | hit
    rows.append(out)
  return _stack(rows)


def _make_rule(bwd_rule):
  """A tiled max pool ``f(x, wh, ww)`` whose gradient is ``bwd_rule``."""

  @functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
  def pool(x, wh, ww):
    b, h, w, c = x.shape
    return x.reshape(b, h // wh, wh, w // ww, ww, c).max(axis=(2, 4))

  def fwd(x, wh, ww):
    y = pool(x, wh, ww)
    return y, (x, y)

  def bwd(wh, ww, res, g):
    x, y = res
    b, h, w, c = x.shape
    xr = x.reshape(b, h // wh, wh, w // ww, ww, c)
    return (bwd_rule(xr, y, g).reshape(x.shape),)

  pool.defvjp(fwd, bwd)
  return pool


RULES = {
  "all: every tied maximum gets it (before)": _make_rule(_bwd_all),
  "split: tied maxima share it": _make_rule(_bwd_split),
  "first: the first maximum gets it": _make_rule(_bwd_first),
  # hpjax's own: the forward keeps the first maximum's position, the
  # backward selects by it.
  "first, position kept (hpjax now)": pooling._max_pool_tiled,  # pylint: disable=protected-access
}


@contextlib.contextmanager
def _rule(pool):
  """Makes ``hpjax.nn.max_pool`` use ``pool`` while functions are traced."""
  saved = pooling._max_pool_tiled  # pylint: disable=protected-access
  pooling._max_pool_tiled = pool  # pylint: disable=protected-access
  try:
    yield
  finally:
    pooling._max_pool_tiled = saved  # pylint: disable=protected-access


def _pool_inputs(data, p: int):
  """The bench CNN's two pooling inputs for ``p`` members, from digits images."""
  x = (np.asarray(data.x_train[:32], np.float32) - data.mean) / data.std
  k1, k2 = jax.random.split(jax.random.key(0))
  w1 = jax.random.normal(k1, (p, 3, 3, x.shape[-1], 16)) / 3.0
  w2 = jax.random.normal(k2, (p, 3, 3, 16, 32)) / 12.0
  a1 = jax.jit(jax.vmap(lambda w: jax.nn.relu(nn.conv(x, w, 1, "SAME", impl="slices"))))(w1)
  a2 = jax.jit(
    jax.vmap(lambda a, w: jax.nn.relu(nn.conv(nn.max_pool(a, 2), w, 1, "SAME", impl="slices")))
  )(a1, w2)
  return {"first pool": a1, "second pool": a2}


def _tied_windows(a) -> float:
  """Fraction of 2x2 windows whose maximum occurs more than once."""
  a = np.asarray(a)
  h, w, c = a.shape[-3:]
  r = a[..., : h // 2 * 2, : w // 2 * 2, :].reshape(-1, h // 2, 2, w // 2, 2, c)
  hits = (r == r.max(axis=(2, 4), keepdims=True)).sum(axis=(2, 4))
  return float(np.mean(hits > 1))


def _max_pool_same_maximum(x, window=3):
  """``max_pool_same`` before issue 12: a chain of ``jnp.maximum``."""
  b, h, w, c = x.shape
  lo, wlo = (window - 1) // 2, (window - 1) // 2
  xp = jnp.pad(
    x, ((0, 0), (lo, window - 1 - lo), (wlo, window - 1 - wlo), (0, 0)), constant_values=-jnp.inf
  )
  out = None
  for i in range(window):
    for j in range(window):
      s = xp[:, i : i + h, j : j + w, :]
      out = s if out is None else jnp.maximum(out, s)
  return out


def _median_ms(fns, *args):
  """Median milliseconds per call of each function, the functions taking turns."""
  for f in fns.values():
    jax.block_until_ready(f(*args))  # compile + warm up
  times = {name: [] for name in fns}
  for _ in range(_ROUNDS.value):
    for name, f in fns.items():
      for _ in range(_POOL_REPS.value):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        times[name].append(time.perf_counter() - t0)
  return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def _fwd_bwd(pool):
  """Vmapped over members: the pooled output and the input's gradient."""

  def f(x, g):
    y, vjp = jax.vjp(pool, x)
    return y, vjp(g)[0]

  return jax.jit(jax.vmap(f))


def _pool_part(data, p: int):
  inputs = _pool_inputs(data, p)
  rows = []
  for shape_name, a in inputs.items():
    g = jax.random.normal(
      jax.random.key(1), (a.shape[0], a.shape[1], a.shape[2] // 2, a.shape[3] // 2, a.shape[4])
    )
    both = _median_ms(
      {name: _fwd_bwd(lambda x, pool=pool: pool(x, 2, 2)) for name, pool in RULES.items()}, a, g
    )
    fwd = _median_ms(
      {name: jax.jit(jax.vmap(lambda x, pool=pool: pool(x, 2, 2))) for name, pool in RULES.items()},
      a,
    )
    shape = "x".join(str(d) for d in a.shape)
    for name in RULES:
      rows.append(
        (f"max_pool, {shape_name} {shape}", _tied_windows(a), name, both[name], fwd[name])
      )
      print(rows[-1], flush=True)
  # max_pool_same (3x3, stride 1; the Inception pool branch) on the second input.
  a = inputs["second pool"]
  g = jax.random.normal(jax.random.key(2), a.shape)
  same = {
    "jnp.maximum chain: ties split 0.5 / 0.5 per step (before)": _max_pool_same_maximum,
    "first: separable chain of selects (hpjax now)": nn.max_pool_same,
  }
  both = _median_ms({name: _fwd_bwd(f) for name, f in same.items()}, a, g)
  fwd = _median_ms({name: jax.jit(jax.vmap(f)) for name, f in same.items()}, a)
  shape = "x".join(str(d) for d in a.shape)
  for name in same:
    rows.append((f"max_pool_same 3x3, {shape}", float("nan"), name, both[name], fwd[name]))
    print(rows[-1], flush=True)
  n = _ROUNDS.value * _POOL_REPS.value
  print(f"\nms per call, median of {n}\n")
  print(
    "| pooling, input (members x batch x H x W x C) | 2x2 windows with ties | rule "
    "| forward + backward | forward |"
  )
  print("| --- | --- | --- | --- | --- |")
  for what, tied, name, ms, fwd_ms in rows:
    tied = "" if np.isnan(tied) else f"{100 * tied:.0f}%"
    print(f"| {what} | {tied} | {name} | {ms:.2f} | {fwd_ms:.2f} |")


def _train_part(data, p: int):
  lrs = np.logspace(-3.5, -1.5, p)
  members = [
    hpjax.Member(
      learning_rate=float(lrs[i]),
      activation=ACTS[i % 3],
      optimizer=OPTS[(i // 3) % 3],
      batch_size=32,
    )
    for i in range(p)
  ]
  group = hpjax.Population(members, data, seed=0, mesh=None).groups[0]
  steps = data.num_train // 32
  fns, states, kernels = {}, {}, {}
  for name, pool in RULES.items():
    with _rule(pool):
      # A fresh, uncached set of group functions, traced with this rule.
      fns[name] = pop_lib._group_functions.__wrapped__(  # pylint: disable=protected-access
        group.fns.spec, None
      )
      state = pop_lib.take(group.state, np.arange(p))  # a copy: train_epoch donates it
      state, m = fns[name].train_epoch(state, data.x_train, data.y_train)  # compile + warm up
      jax.block_until_ready(m)
    states[name] = state
    kernels[name] = np.asarray(state.params["convs"][0]["kernel"])
  # The rules must have changed the trained weights (else the patch missed).
  ref = kernels[next(iter(RULES))]
  for name in list(RULES)[1:]:
    print(
      f"after the warm-up epoch, first conv kernel, max |{name} - all|: "
      f"{np.max(np.abs(kernels[name] - ref)):.3g}"
    )
  rates = {name: [] for name in RULES}
  cpu_ms = {name: [] for name in RULES}  # process CPU time (all threads) per population step
  for _ in range(_ROUNDS.value):
    for name, f in fns.items():
      t0, c0 = time.perf_counter(), time.process_time()
      states[name], m = f.train_epoch(states[name], data.x_train, data.y_train)
      jax.block_until_ready(m)
      rates[name].append(p * steps / (time.perf_counter() - t0))
      cpu_ms[name].append(1e3 * (time.process_time() - c0) / steps)
  first = next(iter(RULES))
  print(
    f"\nbench CNN {_SIZE.value}x{_SIZE.value}, P={p}, batch 32, {steps} steps/epoch; "
    f"{_ROUNDS.value} epochs per rule, taking turns\n"
  )
  print(
    "| rule | member-steps/s, best | median | vs before, median of the rounds' ratios "
    "| CPU ms per population step, median | vs before |"
  )
  print("| --- | --- | --- | --- | --- | --- |")
  for name, r in rates.items():
    ratio = statistics.median(x / y for x, y in zip(r, rates[first]))
    cpu_ratio = statistics.median(x / y for x, y in zip(cpu_ms[name], cpu_ms[first]))
    print(
      f"| {name} | {max(r):.1f} | {statistics.median(r):.1f} | {ratio:.3f} "
      f"| {statistics.median(cpu_ms[name]):.0f} | {cpu_ratio:.3f} |"
    )
  print("\nevery epoch, in turn: member-steps/s (CPU ms per population step)")
  for name, r in rates.items():
    print(f"  {name}: " + ", ".join(f"{x:.0f} ({c:.0f})" for x, c in zip(r, cpu_ms[name])))


def main(argv):
  del argv
  data = hpjax.load_dataset("digits", image_size=None if _SIZE.value == 8 else _SIZE.value)
  p = _POP.value
  print(
    f"{jax.default_backend()} ({jax.devices()[0].device_kind}), "
    f"{platform.processor() or platform.machine()}, jax {jax.__version__}",
    flush=True,
  )
  if "pool" in _PARTS.value:
    _pool_part(data, p)
  if "train" in _PARTS.value:
    if _MAX_TRAIN.value:
      data = hpjax.load_dataset(
        "digits", image_size=None if _SIZE.value == 8 else _SIZE.value, max_train=_MAX_TRAIN.value
      )
    _train_part(data, p)


if __name__ == "__main__":
  app.run(main)

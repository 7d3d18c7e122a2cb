r"""hpjax.nn.Conv against nnx.Conv: one conv layer and a small CNN, side by side.

Three parts, each a markdown table; every variant is compiled first, then
the variants take turns for ``--rounds`` rounds and the best time is
reported:

* ``layer``: one convolution, forward and backward (gradients of the input
  and the kernel), ``--members`` members vmapped, each with its own input
  (28x28x16 -> 32, batch 32, kernel 3, 'SAME'): the stock convolution
  (grouped under vmap), ``hpjax.nn.conv(impl='slices')`` (the im2col the built-in models used before),
  ``hpjax.nn.conv`` with ``impl='auto'`` and ``impl='slices'`` (the latter
  also with its input gradient written without col2im). Then the members
  sharing one input (the first layer of a population fed one minibatch:
  gradient of the kernel only).
* ``alone``: the same layer, one member, not vmapped: stock and
  ``hpjax.nn.conv`` should agree; once as a single jitted step and once as
  ``--steps`` steps inside ``lax.scan`` (where XLA:CPU runs the stock
  backward convolutions slowly).
* ``cnn``: a train step of conv16-pool-conv32-pool-dense64-dense10 on
  28x28x1, batch 32, SGD, vmapped over ``--members`` members, built with
  ``nnx.Conv`` or ``hpjax.nn.Conv`` (everything else identical; pooling is
  ``hpjax.nn.max_pool``), and for reference with
  ``hpjax.nn.Conv(impl='slices')`` (im2col by slices, what
  ``hpjax.models`` run): ``--steps`` steps in a ``lax.scan``,
  members with one shared minibatch or their own, all members at once or in
  chunks of 2 (``lax.map`` over chunks, the engine's default on CPU); and
  one jitted step of all members without a loop around it, which separates
  the grouped convolution's cost from the loop's (see part ``alone``).
  Reported in member-steps per second.

Launch::

  python -m experiments.bench_conv
  python -m experiments.bench_conv --parts=cnn --members=8 --rounds=3
"""

from __future__ import annotations

import contextlib
import importlib
import os
import platform
import time

from absl import app
from absl import flags

_MEMBERS = flags.DEFINE_integer("members", 32, "Members vmapped (parts layer and cnn).")
_BATCH = flags.DEFINE_integer("batch", 32, "Examples per member and step.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Rounds of turns; the best round is reported.")
_STEPS = flags.DEFINE_integer("steps", 4, "Steps per lax.scan (parts alone and cnn).")
_PARTS = flags.DEFINE_list("parts", ["layer", "alone", "cnn"], "Parts to run.")


def _best_times(fns: dict, rounds: int, reps: int = 1) -> dict:
  """Seconds per call of each ``name -> (compiled, args)``: best round, variants in turn."""
  import jax  # pylint: disable=g-import-not-at-top

  for f, args in fns.values():
    jax.block_until_ready(f(*args))
  best = {name: float("inf") for name in fns}
  for _ in range(rounds):
    for name, (f, args) in fns.items():
      t = time.perf_counter()
      for _ in range(reps):
        out = f(*args)
      jax.block_until_ready(out)
      best[name] = min(best[name], (time.perf_counter() - t) / reps)
  return best


def _compile(fn, *args):
  import jax  # pylint: disable=g-import-not-at-top

  return jax.jit(fn).lower(*args).compile(), args


@contextlib.contextmanager
def _slices_dx_without_col2im():
  """While compiling: impl='slices' takes its input gradient as im2col of the dilated g."""
  mod = importlib.import_module("hpjax.nn.conv")
  col2im = mod._slices_dx  # pylint: disable=protected-access
  mod._slices_dx = mod._slices_dx_flipped  # pylint: disable=protected-access
  try:
    yield
  finally:
    mod._slices_dx = col2im  # pylint: disable=protected-access


def _table(header: tuple, rows: list) -> str:
  lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
  lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
  return "\n".join(lines)


def _part_layer(p: int, b: int, rounds: int) -> str:
  import jax  # pylint: disable=g-import-not-at-top
  from jax import lax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from hpjax.nn import conv  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  xs = jnp.asarray(rng.normal(size=(p, b, 28, 28, 16)), jnp.float32)
  ks = jnp.asarray(rng.normal(size=(p, 3, 3, 16, 32)) * 0.1, jnp.float32)
  rs = jnp.asarray(rng.normal(size=(p, b, 28, 28, 32)), jnp.float32)
  stock = lambda x, k: lax.conv_general_dilated(
    x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  variants = {
    "stock `lax.conv_general_dilated` (grouped under vmap)": stock,
    "`hpjax.nn.conv(impl='slices')`": lambda x, k: conv(x, k, impl="slices"),
    "`hpjax.nn.conv` (`impl='auto'`)": conv,
  }

  def step(fn, x_axis, wrt):
    # The output gradient is a fixed random array r: loss = sum(conv(x, k) * r).
    g = jax.grad(lambda x, k, r: jnp.sum(fn(x, k) * r), wrt)
    return jax.vmap(g, in_axes=(x_axis, 0, 0))

  rows = []
  for title, x_axis, wrt in (
    ("own input; grads of input and kernel", 0, (0, 1)),
    ("shared input; grad of kernel", None, 1),
  ):
    x = xs if x_axis == 0 else xs[0]
    fns = {name: _compile(step(fn, x_axis, wrt), x, ks, rs) for name, fn in variants.items()}
    if x_axis == 0:
      with _slices_dx_without_col2im():
        fns["`hpjax.nn.conv(impl='slices')`, input gradient without col2im"] = _compile(
          step(lambda x, k: conv(x, k, impl="slices"), 0, wrt), x, ks, rs
        )
    best = _best_times(fns, rounds)
    ref = best[next(iter(variants))]
    rows += [(title, name, f"{t * 1e3:.0f} ms", f"{ref / t:.2f}x") for name, t in best.items()]
  return _table(("members' input", "convolution", "fwd+bwd, best", "vs stock"), rows)


def _part_alone(b: int, steps: int, rounds: int) -> str:
  import jax  # pylint: disable=g-import-not-at-top
  from jax import lax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from hpjax.nn import conv  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(b, 28, 28, 16)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(3, 3, 16, 32)) * 0.1, jnp.float32)
  r = jnp.asarray(rng.normal(size=(b, 28, 28, 32)), jnp.float32)
  stock = lambda x, k: lax.conv_general_dilated(
    x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  variants = {"stock `lax.conv_general_dilated`": stock, "`hpjax.nn.conv`": conv}

  def one(fn):
    return jax.grad(lambda x, k: jnp.sum(fn(x, k) * r), (0, 1))

  def scanned(fn):
    g = one(fn)

    def body(k, t):
      dx, dk = g(x * t, k)
      return k - 1e-3 * dk, dx.sum()

    return lambda k: lax.scan(body, k, jnp.arange(1.0, steps + 1.0))

  fns = {}
  for name, fn in variants.items():
    fns[("one jitted step", name)] = _compile(one(fn), x, k)
    fns[(f"{steps} steps in `lax.scan`", name)] = _compile(scanned(fn), k)
  best = _best_times(fns, rounds, reps=5)
  rows = []
  for (how, name), t in best.items():
    per_step = t / (1 if how == "one jitted step" else steps)
    ref = best[(how, next(iter(variants)))] / (1 if how == "one jitted step" else steps)
    rows.append((how, name, f"{per_step * 1e3:.2f} ms", f"{ref / per_step:.2f}x"))
  return _table(("how", "convolution", "fwd+bwd per step, best", "vs stock"), rows)


def _part_cnn(p: int, b: int, steps: int, rounds: int) -> str:
  from flax import nnx  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from jax import lax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from hpjax import nn  # pylint: disable=g-import-not-at-top
  import hpjax.nn  # pylint: disable=g-import-not-at-top

  class CNN(nnx.Module):
    """conv16-pool-conv32-pool-dense64-dense10 on 28x28x1."""

    def __init__(self, conv_cls, rngs: nnx.Rngs):
      self.conv1 = conv_cls(1, 16, (3, 3), rngs=rngs)
      self.conv2 = conv_cls(16, 32, (3, 3), rngs=rngs)
      self.dense1 = nnx.Linear(7 * 7 * 32, 64, rngs=rngs)
      self.dense2 = nnx.Linear(64, 10, rngs=rngs)

    def __call__(self, x):
      x = nn.max_pool(jax.nn.relu(self.conv1(x)), 2)
      x = nn.max_pool(jax.nn.relu(self.conv2(x)), 2)
      x = jax.nn.relu(self.dense1(x.reshape(x.shape[0], -1)))
      return self.dense2(x)

  rng = np.random.default_rng(0)
  xs = jnp.asarray(rng.normal(size=(steps, p, b, 28, 28, 1)), jnp.float32)
  ys = jnp.asarray(rng.integers(0, 10, size=(steps, p, b)), jnp.int32)
  keys = jax.random.split(jax.random.key(0), p)

  def program(conv_cls, shared: bool, chunk: int, scan: bool = True):
    graphdef = nnx.split(CNN(conv_cls, nnx.Rngs(0)))[0]
    params = jax.vmap(lambda k: nnx.split(CNN(conv_cls, nnx.Rngs(k)))[1])(keys)

    def loss(prm, x, y):
      logits = nnx.merge(graphdef, prm)(x)
      return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

    def sgd_step(prm, x, y):
      l, g = jax.value_and_grad(loss)(prm, x, y)
      return jax.tree.map(lambda a, d: a - 0.01 * d, prm, g), l

    data_axis = None if shared else 0
    members_step = jax.vmap(sgd_step, in_axes=(0, data_axis, data_axis))

    def epoch(prm, x, y):
      """``steps`` SGD steps of some members (leading member axis on prm, x, y)."""

      def body(prm, xy):
        return members_step(prm, *xy)

      return lax.scan(body, prm, (x, y))

    def run(prm, xs, ys):
      if shared:  # member 0's minibatches for everyone: [steps, batch, ...]
        xs, ys = xs[:, 0], ys[:, 0]
      if not scan:  # one step, all members at once, no loop around it
        return members_step(prm, xs[0], ys[0])
      if not chunk:
        return epoch(prm, xs, ys)
      # Chunks of `chunk` members, one chunk's steps after another's (the
      # engine on CPU): a leading chunk axis on params (and own data).
      by_chunk = lambda a, axis: jnp.moveaxis(
        a.reshape(a.shape[:axis] + (p // chunk, chunk) + a.shape[axis + 1 :]), axis, 0
      )
      c_prm = jax.tree.map(lambda a: by_chunk(a, 0), prm)
      if shared:
        out = lax.map(lambda c: epoch(c, xs, ys), c_prm)
      else:
        out = lax.map(lambda c: epoch(*c), (c_prm, by_chunk(xs, 1), by_chunk(ys, 1)))
      return jax.tree.map(lambda a: a.reshape((p,) + a.shape[2:]), out[0]), out[1]

    return _compile(run, params, xs, ys)

  # hpjax's own model layer (im2col by slices, what hpjax.models run) for
  # reference: same shapes and kernel init, a differently drawn bias (zeros).
  slices_conv = lambda cin, cout, ks, rngs: nn.Conv(cin, cout, ks, impl="slices", rngs=rngs)
  convs = {
    "`nnx.Conv`": nnx.Conv,
    "`hpjax.nn.Conv`": hpjax.nn.Conv,
    "`hpjax.nn.Conv(impl='slices')`": slices_conv,
  }
  fns = {}
  for shared in (True, False):
    for chunk, scan in ((0, False), (0, True), (2, True)):
      for name, cls in convs.items():
        fns[(shared, chunk, scan, name)] = program(cls, shared, chunk, scan)
  best = _best_times(fns, rounds)
  rows = []
  for (shared, chunk, scan, name), t in best.items():
    ref = best[(shared, chunk, scan, "`nnx.Conv`")]
    how = (f"{steps} steps in `lax.scan`, " if scan else "one jitted step, ") + (
      f"chunks of {chunk}" if chunk else "all members at once"
    )
    rows.append(
      (
        "one shared" if shared else "own",
        how,
        name,
        f"{p * (steps if scan else 1) / t:.0f}",
        f"{ref / t:.2f}x",
      )
    )
  return _table(("minibatch", "program", "conv layer", "member-steps/s", "vs nnx.Conv"), rows)


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top

  cpu = platform.processor() or platform.machine()
  print(
    f"jax {jax.__version__}, {jax.default_backend()} ({cpu}, {os.cpu_count()} cores),"
    f" members={_MEMBERS.value}, batch={_BATCH.value}, rounds={_ROUNDS.value},"
    f" steps={_STEPS.value}\n"
  )
  for part in _PARTS.value:
    if part == "layer":
      print(f"(a) one conv layer, {_MEMBERS.value} members vmapped, 28x28x16 -> 32\n")
      print(_part_layer(_MEMBERS.value, _BATCH.value, _ROUNDS.value) + "\n", flush=True)
    elif part == "alone":
      print("(b) one member alone, not vmapped, 28x28x16 -> 32\n")
      print(_part_alone(_BATCH.value, _STEPS.value, _ROUNDS.value) + "\n", flush=True)
    elif part == "cnn":
      print(
        f"(c) small CNN, SGD, {_MEMBERS.value} members vmapped, {_STEPS.value} steps per lax.scan\n"
      )
      print(_part_cnn(_MEMBERS.value, _BATCH.value, _STEPS.value, _ROUNDS.value) + "\n", flush=True)
    else:
      raise app.UsageError(f"--parts: unknown part {part!r}; allowed: layer, alone, cnn")


if __name__ == "__main__":
  app.run(main)

r"""The programs around the training step: init and evaluate, compile and call times.

Why ``hpjax.population.INIT_COMPILER_OPTIONS`` exists: a group's ``init``
runs once per run, so the time XLA's backend (LLVM) spends optimising it is
never paid back. This script lowers the group functions of one population
(the bench CNN, ``--members`` members, digits at ``--image_size``) and, side
by side in one process, compiles each with XLA's default options and with
the backend optimisations off, then times a call of each executable (the
median of ``--reps``).

Then the validation pass, with XLA's default options, called in turn: the
validation set padded to its own whole number of eval batches and evaluated
in the engine's member chunks (what ``hpjax.Population`` does), the same
with all members at once, and padded to the test set's length with all
members at once (what the engine did before, so that one compiled evaluate
served both splits). Last, the validation pass at other eval batch sizes
(``--eval_batches``), in the engine's member chunks.

Launch::

  python -m experiments.bench_init                       # 8 members, digits 8x8
  python -m experiments.bench_init --image_size=28 --members=32
"""

from __future__ import annotations

import statistics
import time

from absl import app
from absl import flags

_MEMBERS = flags.DEFINE_integer("members", 8, "Population size.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 0, "Digits resized to this side (0: 8x8).")
_REPS = flags.DEFINE_integer("reps", 5, "Timed calls per executable (median reported).")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Compiles per program and setting, alternating.")
_EVAL_BATCHES = flags.DEFINE_list("eval_batches", ["256", "64", "32"],
                                  "Eval batch sizes of the last table (the engine's chunks).")


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import hpjax  # pylint: disable=g-import-not-at-top
  from experiments import benchmark  # pylint: disable=g-import-not-at-top
  from hpjax import population as pop_lib  # pylint: disable=g-import-not-at-top

  # Nothing from an earlier run may answer a compile.
  jax.config.update("jax_enable_compilation_cache", False)
  data = hpjax.load_dataset("digits", seed=0, image_size=_IMAGE_SIZE.value or None)
  members = benchmark._members(_MEMBERS.value, 32)  # pylint: disable=protected-access
  pop = hpjax.Population(members, data, activations=benchmark.ACTS, mesh=None)
  (group,) = pop.groups
  fns = group.fns
  keys = pop_lib.member_keys(0, list(range(len(members))))
  hp = pop.hparam_arrays(members)
  state = group.state
  x_val, y_val, w_val = pop._eval["val"]  # pylint: disable=protected-access
  programs = {
      "init": (fns.init, (keys, hp)),
      "evaluate (validation set)": (fns.evaluate, (state, x_val, y_val, w_val)),
  }
  settings = {"XLA default": {}, "backend optimisations off": dict(pop_lib.INIT_COMPILER_OPTIONS)}
  print(f"bench CNN, digits {data.input_shape[0]}x{data.input_shape[1]}, "
        f"{len(members)} members; {jax.devices()[0].platform}")
  print("| program | setting | compile | call (median) |")
  print("| --- | --- | --- | --- |")
  for name, (fn, args) in programs.items():
    raw = fn.__wrapped__  # the pure function under the group's jit
    compile_s = {k: [] for k in settings}
    outs = {}
    for _ in range(max(1, _ROUNDS.value)):
      for key, options in settings.items():
        jax.clear_caches()  # no in-memory executable either
        jitted = jax.jit(raw, compiler_options=options or None)
        lowered = jitted.trace(*args).lower()
        start = time.perf_counter()
        outs[key] = lowered.compile()
        compile_s[key].append(time.perf_counter() - start)
    for key, executable in outs.items():
      jax.block_until_ready(executable(*args))
      times = []
      for _ in range(_REPS.value):
        start = time.perf_counter()
        jax.block_until_ready(executable(*args))
        times.append(time.perf_counter() - start)
      print(f"| {name} | {key} | {min(compile_s[key]):.2f} s | "
            f"{1e3 * statistics.median(times):.1f} ms |")
    a, b = (jax.tree.leaves(outs[k](*args)) for k in settings)
    diff = max(float(np.max(np.abs(np.asarray(u, np.float64) - np.asarray(v, np.float64))))
               for u, v in zip(a, b) if np.issubdtype(np.asarray(u).dtype, np.floating))
    print(f"|  | largest difference between the two results | {diff:.2g} | |")

  # The validation pass: own padding and member chunks against what the
  # engine did before (padded to the test set's length, all members at once).
  import dataclasses  # pylint: disable=g-import-not-at-top
  from hpjax.population import pad_eval  # pylint: disable=g-import-not-at-top
  b = pop.eval_batch_size
  own = pop._eval["val"]  # pylint: disable=protected-access
  longer = pad_eval(data.x_val, data.y_val, b, max(data.num_val, data.num_test))
  at_once = pop_lib.group_functions(dataclasses.replace(fns.spec, member_chunk=0)).evaluate
  variants = {
      "own length, the engine's member chunks": (fns.evaluate, own),
      "own length, all members at once": (at_once, own),
      "test set's length, all members at once (before)": (at_once, longer),
  }
  jax.clear_caches()
  print()
  print(f"validation pass ({data.num_val} examples, test set {data.num_test}, eval batch {b}):")
  results = _evaluate_in_turn("variant", variants, state, ref_key=list(variants)[-1])

  # Other eval batch sizes (a GroupSpec field: one program each).
  by_size = {}
  for e in (int(v) for v in _EVAL_BATCHES.value):
    spec = dataclasses.replace(fns.spec, eval_batch_size=e)
    by_size[e] = (pop_lib.group_functions(spec).evaluate, pad_eval(data.x_val, data.y_val, e))
  print()
  _evaluate_in_turn("eval batch", by_size, state, ref=results[list(variants)[-1]]["loss"])


def _evaluate_in_turn(title, variants, state, ref_key=None, ref=None):
  """Calls each ``(evaluate, padded split)`` in turn; prints a markdown table.

  The loss difference is against ``variants[ref_key]`` or the loss ``ref``.
  Returns every variant's metrics.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  results = {k: jax.block_until_ready(f(state, *a)) for k, (f, a) in variants.items()}
  times = {k: [] for k in variants}
  for _ in range(_REPS.value):
    for key, (f, a) in variants.items():
      start = time.perf_counter()
      jax.block_until_ready(f(state, *a))
      times[key].append(time.perf_counter() - start)
  ref = results[ref_key]["loss"] if ref is None else ref
  print(f"| {title} | rows per member | call (median) | largest loss difference |")
  print("| --- | --- | --- | --- |")
  for key, (_, a) in variants.items():
    d = float(np.max(np.abs(np.asarray(results[key]["loss"]) - np.asarray(ref))))
    print(f"| {key} | {a[0].shape[0]} | {1e3 * statistics.median(times[key]):.1f} ms | {d:.2g} |")
  return results


if __name__ == "__main__":
  app.run(main)

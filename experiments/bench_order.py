r"""The shared-minibatch-order lever, side by side in one run.

Times the bench CNN population (mixed activations and optimizers, batch 32)
with each member's own minibatch order or one shared order, in chunks of 2
members or all at once; every variant is warmed up, then the variants take
turns for ``--reps`` epochs each and the best epoch is reported::

  python -m experiments.bench_order --image_size=28 --population=32
"""

from __future__ import annotations

import dataclasses
import time

from absl import app
from absl import flags
import jax
import numpy as np

import hpjax
from hpjax import population as pop_lib

_POP = flags.DEFINE_integer("population", 32, "Members trained side by side.")
_SIZE = flags.DEFINE_integer("image_size", 28, "Digits are resized to this size (8 = native).")
_REPS = flags.DEFINE_integer("reps", 3, "Timed epochs per variant (taking turns).")

ACTS = ("relu", "tanh", "sigmoid")
OPTS = ("sgd", "rmsprop", "adam")
VARIANTS = {
    "own order, chunks of 2 (default on CPU)": dict(),
    "shared order, chunks of 2": dict(shared_order=True),
    "own order, all members at once": dict(member_chunk=0),
    "shared order, all members at once": dict(shared_order=True, member_chunk=0),
}


def main(argv):
  del argv
  data = hpjax.load_dataset("digits", image_size=None if _SIZE.value == 8 else _SIZE.value)
  p = _POP.value
  lrs = np.logspace(-3.5, -1.5, p)
  members = [hpjax.Member(learning_rate=float(lrs[i]), activation=ACTS[i % 3],
                          optimizer=OPTS[(i // 3) % 3], batch_size=32) for i in range(p)]
  group = hpjax.Population(members, data, seed=0, mesh=None).groups[0]
  steps = data.num_train // 32
  fns, states = {}, {}
  for name, change in VARIANTS.items():
    fns[name] = pop_lib.group_functions(dataclasses.replace(group.fns.spec, **change))
    state = pop_lib.take(group.state, np.arange(p))  # a copy: train_epoch donates it
    state, m = fns[name].train_epoch(state, data.x_train, data.y_train)  # compile + warm up
    jax.block_until_ready(m)
    states[name] = state
  rates = {name: [] for name in VARIANTS}
  for _ in range(_REPS.value):
    for name, f in fns.items():
      t0 = time.perf_counter()
      states[name], m = f.train_epoch(states[name], data.x_train, data.y_train)
      jax.block_until_ready(m)
      rates[name].append(p * steps / (time.perf_counter() - t0))
  print(f"bench CNN {_SIZE.value}x{_SIZE.value}, P={p}, batch 32; member-steps/s, best of "
        f"{_REPS.value}\n\n| variant | member-steps/s | all epochs |\n| --- | --- | --- |")
  for name, r in rates.items():
    print(f"| {name} | {max(r):.0f} | {', '.join(f'{x:.0f}' for x in r)} |")


if __name__ == "__main__":
  app.run(main)

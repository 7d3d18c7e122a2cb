r"""Engine throughput, side by side in one run: hpjax population vs one at a time.

Trains the bench CNN (conv16-pool-conv32-pool-dense64-dense10) on digits
(resized to ``--image_size``), batch 32, members with mixed learning rates,
activations (relu/tanh/sigmoid) and optimizers (sgd/rmsprop/adam), and reports
member-steps per second for:

* hpjax, ``--population`` members vmapped in one compiled group;
* hpjax, the same members one at a time (a jitted single-member epoch);
* hpjax, the population with the optimizer family fixed per group
  (structural) instead of a per-member traced index (vectorized);
* PyTorch (CPU), the same members one at a time, as Optuna/Ray Tune run them
  (needs the ``[bench]`` extra; skipped with a note otherwise).

Launch::

  python -m experiments.bench_engine --image_size=28 --population=32

Prints a markdown table and, with ``--json_out``, writes the numbers.
"""

from __future__ import annotations

import json
import platform
import time

from absl import app
from absl import flags
import jax
import numpy as np

import hpjax
from hpjax import population as pop_lib

_POP = flags.DEFINE_integer("population", 32, "Members trained side by side.")
_SIZE = flags.DEFINE_integer("image_size", 28, "Digits are resized to this size (8 = native).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Minibatch size of every member.")
_EPOCHS = flags.DEFINE_integer("epochs", 2, "Timed epochs for the population (after 1 warm-up).")
_ALONE = flags.DEFINE_integer("alone_members", 4, "Members timed one at a time (hpjax and torch).")
_TORCH_STEPS = flags.DEFINE_integer("torch_steps", 40, "Timed steps per PyTorch member.")
_STRUCTURAL = flags.DEFINE_bool("structural_optimizer", True,
                                "Also time the optimizer family as a structural choice.")
_JSON = flags.DEFINE_string("json_out", None, "Write the results as JSON here.")

ACTS = ("relu", "tanh", "sigmoid")
OPTS = ("sgd", "rmsprop", "adam")


def _members(n: int) -> list[hpjax.Member]:
  lrs = np.logspace(-3.5, -1.5, n) if n > 1 else [1e-3]
  return [hpjax.Member(learning_rate=float(lrs[i]), activation=ACTS[i % 3],
                       optimizer=OPTS[(i // 3) % 3], batch_size=_BATCH.value)
          for i in range(n)]


def _time_epochs(fns, state, data, epochs: int):
  """Returns (state, seconds) for ``epochs`` epochs after one warm-up epoch."""
  state, m = fns.train_epoch(state, data.x_train, data.y_train)
  jax.block_until_ready(m)
  start = time.perf_counter()
  for _ in range(epochs):
    state, m = fns.train_epoch(state, data.x_train, data.y_train)
  jax.block_until_ready(m)
  return state, time.perf_counter() - start


def _group(pop: hpjax.Population, **spec_changes):
  import dataclasses  # pylint: disable=g-import-not-at-top
  g = pop.groups[0]
  spec = dataclasses.replace(g.fns.spec, **spec_changes)
  return pop_lib.group_functions(spec), g


def main(argv):
  del argv
  data = hpjax.load_dataset("digits", image_size=None if _SIZE.value == 8 else _SIZE.value)
  steps = data.num_train // _BATCH.value
  p = _POP.value
  rows = []

  # 1. The population, vmapped.
  members = _members(p)
  compile_start = time.perf_counter()
  pop = hpjax.Population(members, data, activations=ACTS)
  g = pop.groups[0]
  state, m = g.fns.train_epoch(g.state, data.x_train, data.y_train)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - compile_start
  state, secs = _time_epochs(g.fns, state, data, _EPOCHS.value)
  pop_rate = p * steps * _EPOCHS.value / secs
  rows.append(("hpjax population (vmapped, family vectorized)", p, pop_rate))
  print(rows[-1], flush=True)

  # 2. Structural optimizer family (all members adam, family fixed at trace time).
  struct_rate = None
  if _STRUCTURAL.value:
    fns, g = _group(pop, optimizer_family="adam")
    hp = pop.hparam_arrays(members)
    hp["optimizer"][:] = hpjax.optim.family_index("adam")
    s2 = fns.init(pop_lib.member_keys(0, range(p)), hp)
    _, secs2 = _time_epochs(fns, s2, data, _EPOCHS.value)
    struct_rate = p * steps * _EPOCHS.value / secs2
    rows.append(("hpjax population, family structural (all adam)", p, struct_rate))

  # 3. hpjax one member at a time (same compiled function for every member).
  alone = _members(_ALONE.value)
  single = hpjax.Population(alone[:1], data, activations=ACTS)
  fns1 = single.groups[0].fns
  hp_all = single.hparam_arrays(alone)
  total = 0.0
  for i in range(len(alone)):
    s1 = fns1.init(pop_lib.member_keys(0, [i]), {k: v[i:i + 1] for k, v in hp_all.items()})
    _, secs1 = _time_epochs(fns1, s1, data, 1)
    total += secs1
  alone_rate = len(alone) * steps / total
  rows.append(("hpjax one member at a time (jitted epoch)", 1, alone_rate))

  # 4. PyTorch one member at a time.
  torch_rate, torch_note = None, ""
  try:
    from experiments import torch_baseline  # pylint: disable=g-import-not-at-top
    import torch  # pylint: disable=g-import-not-at-top,unused-import
    tm = [dict(activation=m.activation, optimizer=m.optimizer, lr=m.learning_rate,
               batch_size=m.batch_size) for m in alone]
    torch_rate = torch_baseline.member_steps_per_second(
        np.asarray(data.x_train), np.asarray(data.y_train), tm, _TORCH_STEPS.value)
    rows.append((f"PyTorch {torch.__version__} one member at a time", 1, torch_rate))
  except ImportError:
    torch_note = "PyTorch not installed (pip install -e '.[bench]'): torch row skipped"

  device = jax.devices()[0]
  header = (f"bench CNN on digits {_SIZE.value}x{_SIZE.value}, batch {_BATCH.value}, "
            f"{steps} steps/epoch, {jax.default_backend()} ({device.device_kind}), "
            f"{platform.processor() or platform.machine()}, jax {jax.__version__}")
  print(f"\n{header}\n")
  print("| variant | P | member-steps/s | vs PyTorch one-at-a-time |")
  print("| --- | --- | --- | --- |")
  for name, n, rate in rows:
    ratio = f"{rate / torch_rate:.2f}x" if torch_rate else "n/a"
    print(f"| {name} | {n} | {rate:.1f} | {ratio} |")
  print(f"\nfirst epoch incl. compile: {compile_s:.1f} s")
  if struct_rate:
    print(f"vectorized optimizer family costs {100 * (1 - pop_rate / struct_rate):+.1f}% "
          "throughput against a structural family")
  if torch_note:
    print(torch_note)
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump({"header": header, "compile_s": compile_s,
                 "rows": [{"variant": n, "population": k, "member_steps_per_s": r}
                          for n, k, r in rows]}, f, indent=2)


if __name__ == "__main__":
  app.run(main)

r"""Side by side in one run: throughput, FLOPs, compile time, memory, devices, time to accuracy.

One absl app, one machine, one set of data; prints markdown tables and, with
``--out``, writes every number as JSON. Every flag is a field of
:class:`experiments.bench_lib.Options` (``--helpfull`` lists them). The
parts (``--parts``):

* ``throughput``: member-steps per second of hpjax populations of
  ``--populations`` members (mixed learning rates, activations and
  optimizers, batch 32) on each workload (``--workloads``), for each
  convolution implementation (``--conv_impls``: ``slices``, ``xla``):

  - ``digits8``: the bench CNN (conv16-pool-conv32-pool-dense64-dense10, the
    default model of ``experiments/configs/common.py``) on digits at 8x8;
  - ``digits28``: the same on digits resized to 28x28;
  - ``resnet32``: a ResNet-style model (``--resnet``, structural
    hyperparameters) on generated CIFAR-shaped 32x32x3 images.

  P=1 is hpjax one member at a time (a jitted single-member epoch, looped
  over ``--alone_members`` members); the same first members are also trained
  one at a time by PyTorch (``experiments/torch_baseline.py``), which is what
  an Optuna or Ray Tune user runs today, and every row carries its ratio to
  that. Each timed call is one compiled epoch over the first ``steps x batch``
  training examples; the median call is reported (the fastest in the JSON).
  States come from the group's own init (``hpjax.engine.group_functions``),
  as ``hpjax.Population`` builds them. PyTorch is timed before and after the
  hpjax rows of each workload (the median over members and both rounds), with
  the faster of one thread and torch's default by a short probe: on a shared
  machine torch's default of all cores can collapse (10-50x) when another
  process takes a core.
* ``flops``: FLOPs of one member's training step from XLA's cost analysis,
  against the measured float32 matmul rate (``--matmul_size``, best of
  ``--matmul_reps``): achieved FLOP/s = FLOPs per member-step x
  member-steps/s, as a fraction of the matmul rate. Beside it, its ceiling:
  the epoch's own matrix products (read from its StableHLO) timed alone in
  one program, taking turns with the square matmul; the epoch can reach at
  most that share even if everything but its products took no time.
* ``compile``: the default config (``--compile_config``) built exactly as a
  run builds it (``hpjax.tuner.from_config`` and ``build_population``) and
  trained for two epochs in a fresh process, twice with one new persistent
  compilation cache: cold, then warm (programs cached as
  ``experiments/tune.py`` caches them: those that took at least
  ``$HPJAX_CACHE_MIN_SECS``, default 0: all, to compile). Compile time is
  (build + first epoch) minus the steady second epoch; JAX's own
  trace/lower/compile events are summed too.
* ``memory``: one process per P (``--memory_workload``): peak RSS,
  population-state bytes and XLA's temporary buffers (and the device's peak
  memory where the backend reports it).
* ``devices``: scaling over devices. One process per device count D
  (``--device_counts``, each measured ``--device_rounds`` times in turn, the
  best round kept): ``--device_population`` members of ``--device_workload``
  split over D devices as the tuner splits them (``hpjax.Population(...,
  mesh=...)``: ``shard_map`` over a 1-D population mesh, pad members where D
  does not divide P; D=1 is the plain unsharded engine). Member-steps/s counts
  real members only; speedup and efficiency (speedup / D) are against D=1 in
  the same run. On CPU the D devices are simulated
  (``--xla_force_host_platform_device_count``) and share the machine's cores:
  no hardware is added. On GPUs the first D real devices are used; counts
  above the devices present are skipped with a note.
* ``tta`` (off by default: 3-15 minutes a seed on 2 cores, by config): time to
  ``--tta_target`` validation accuracy on digits 28x28, hpjax PBT
  (``--tta_config``, in a fresh process, cold and then warm compilation
  cache) against Optuna (TPE + median pruner) driving PyTorch
  (``experiments/optuna_torch.py``) with the same search space, budget and
  splits, once per ``--tta_seeds`` (the validation split has 180 images: one
  image is 0.0056, so a quality target is judged on the mean over seeds,
  the wall time on the worst seed). Both clocks start before the data is
  loaded.
* ``levers`` (off by default): the engine's settings that change no result
  but may change speed, on one population (``--lever_population`` members of
  ``--lever_workload``), each variant compiled and warmed up, then timed
  taking turns (``--lever_rounds``): the optimizer family fixed per group
  (structural) instead of a per-member index, one minibatch order shared by
  the group, and member chunks (``GroupSpec.member_chunk``); and, for
  reference, one activation and one optimizer family compiled (members all
  relu + adam: the bound a per-member ``lax.switch`` could reach) and the
  same CNN written as a user's model (``experiments/examples/fast_cnn.py``).
* ``programs`` (off by default): the programs around the training step, in
  a fresh process without a persistent compilation cache. The group's
  ``init`` and ``evaluate`` compiled with XLA's defaults and with the backend
  optimisations off (``hpjax.engine.INIT_COMPILER_OPTIONS``, which the init
  uses), and called; then the validation pass padded to its own length or to
  the test set's, in member chunks or all at once, and at other eval batch
  sizes (``--eval_batches``).
* ``stream`` (off by default): training data streamed from the host
  (``hpjax.data.Stream``) against the same data in memory, on one population
  (``--stream_population`` members of ``--stream_workload``, a whole epoch
  per call), both with the shared minibatch order: the in-memory epoch (one
  ``lax.scan`` gathering its batches on the device) and the stream's host
  loop for each ``--stream_calls`` (batches per jitted call). The stream is
  a Python generator over a host copy of the training split in a numpy
  permutation per epoch, what a user's pipeline yields. Every variant is
  built as ``hpjax.Population`` builds it and warmed up (its compiles), then
  the variants take turns for ``--stream_rounds`` epochs each; the best
  epoch's member-steps/s and the median process CPU seconds per epoch (all
  threads) are reported, and per stream variant its host side alone (the
  generator, the checks, the stacking and the transfers, no training).

Launch::

  python -m experiments.benchmark --out=/tmp/bench.json                  # 9-10 min on 2 cores
  python -m experiments.benchmark --parts=tta --out=/tmp/tta.json        # 12-15 min on 2 cores
  python -m experiments.benchmark --parts=tta --tta_seeds=0,1,2 \
      --tta_config=experiments/configs/digits28_budget.py               # 8-9 min on 2 cores
  python -m experiments.benchmark --parts=throughput,flops --workloads=digits8 \
      --populations=1,8 --torch=off                                      # quick look

PyTorch and Optuna come with the ``[bench]`` extra and are imported only by
the parts that need them; ``--torch=off`` skips the PyTorch rows.
``experiments/bench_engine.py``, ``bench_order.py`` and ``bench_init.py`` are
this app with other default parts and sizes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import datetime
import functools
import itertools
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

from experiments import bench_lib
from experiments.bench_lib import ACTS
from experiments.bench_lib import Options

CHILDREN = ("compile", "memory", "devices", "programs")


# ---------------------------------------------------------------------------
# Throughput and FLOPs.


@dataclasses.dataclass
class Prepared:
  """P members of a workload with their epoch compiled: what one throughput row times.

  Attributes:
    population: P.
    steps: training steps per call.
    compiled: the compiled epoch.
    states: one P-member state, or (P=1) one state per member trained alone.
    x, y: the training slice every call trains on.
  """

  population: int
  steps: int
  compiled: bench_lib.Compiled
  states: list
  x: Any
  y: Any

  def call(self) -> Callable[[], Any]:
    """One timed call per invocation; the states train in turn (P=1: one at a time)."""
    turn = itertools.count()

    def one():
      j = next(turn) % len(self.states)
      self.states[j], metrics = self.compiled.executable(self.states[j], self.x, self.y)
      return self.states[j], metrics

    return one


def prepare(pop, structural: dict, p: int, opts: Options, steps: int) -> Prepared:
  """States of P members (P=1: ``opts.alone_members`` states) and their compiled epoch.

  Args:
    pop: the workload's :func:`bench_lib.one_member_population`.
    structural: the members' structural hyperparameters.
    p: population size.
    opts: options (batch size, alone members).
    steps: training steps per call.
  """
  b = opts.batch_size
  x, y = bench_lib.training_slice(pop.data, steps, b)
  n = max(1, opts.alone_members) if p == 1 else p
  states = list(bench_lib.init_states(pop, bench_lib.members(n, b, structural), p))
  compiled = bench_lib.compile_epoch(
    pop.groups[0].fns.train_epoch, states[0], x, y, matmuls="flops" in opts.parts
  )
  return Prepared(p, steps, compiled, states, x, y)


def flops_per_member_step(pop, p1: Prepared, opts: Options) -> dict[str, Any]:
  """FLOPs of one member's training step, from XLA's cost analysis.

  XLA's analysis of a loop body may count it once (jax 0.10: yes) or times
  its trip count; lowering the same epoch for 1 and 2 steps tells which, and
  the compiled P=1 figure is divided accordingly.
  """
  g = pop.groups[0]
  b = opts.batch_size

  def lowered_flops(s):
    lowered = g.fns.train_epoch.lower(g.state, pop.data.x_train[: s * b], pop.data.y_train[: s * b])
    return float(bench_lib.cost(lowered).get("flops", float("nan")))

  one, two = lowered_flops(1), lowered_flops(2)
  counts_trips = bool(two > 1.5 * one)
  total = p1.compiled.flops
  steps = p1.steps
  per_step = None if total is None else (total / steps if counts_trips else total)
  # One member's epoch writes each product once, in its loop over steps.
  matmul_flops = sum(m.flops * n for m, n in p1.compiled.matmuls or ())
  return {
    "flops_per_member_step": per_step,
    "matmul_flops_per_member_step": float(matmul_flops) or None,
    "compiled_epoch_flops": total,
    "steps_in_epoch": steps,
    "loop_counted_per_trip": counts_trips,
    "lowered_1_step_flops": one,
    "lowered_2_step_flops": two,
  }


def _torch_available() -> bool:
  try:
    import torch  # noqa: F401  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return True


class TorchBaseline:
  """PyTorch training the first ``alone_members`` members one after another.

  The thread count is chosen once by a short probe (with ``torch_threads ==
  0``, one thread against torch's default). :meth:`measure` then times every
  member for ``torch_steps`` steps; it is called before and after the hpjax
  rows of a workload so that a drifting machine load weighs on both sides
  alike.
  """

  def __init__(self, workload: bench_lib.Workload, opts: Options):
    import numpy as np  # pylint: disable=g-import-not-at-top
    import torch  # pylint: disable=g-import-not-at-top

    from experiments import torch_baseline  # pylint: disable=g-import-not-at-top

    self._tb = torch_baseline
    self._torch = torch
    self.opts = opts
    self.members = [
      dict(
        activation=m.activation,
        optimizer=m.optimizer,
        lr=m.learning_rate,
        batch_size=m.batch_size,
        model=dict(workload.structural),
      )
      for m in bench_lib.members(opts.alone_members, opts.batch_size)
    ]
    self.x = np.asarray(workload.data.x_train)
    self.y = np.asarray(workload.data.y_train)
    self.device = torch_baseline.resolve_device(opts.torch_device)
    self.default_threads = torch.get_num_threads()
    self.probe: dict[int, float] = {}
    if opts.torch_threads:
      self.threads = opts.torch_threads
    else:
      self.threads, self.probe = probe_torch_threads(self.x, self.y, self.members[0], self.device)
    self.rates: list[float] = []
    self.rounds: list[float] = []

  def measure(self) -> float:
    """Times every member once; returns the median member-steps/s of this round."""
    self._torch.set_num_threads(self.threads)
    try:
      self._tb.train_member(self.x, self.y, max_steps=3, device=self.device, **self.members[0])
      rates = []
      for i, m in enumerate(self.members):
        r = self._tb.train_member(
          self.x, self.y, max_steps=self.opts.torch_steps, seed=i, device=self.device, **m
        )
        rates.append(r["steps"] / r["seconds"])
    finally:
      self._torch.set_num_threads(self.default_threads)
    self.rates += rates
    self.rounds.append(statistics.median(rates))
    return self.rounds[-1]

  def result(self) -> dict[str, Any]:
    """The baseline: the median over all members of all rounds."""
    return {
      "member_steps_per_s": statistics.median(self.rates),
      "best_member_steps_per_s": max(self.rates),
      "rounds": self.rounds,
      "threads": self.threads,
      "thread_probe": {str(k): v for k, v in self.probe.items()},
      "device": self.device,
      "members": len(self.members),
      "steps_per_member": self.opts.torch_steps,
      "version": self._torch.__version__,
    }


def probe_torch_threads(
  x, y, member: dict[str, Any], device: str = "cpu", steps: int = 8
) -> tuple[int, dict[int, float]]:
  """The faster torch thread count, 1 or torch's default, by a short probe.

  Returns:
    ``(threads, {threads: member-steps/s probed})``.
  """
  import torch  # pylint: disable=g-import-not-at-top

  from experiments import torch_baseline  # pylint: disable=g-import-not-at-top

  default = torch.get_num_threads()
  rates = {}
  try:
    for t in sorted({1, default}):
      torch.set_num_threads(t)
      torch_baseline.train_member(x, y, max_steps=2, device=device, **member)
      r = torch_baseline.train_member(x, y, max_steps=steps, device=device, **member)
      rates[t] = r["steps"] / r["seconds"]
  finally:
    torch.set_num_threads(default)
  return max(rates, key=rates.get), rates


def model_structure(w, impl: str, dtype: str) -> dict[str, Any]:
  """The workload's structural hyperparameters with this convolution and dtype.

  ``compute_dtype`` appears only when it is not the default float32.
  """
  extra = {} if dtype == "float32" else {"compute_dtype": dtype}
  return {**w.structural, "conv_impl": impl, **extra}


def throughput_part(name: str, opts: Options, log: Callable[[str], None]) -> list[dict[str, Any]]:
  """Throughput and FLOPs of one workload at every P.

  One entry per ``--conv_impls`` and ``--compute_dtypes`` pair.
  """
  w = bench_lib.load_workload(name, opts)
  steps = opts.steps_for(name)
  use_torch = "throughput" in opts.parts and (
    opts.torch == "on" or (opts.torch == "auto" and _torch_available())
  )
  baseline = None
  if use_torch:
    baseline = TorchBaseline(w, opts)
    log(
      f"{name} PyTorch one at a time: {baseline.measure():.1f} member-steps/s "
      f"({baseline.threads} thread(s); probe {_rates_text(baseline.probe)})"
    )
  pops = sorted(set(opts.populations) | ({1} if "flops" in opts.parts else set()))
  if "throughput" not in opts.parts:
    pops = [1]
  entries = []
  variants = [(i, d) for i in opts.conv_impls for d in opts.compute_dtypes]
  for impl, dtype in variants:
    structural = model_structure(w, impl, dtype)
    label = impl if dtype == "float32" else f"{impl}, {dtype}"
    entry: dict[str, Any] = {
      "name": name,
      "conv_impl": impl,
      "compute_dtype": dtype,
      "description": w.description,
      "batch_size": opts.batch_size,
      "steps_per_call": steps,
      "model": structural,
      "input_shape": list(w.data.input_shape),
      "rows": [],
    }
    if "throughput" in opts.parts and not use_torch:
      entry["torch_note"] = (
        "PyTorch rows skipped (--torch=off)"
        if opts.torch == "off"
        else "PyTorch not installed (pip install -e '.[bench]'): rows skipped"
      )
    pop = bench_lib.one_member_population(w.data, structural, opts.batch_size)
    p1 = None
    for p in pops:
      c = prepare(pop, structural, p, opts, steps)
      row = {
        "population": p,
        "compile_s": c.compiled.compile_s,
        "state_bytes": bench_lib.tree_bytes(c.states[0]),
        "xla_temp_bytes": c.compiled.temp_bytes,
        "epoch_flops": c.compiled.flops,
      }
      if "throughput" in opts.parts:
        row.update(bench_lib.time_calls(c.call(), p * steps, opts))
        log(
          f"{name} ({label}) P={p}: {row['member_steps_per_s']:.1f} member-steps/s "
          f"(compile {c.compiled.compile_s:.1f} s, {len(row['call_s'])} calls)"
        )
      if c.compiled.matmuls:
        row["matmuls_alone"] = bench_lib.time_matmuls(
          c.compiled.matmuls, opts.matmul_reps, opts.matmul_size
        )
      if p == 1:
        p1 = c
      if p in opts.populations or p != 1:
        entry["rows"].append(row)
      del c
    if "flops" in opts.parts:
      entry["flops"] = flops_per_member_step(pop, p1, opts)
      per = entry["flops"]["flops_per_member_step"]
      log(f"{name} ({label}): {per / 1e6:.1f} MFLOP per member-step")
    entries.append(entry)
  if baseline is not None:
    log(f"{name} PyTorch one at a time, again: {baseline.measure():.1f} member-steps/s")
    torch_result = baseline.result()
    for entry in entries:
      entry["torch"] = torch_result
      for row in entry["rows"]:
        if "member_steps_per_s" in row:
          row["vs_torch"] = row["member_steps_per_s"] / torch_result["member_steps_per_s"]
  return entries


def _rates_text(rates: dict) -> str:
  return ", ".join(f"{k} thread(s) {v:.1f}/s" for k, v in rates.items()) or "none"


def _matmul_rates(opts: Options, log: Callable[[str], None], when: str = "") -> dict[str, Any]:
  """dtype -> the matmul rate: float32's, and that of each other ``--compute_dtypes``.

  A bfloat16 member is compared with the bfloat16 matmul rate.
  """
  rates = {}
  for dtype in dict.fromkeys(("float32",) + tuple(opts.compute_dtypes)):
    rates[dtype] = bench_lib.matmul_rate(opts.matmul_size, opts.matmul_reps, dtype)
    log(
      f"matmul {when + ' ' if when else ''}{opts.matmul_size}^2 {dtype}: "
      f"{rates[dtype]['flops_per_s'] / 1e9:.1f} GFLOP/s"
    )
  return rates


def _add_fractions(w: dict[str, Any], matmul: dict[str, Any]) -> None:
  """Achieved FLOP/s and the fraction of the matmul rate, for every timed row."""
  per = (w.get("flops") or {}).get("flops_per_member_step")
  if not per:
    return
  w["flops"]["limit_member_steps_per_s"] = matmul["flops_per_s"] / per
  in_matmuls = w["flops"].get("matmul_flops_per_member_step")
  for row in w["rows"]:
    if "member_steps_per_s" in row:
      row["achieved_flops_per_s"] = per * row["member_steps_per_s"]
      row["fraction_of_matmul"] = row["achieved_flops_per_s"] / matmul["flops_per_s"]
    alone = row.get("matmuls_alone")
    if alone and in_matmuls:
      # The epoch takes at least its products' time alone; its FLOPs are
      # theirs plus the rest (activations, optimizer): the share it could
      # reach if everything but the products took no time.
      row["fraction_ceiling"] = alone["fraction_of_matmul"] * per / in_matmuls


# ---------------------------------------------------------------------------
# Levers (in this process) and programs (in a child): engine settings side by side.


def levers_part(opts: Options, log: Callable[[str], None]) -> dict[str, Any]:
  """The engine's speed levers on one population, each variant timed in turn.

  Every variant is the workload's group spec with some fields replaced
  (:class:`hpjax.engine.GroupSpec`), its state built by its own init; the
  optimizer family fixed per group trains every member with adam (a
  structural family serves one family).
  """
  import jax  # pylint: disable=g-import-not-at-top

  from experiments.examples import fast_cnn  # pylint: disable=g-import-not-at-top
  from hpjax import engine  # pylint: disable=g-import-not-at-top

  w = bench_lib.load_workload(opts.lever_workload, opts)
  structural = model_structure(w, opts.conv_impls[0], opts.compute_dtypes[0])
  b, p, steps = opts.batch_size, opts.lever_population, opts.steps_for(w.name)
  pop = bench_lib.one_member_population(w.data, structural, b)
  x, y = bench_lib.training_slice(w.data, steps, b)
  mixed = bench_lib.members(p, b, structural)
  spec = pop.groups[0].fns.spec  # the members' families compiled in
  all_adam = [m.replace(optimizer="adam") for m in mixed]
  relu_only = tuple((n, ("relu",) if n == "activation" else c) for n, c in spec.traced)
  variants = {
    "default (own order, member_chunk=None)": ({}, mixed),
    "optimizer_families=adam (structural; members all adam)": (
      {"optimizer_families": ("adam",)},
      all_adam,
    ),
    # The bound a per-member lax.switch over activations and optimizer families
    # could reach: one activation and one family compiled, nothing selected.
    "one activation, one family (relu, adam; members all relu + adam)": (
      {"optimizer_families": ("adam",), "traced": relu_only},
      [m.replace(optimizer="adam", activation="relu") for m in mixed],
    ),
    # The same CNN as a user writes it (experiments/examples/fast_cnn.py):
    # hpjax.nn.Conv with its default impl, beside the built-in model.
    "model: the same CNN, a user's (hpjax.nn.Conv, impl='auto')": (
      {"model": fast_cnn.FastCNN, "structural": ()},
      mixed,
    ),
    "shared_order=True": ({"shared_order": True}, mixed),
    "member_chunk=4": ({"member_chunk": 4}, mixed),
    "member_chunk=8": ({"member_chunk": 8}, mixed),
    "member_chunk=16": ({"member_chunk": 16}, mixed),
    "member_chunk=0 (all members at once)": ({"member_chunk": 0}, mixed),
    "shared_order=True, member_chunk=0": ({"shared_order": True, "member_chunk": 0}, mixed),
  }
  calls, rows = {}, {}
  for name, (changes, group_members) in variants.items():
    variant_spec = dataclasses.replace(spec, **changes)
    (state,) = bench_lib.init_states(pop, group_members, p, spec=variant_spec)
    fns = engine.group_functions(variant_spec)
    prep = Prepared(p, steps, bench_lib.compile_epoch(fns.train_epoch, state, x, y), [state], x, y)
    calls[name] = prep.call()
    first = bench_lib.seconds(calls[name])  # warm-up: allocations, caches
    rows[name] = {
      "variant": name,
      "spec_changes": {  # JSON: a model factory by its import string
        k: f"{v.__module__}:{v.__qualname__}" if callable(v) else v for k, v in changes.items()
      },
      "compile_s": prep.compiled.compile_s,
      "first_call_s": first,
    }
    log(f"levers: {name} compiled in {prep.compiled.compile_s:.1f} s")
  times = bench_lib.in_turn(calls, opts.lever_rounds)
  for name, ts in times.items():
    rates = [p * steps / t for t in ts]
    rows[name].update(call_s=ts, member_steps_per_s=max(rates), rounds_member_steps_per_s=rates)
  base = rows[next(iter(rows))]["member_steps_per_s"]
  for r in rows.values():
    r["vs_default"] = r["member_steps_per_s"] / base
    log(
      f"levers: {r['variant']}: {r['member_steps_per_s']:.1f} member-steps/s (best of "
      f"{len(r['call_s'])})"
    )
  return {
    "workload": w.name,
    "description": w.description,
    "population": p,
    "steps_per_call": steps,
    "batch_size": b,
    "backend": jax.default_backend(),
    "rows": list(rows.values()),
  }


def stream_part(opts: Options, log: Callable[[str], None]) -> dict[str, Any]:
  """A streamed epoch against the in-memory one, same members, data and shared order."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  import hpjax  # pylint: disable=g-import-not-at-top

  w = bench_lib.load_workload(opts.stream_workload, opts)
  structural = model_structure(w, opts.conv_impls[0], opts.compute_dtypes[0])
  b, p, data = opts.batch_size, opts.stream_population, w.data
  x, y = np.asarray(data.x_train), np.asarray(data.y_train)
  steps = x.shape[0] // b
  members = bench_lib.members(p, b, structural)

  def train(epoch):
    # A user's host pipeline: a new order every epoch, batches gathered on the host.
    perm = np.random.default_rng(epoch).permutation(x.shape[0])
    for i in range(steps):
      idx = perm[i * b : (i + 1) * b]
      yield x[idx], y[idx]

  def stream(k):
    return hpjax.data.Stream(
      train,
      val=(data.x_val, data.y_val),
      test=(data.x_test, data.y_test),
      steps_per_epoch=steps,
      batch_size=b,
      mean=data.mean,
      std=data.std,
      steps_per_call=k,
      name=w.name,
    )

  kw = dict(candidates={"activation": ACTS}, mesh=None)
  variants = {
    "in memory (shared_order=True)": (
      None,
      lambda: hpjax.Population(members, data, shared_order=True, **kw),
    )
  }
  for k in opts.stream_calls:
    if k <= steps:
      variants[f"stream, steps_per_call={k}"] = (
        k,
        functools.partial(lambda k: hpjax.Population(members, stream(k), **kw), k),
      )
  pops, rows = {}, {}
  for name, (k, build) in variants.items():
    start = time.perf_counter()
    pops[name] = build()
    pops[name].train_epoch()  # compiles; first allocations
    rows[name] = {
      "variant": name,
      "steps_per_call": k,
      "calls_per_epoch": 1 if k is None else -(-steps // k),
      "build_and_first_epoch_s": time.perf_counter() - start,
      "epoch_s": [],
      "cpu_s": [],
    }
    log(f"stream: {name} built and warmed up in {rows[name]['build_and_first_epoch_s']:.1f} s")
  for _ in range(opts.stream_rounds):
    for name, pop in pops.items():
      wall, cpu = time.perf_counter(), time.process_time()
      pop.train_epoch()  # returns host metrics: the epoch has finished
      rows[name]["epoch_s"].append(time.perf_counter() - wall)
      rows[name]["cpu_s"].append(time.process_time() - cpu)
  for r in rows.values():
    r["rounds_member_steps_per_s"] = [p * steps / t for t in r["epoch_s"]]
    r["member_steps_per_s"] = max(r["rounds_member_steps_per_s"])
    r["cpu_s_per_epoch"] = statistics.median(r["cpu_s"])
  base = rows[next(iter(rows))]
  for r in rows.values():
    r["vs_in_memory"] = r["member_steps_per_s"] / base["member_steps_per_s"]
    log(
      f"stream: {r['variant']}: {r['member_steps_per_s']:.1f} member-steps/s (best of "
      f"{len(r['epoch_s'])}), {r['cpu_s_per_epoch']:.1f} CPU s per epoch"
    )
  for r in rows.values():
    if r["steps_per_call"] is None:
      continue
    host = []
    for _ in range(opts.stream_rounds):
      start = time.perf_counter()
      for _, _, xs, ys in stream(r["steps_per_call"]).device_calls(0):
        jax.block_until_ready((xs, ys))
      host.append(time.perf_counter() - start)
    r["host_side_epoch_s"] = min(host)
  return {
    "workload": w.name,
    "description": w.description,
    "population": p,
    "steps_per_epoch": steps,
    "batch_size": b,
    "backend": jax.default_backend(),
    "rows": list(rows.values()),
  }


def child_programs(opts: Options, log: Callable[[str], None] = print) -> dict[str, Any]:
  """In a fresh process: compile and call times of init and evaluate, validation variants.

  The group's ``init`` and ``evaluate`` are compiled with XLA's defaults and
  with :data:`hpjax.engine.INIT_COMPILER_OPTIONS`, alternating, and called
  in turn; then the validation pass at several paddings, member chunks and
  eval batch sizes. The process runs without a persistent compilation cache (JAX decides once
  per process whether to use one) and JAX's in-memory caches are cleared
  before every compile: nothing compiled earlier may answer one.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  import hpjax  # pylint: disable=g-import-not-at-top
  from hpjax import engine  # pylint: disable=g-import-not-at-top

  w = bench_lib.load_workload(opts.programs_workload, opts)
  structural = model_structure(w, opts.conv_impls[0], opts.compute_dtypes[0])
  p = opts.programs_population
  pop = hpjax.Population(
    bench_lib.members(p, opts.batch_size, structural),
    w.data,
    candidates={"activation": ACTS},
    mesh=None,
  )
  (group,) = pop.groups
  fns, state, data = group.fns, group.state, w.data
  keys = engine.member_keys(pop.seed, range(p))
  hp = pop.hparam_arrays(pop.members)
  e = pop.eval_batch_size
  own = engine.pad_eval(data.x_val, data.y_val, e)
  programs = {
    "init": (fns.init, (keys, hp)),
    "evaluate (validation set)": (fns.evaluate, (state, *own)),
  }
  settings = {"XLA default": {}, "backend optimisations off": engine.init_compiler_options() or {}}
  out: dict[str, Any] = {
    "workload": w.name,
    "description": w.description,
    "population": p,
    "backend": jax.default_backend(),
    "persistent_cache": jax.config.jax_enable_compilation_cache,
    "compiles": [],
  }
  for name, (fn, args) in programs.items():
    raw = fn.__wrapped__  # the pure function under the group's jit
    compile_s: dict[str, list[float]] = {k: [] for k in settings}
    executables = {}
    for _ in range(opts.programs_rounds):
      for key, options in settings.items():
        jax.clear_caches()  # no in-memory executable either
        lowered = jax.jit(raw, compiler_options=options or None).trace(*args).lower()
        start = time.perf_counter()
        executables[key] = lowered.compile()
        compile_s[key].append(time.perf_counter() - start)
    results = {k: jax.block_until_ready(ex(*args)) for k, ex in executables.items()}
    times = bench_lib.in_turn(
      {k: functools.partial(ex, *args) for k, ex in executables.items()}, opts.programs_reps
    )
    a, b = (jax.tree.leaves(results[k]) for k in settings)
    diff = max(
      (
        float(np.max(np.abs(np.asarray(u, np.float64) - np.asarray(v, np.float64))))
        for u, v in zip(a, b)
        if np.issubdtype(np.asarray(u).dtype, np.floating)
      ),
      default=0.0,
    )
    for key in settings:
      out["compiles"].append(
        {
          "program": name,
          "setting": key,
          "compile_s": min(compile_s[key]),
          "compiles_s": compile_s[key],
          "call_s": statistics.median(times[key]),
          "calls_s": times[key],
          "max_difference": diff,
        }
      )
      log(
        f"programs: {name}, {key}: compile {min(compile_s[key]):.2f} s, call "
        f"{1e3 * statistics.median(times[key]):.1f} ms"
      )

  # The validation pass: padded to its own length (what a population does)
  # or to the test set's (one program for both splits), in the engine's
  # member chunks or all members at once; then other eval batch sizes.
  at_once = engine.group_functions(dataclasses.replace(fns.spec, member_chunk=0)).evaluate
  longer = engine.pad_eval(data.x_val, data.y_val, e, max(data.num_val, data.num_test))
  variants = {
    "own length, member_chunk=None (the engine's)": (fns.evaluate, own),
    "own length, all members at once": (at_once, own),
    "test set's length, all members at once": (at_once, longer),
  }
  out["validation"] = _evaluate_in_turn(variants, state, opts.programs_reps, ref=list(variants)[-1])
  by_size = {}
  for size in opts.eval_batches:
    spec = dataclasses.replace(fns.spec, eval_batch_size=size)
    by_size[str(size)] = (
      engine.group_functions(spec).evaluate,
      engine.pad_eval(data.x_val, data.y_val, size),
    )
  out["eval_batches"] = _evaluate_in_turn(
    by_size, state, opts.programs_reps, ref_loss=out["validation"][-1]["loss"]
  )
  out.update(eval_batch_size=e, num_val=data.num_val, num_test=data.num_test)
  return out


def _evaluate_in_turn(
  variants, state, reps: int, ref: str | None = None, ref_loss=None
) -> list[dict[str, Any]]:
  """Calls each ``(evaluate, padded split)`` in turn; the loss difference is to ``ref``'s."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  results = {k: jax.block_until_ready(f(state, *a)) for k, (f, a) in variants.items()}
  times = bench_lib.in_turn(
    {k: functools.partial(f, state, *a) for k, (f, a) in variants.items()}, reps
  )
  ref_loss = np.asarray(results[ref]["loss"] if ref_loss is None else ref_loss)
  rows = []
  for key, (_, a) in variants.items():
    loss = np.asarray(results[key]["loss"])
    rows.append(
      {
        "variant": key,
        "rows_per_member": int(a[0].shape[0]),
        "call_s": statistics.median(times[key]),
        "calls_s": times[key],
        "loss": loss.tolist(),
        "max_loss_difference": float(np.max(np.abs(loss - ref_loss))),
      }
    )
  return rows


# ---------------------------------------------------------------------------
# Child processes: compile time, memory, devices, time to accuracy.


def child_compile(opts: Options) -> dict[str, Any]:
  """In a fresh process: build the config's population as a run does, train two epochs.

  ``hpjax.tuner.from_config`` (validation, data, members) then
  ``hpjax.tuner.build_population``: the population a run trains, without
  its logging and checkpoints.
  """
  import jax  # pylint: disable=g-import-not-at-top

  from hpjax import tuner  # pylint: disable=g-import-not-at-top

  sums = bench_lib.compile_events()
  exp = tuner.from_config(bench_lib.load_config(opts.compile_config, opts.compile_overrides))
  jax.block_until_ready(exp.data.x_train)
  t0 = time.perf_counter()
  pop = tuner.build_population(exp, batch_mode=opts.compile_batch_mode)
  jax.block_until_ready([g.state for g in pop.groups])
  t1 = time.perf_counter()
  pop.train_epoch()
  pop.evaluate("val")  # host arrays: synchronous
  t2 = time.perf_counter()
  pop.train_epoch()
  pop.evaluate("val")
  t3 = time.perf_counter()
  build, first, steady = t1 - t0, t2 - t1, t3 - t2
  return {
    "config": os.path.relpath(opts.compile_config, bench_lib.ROOT),
    "overrides": list(opts.compile_overrides),
    "batch_mode": opts.compile_batch_mode,
    "members": pop.size,
    "groups": len(pop.groups),
    "build_s": build,
    "first_epoch_s": first,
    "steady_epoch_s": steady,
    "compile_s": build + first - steady,
    "jax_events": dict(sums),
    **bench_lib.rss(),
    "device_peak_bytes": bench_lib.device_peak(),
  }


def child_devices(opts: Options, d: int) -> dict[str, Any]:
  """In a fresh process: the device-scaling population split over ``d`` devices, timed.

  Builds ``hpjax.Population`` as the tuner does (no mesh for one device, a
  population mesh over the first ``d`` devices otherwise), then compiles and
  times its group's epoch over the workload's first ``steps x batch``
  examples, as the throughput part does.
  """
  import jax  # pylint: disable=g-import-not-at-top

  import hpjax  # pylint: disable=g-import-not-at-top
  from hpjax import distributed  # pylint: disable=g-import-not-at-top

  devices = jax.devices()
  if d < 1 or d > len(devices):
    raise ValueError(
      f"--child_devices: {d} devices asked for, {len(devices)} present ({devices[0].platform})"
    )
  w = bench_lib.load_workload(opts.device_workload, opts)
  structural = model_structure(w, opts.conv_impls[0], opts.compute_dtypes[0])
  steps, b, p = opts.steps_for(w.name), opts.batch_size, opts.device_population
  x, y = bench_lib.training_slice(w.data, steps, b)
  mesh = distributed.population_mesh(devices[:d]) if d > 1 else None
  start = time.perf_counter()
  pop = hpjax.Population(
    bench_lib.members(p, b, structural), w.data, candidates={"activation": ACTS}, mesh=mesh
  )
  (group,) = pop.groups
  state = jax.block_until_ready(group.state)
  build_s = time.perf_counter() - start
  if mesh is not None:
    x, y = distributed.put((x, y), distributed.replicated(mesh))
  compiled = bench_lib.compile_epoch(group.fns.train_epoch, state, x, y)
  per_device = jax.tree.leaves(state)[0].shape[0] // d
  row = bench_lib.time_calls(Prepared(p, steps, compiled, [state], x, y).call(), p * steps, opts)
  return {
    "devices": d,
    "platform": devices[0].platform,
    "device_kind": devices[0].device_kind,
    "workload": w.name,
    "description": w.description,
    "population": p,
    "padded_population": per_device * d,
    "members_per_device": per_device,
    "steps_per_call": steps,
    "build_s": build_s,
    "compile_s": compiled.compile_s,
    **row,
  }


def child_memory(opts: Options, p: int) -> dict[str, Any]:
  """In a fresh process: a P-member population of the memory workload, one training call.

  The peak RSS is reset (where Linux allows) after the state is built and
  the epoch compiled, so that it is the peak of training itself: the
  resident process, the population state, the data and XLA's temporaries.
  """
  import gc  # pylint: disable=g-import-not-at-top

  import jax  # pylint: disable=g-import-not-at-top

  sums = bench_lib.compile_events()
  w = bench_lib.load_workload(opts.memory_workload, opts)
  structural = model_structure(w, opts.conv_impls[0], opts.compute_dtypes[0])
  jax.block_until_ready(w.data.x_train)
  before = bench_lib.rss()
  pop = bench_lib.one_member_population(w.data, structural, opts.batch_size)
  c = prepare(
    pop, structural, p, dataclasses.replace(opts, alone_members=1), opts.steps_for(w.name)
  )
  jax.block_until_ready(c.states)
  gc.collect()
  resident = bench_lib.rss()
  reset = bench_lib.reset_peak_rss()
  bench_lib.seconds(c.call())
  after = bench_lib.rss()
  return {
    "workload": w.name,
    "description": w.description,
    "population": p,
    "state_bytes": bench_lib.tree_bytes(c.states[0]),
    "xla_temp_bytes": c.compiled.temp_bytes,
    "rss_before_bytes": before.get("rss_bytes", before["maxrss_bytes"]),
    "rss_resident_bytes": resident.get("rss_bytes", resident["maxrss_bytes"]),
    "peak_rss_bytes": after.get("hwm_bytes", after["maxrss_bytes"]),
    "peak_is_training_only": reset,
    "rss_after_bytes": after.get("rss_bytes", after["maxrss_bytes"]),
    "maxrss_bytes": after["maxrss_bytes"],
    "device_peak_bytes": bench_lib.device_peak(),
    "backend_compile_s": sums["backend_compile_s"],
    "cache_hits": sums["cache_hits"],
  }


def tta_hpjax(
  opts: Options, cache: str, seed: int, log: Callable[[str], None] = print
) -> dict[str, Any]:
  """hpjax's launcher on ``opts.tta_config`` and ``seed``, as a whole process with cache ``cache``.

  The wall time is the process's (start, imports, data, compiles, training,
  the test evaluation, the export). The time to the target adds the
  process's seconds before the first epoch to the epoch's ``wall_s``.
  """
  workdir = tempfile.mkdtemp(prefix="hpjax_tta_")
  try:
    wall, r = bench_lib.whole_process(
      [
        sys.executable,
        "-m",
        "experiments.tune",
        f"--config={opts.tta_config}",
        f"--workdir={workdir}",
        f"--jax_cache_dir={cache}",
        f"--config.seed={seed}",
        f"--config.population={opts.tta_population}",
        f"--config.epochs={opts.tta_epochs}",
        "--config.report=False",
        "--config.tensorboard=False",
        "--config.progress=False",
      ]
    )
    if r.returncode != 0:
      raise RuntimeError(f"hpjax's tta run failed (exit {r.returncode}): {r.stderr[-2000:]}")
    with open(os.path.join(workdir, "summary.json")) as f:
      summary = json.load(f)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      rows = [json.loads(l) for l in f if l.strip()]
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  t = summary["timings"]
  # Before the first epoch: the process's start and imports, then the run's
  # config, data, build and start phases.
  before = (wall - t["total_s"]) + sum(
    t["phases_s"].get(k, 0.0) for k in ("config_and_data", "build", "start")
  )
  epoch_wall = {}
  for row in rows:
    epoch_wall[row["epoch"]] = max(epoch_wall.get(row["epoch"], 0.0), row["wall_s"])
  hits = sorted(row["epoch"] for row in rows if row["val_accuracy"] >= opts.tta_target)
  log(f"hpjax, seed {seed}: {wall:.1f} s, best val {summary['val']['accuracy']:.4f}")
  return {
    "tuner": f"hpjax ({opts.tta_config})",
    "members": opts.tta_population,
    "epochs": opts.tta_epochs,
    "target": opts.tta_target,
    "wall_s": wall,
    "member_epochs": len(rows),
    "time_to_target_s": before + epoch_wall[hits[0]] if hits else None,
    "epoch_reached": hits[0] if hits else None,
    "best_val_accuracy": max(row["val_accuracy"] for row in rows),
    "best_member": {
      "val_accuracy": summary["val"]["accuracy"],
      "test_accuracy": summary["test"]["accuracy"],
      "hyperparameters": summary["hyperparameters"],
    },
    "timings": t,
    "process_overhead_s": wall - t["total_s"],
  }


def tta_optuna(
  opts: Options, threads: int, seed: int, log: Callable[[str], None] = print
) -> dict[str, Any]:
  """Optuna + PyTorch on the same task, budget and ``seed``, as a whole process."""
  out = tempfile.mktemp(prefix="optuna_tta_", suffix=".json")
  try:
    wall, r = bench_lib.whole_process(
      [
        sys.executable,
        "-m",
        "experiments.optuna_torch",
        f"--trials={opts.tta_trials}",
        f"--epochs={opts.tta_epochs}",
        f"--target={opts.tta_target}",
        f"--seed={seed}",
        f"--torch_device={opts.torch_device}",
        f"--torch_threads={threads}",
        f"--out={out}",
      ]
    )
    if r.returncode != 0:
      raise RuntimeError(f"Optuna's tta run failed (exit {r.returncode}): {r.stderr[-2000:]}")
    with open(out) as f:
      o = json.load(f)
  finally:
    if os.path.exists(out):
      os.remove(out)
  inner = o["wall_s"]
  o.update(wall_s=wall, process_overhead_s=wall - inner, threads=threads)
  if o["time_to_target_s"] is not None:
    o["time_to_target_s"] += wall - inner  # its clock starts after the imports
  log(f"optuna, seed {seed}: {wall:.1f} s, best val {o['best_val_accuracy']:.4f}")
  return o


def programs_part(opts: Options, log: Callable[[str], None]) -> dict[str, Any]:
  """The programs child (a fresh process without a persistent compilation cache)."""
  out = bench_lib.run_child("programs", opts)
  for r in out["compiles"]:
    log(
      f"programs: {r['program']}, {r['setting']}: compile {r['compile_s']:.2f} s, call "
      f"{1e3 * r['call_s']:.1f} ms"
    )
  return out


def compile_part(opts: Options, log: Callable[[str], None]) -> dict[str, Any]:
  """Two compile children sharing one new persistent cache: cold, then warm."""
  cache = tempfile.mkdtemp(prefix="hpjax_compile_cache_")
  try:
    child_opts = dataclasses.replace(opts, cache_dir=cache)
    cold = bench_lib.run_child("compile", child_opts)
    log(f"compile cold: {cold['compile_s']:.1f} s")
    warm = bench_lib.run_child("compile", child_opts)
    log(f"compile warm: {warm['compile_s']:.1f} s")
  finally:
    shutil.rmtree(cache, ignore_errors=True)
  return {"cold": cold, "warm": warm}


def memory_part(opts: Options, log: Callable[[str], None]) -> dict[str, Any]:
  """One memory child per P; line fits of the bytes in P."""
  rows = []
  for p in sorted(set(opts.memory_populations or opts.populations)):
    r = bench_lib.run_child("memory", opts, [f"--child_population={p}"])
    rows.append(r)
    log(
      f"memory P={p}: state {r['state_bytes'] / 2**20:.2f} MiB, peak RSS "
      f"{r['peak_rss_bytes'] / 2**20:.0f} MiB"
    )
  return {"workload": opts.memory_workload, "rows": rows, "linearity": linearity(rows)}


def devices_part(opts: Options, log: Callable[[str], None]) -> dict[str, Any]:
  """One child per device count and round; speedup and efficiency against one device."""
  import jax  # pylint: disable=g-import-not-at-top

  backend = jax.default_backend()
  counts = sorted(set(opts.device_counts))
  out: dict[str, Any] = {
    "workload": opts.device_workload,
    "population": opts.device_population,
    "backend": backend,
    "rows": [],
  }
  if backend == "cpu":
    out["simulated"] = True
    out["note"] = (
      f"simulated CPU devices (--xla_force_host_platform_device_count) sharing "
      f"{os.cpu_count()} cores: no hardware is added, so a speedup only says that D "
      "programs side by side use the cores better than XLA's threads in one"
    )
  else:
    out["simulated"] = False
    present = jax.local_device_count()
    skipped = [d for d in counts if d > present]
    counts = [d for d in counts if d <= present]
    if skipped:
      out["note"] = f"{len(skipped)} device count(s) {skipped} skipped: {present} present"
  rounds: dict[int, list[dict[str, Any]]] = {d: [] for d in counts}
  for k in range(opts.device_rounds):
    # In turn, so that a drift in the machine's load touches every D alike.
    for d in counts:
      env = None
      if backend == "cpu":
        xla_flags = " ".join(
          f
          for f in os.environ.get("XLA_FLAGS", "").split()
          if not f.startswith("--xla_force_host_platform_device_count")
        )
        env = {
          "XLA_FLAGS": f"{xla_flags} --xla_force_host_platform_device_count={d}".strip(),
          "JAX_NUM_CPU_DEVICES": str(d),
        }
      r = bench_lib.run_child("devices", opts, [f"--child_devices={d}"], env=env)
      rounds[d].append(r)
      log(
        f"devices D={d} (round {k + 1}): {r['member_steps_per_s']:.1f} member-steps/s "
        f"({r['members_per_device']} members per device, compile {r['compile_s']:.1f} s)"
      )
  for d in counts:
    best = dict(max(rounds[d], key=lambda r: r["member_steps_per_s"]))
    best["rounds_member_steps_per_s"] = [r["member_steps_per_s"] for r in rounds[d]]
    # The first round compiled into an empty cache; later rounds may load it.
    best["compile_s"] = rounds[d][0]["compile_s"]
    best["build_s"] = rounds[d][0]["build_s"]
    out["rows"].append(best)
  base = next((r for r in out["rows"] if r["devices"] == 1), None)
  for r in out["rows"]:
    if base is not None:
      r["speedup"] = r["member_steps_per_s"] / base["member_steps_per_s"]
      r["efficiency"] = r["speedup"] / r["devices"]
  return out


def linearity(rows: Sequence[dict]) -> dict[str, Any]:
  """How far state bytes and peak RSS are from a straight line in P."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  if len(rows) < 2:
    return {}
  p = np.array([r["population"] for r in rows], np.float64)
  out = {}
  values = {
    "state_bytes": [r["state_bytes"] for r in rows],
    "peak_rss_bytes": [r["peak_rss_bytes"] for r in rows],
    "rss_growth_bytes": [r["rss_after_bytes"] - r["rss_before_bytes"] for r in rows],
  }
  for key, v in values.items():
    v = np.array(v, np.float64)
    slope, intercept = np.polyfit(p, v, 1)
    fit = slope * p + intercept
    residual = np.max(np.abs(v - fit) / np.maximum(np.abs(v), 1.0))
    out[key] = {
      "bytes_per_member": float(slope),
      "intercept_bytes": float(intercept),
      "max_relative_residual": float(residual),
    }
  return out


def tta_part(opts: Options, log: Callable[[str], None]) -> dict[str, Any]:
  """Per seed: hpjax cold and warm (whole processes sharing one new cache), then Optuna + PyTorch.

  Every tuner runs as its own process, timed from the command to its end:
  what a user waits for. Returns ``runs`` (one entry per seed: ``seed``,
  ``hpjax``, ``hpjax_warm``, ``optuna``) and ``mean`` (per tuner, over the
  seeds).
  """
  optuna = not (opts.torch == "off" or (opts.torch == "auto" and not _torch_available()))
  threads = opts.torch_threads
  if optuna and not threads:
    from experiments import optuna_torch  # pylint: disable=g-import-not-at-top
    from experiments import torch_baseline  # pylint: disable=g-import-not-at-top

    d = optuna_torch.load_arrays(28, opts.tta_seeds[0])
    threads, _ = probe_torch_threads(
      d["x_train"],
      d["y_train"],
      dict(activation="relu", optimizer="adam", lr=1e-3, batch_size=16),
      torch_baseline.resolve_device(opts.torch_device),
      steps=20,
    )
  runs = []
  for seed in opts.tta_seeds:
    run: dict[str, Any] = {"seed": seed}
    cache = tempfile.mkdtemp(prefix="hpjax_tta_cache_")
    try:
      for key, state in (("hpjax", "cold"), ("hpjax_warm", "warm")):
        run[key] = {**tta_hpjax(opts, cache, seed, log), "cache": state}
    finally:
      shutil.rmtree(cache, ignore_errors=True)
    if optuna:
      run["optuna"] = tta_optuna(opts, threads, seed, log)
    runs.append(run)
  out: dict[str, Any] = {"runs": runs, "mean": tta_means(runs)}
  if not optuna:
    out["optuna_note"] = "Optuna + PyTorch skipped (--torch=off or not installed)"
  return out


def _tuned(row: dict[str, Any]) -> dict[str, Any]:
  """The model a tuner returns: hpjax's best member, Optuna's best trial."""
  return row.get("best_member") or row["best_trial"]


def tta_means(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
  """Per tuner, the mean over seeds of its wall time, member-epochs and tuned model's accuracies."""
  out = {}
  for key in ("hpjax", "hpjax_warm", "optuna"):
    rows = [r[key] for r in runs if key in r]
    if rows:
      out[key] = {
        "seeds": len(rows),
        "wall_s": statistics.mean(r["wall_s"] for r in rows),
        "member_epochs": statistics.mean(r["member_epochs"] for r in rows),
        "val_accuracy": statistics.mean(_tuned(r)["val_accuracy"] for r in rows),
        "test_accuracy": statistics.mean(_tuned(r)["test_accuracy"] for r in rows),
        "peak_val_accuracy": statistics.mean(r["best_val_accuracy"] for r in rows),
      }
  return out


# ---------------------------------------------------------------------------
# The run.


def _meta(opts: Options, prog: str) -> dict[str, Any]:
  import jax  # pylint: disable=g-import-not-at-top

  device = jax.devices()[0]
  return {
    "date": datetime.datetime.now().isoformat(timespec="seconds"),
    "host": platform.node(),
    "machine": platform.machine(),
    "processor": _cpu_name(),
    "cpu_count": os.cpu_count(),
    "python": platform.python_version(),
    "jax": jax.__version__,
    "backend": jax.default_backend(),
    "device": device.device_kind,
    "devices": jax.device_count(),
    "load_avg_start": list(os.getloadavg()),
    "command": f"python -m {prog} " + " ".join(opts.argv),
  }


def _cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def run(
  opts: Options, log: Callable[[str], None] = print, prog: str = "experiments.benchmark"
) -> dict[str, Any]:
  """Runs the chosen parts; returns every result as one JSON-able dict.

  Args:
    opts: what to run and at which sizes.
    log: progress lines.
    prog: the module that was launched (recorded in the command line).

  Returns:
    ``meta``, ``options``, then one entry per part run (``matmul``,
    ``workloads``, ``levers``, ``programs``, ``stream``, ``compile``,
    ``memory``, ``devices``, ``tta``), and ``targets``.
  """
  opts.validate()
  import jax  # pylint: disable=g-import-not-at-top

  own_cache = opts.cache_dir is None
  cache_dir = opts.cache_dir or tempfile.mkdtemp(prefix="hpjax_bench_cache_")
  opts = dataclasses.replace(opts, cache_dir=cache_dir)
  saved = {
    k: getattr(jax.config, k)
    for k in ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
  }
  # Every compile goes to this cache, so the memory and devices children
  # reuse the programs compiled here (their compile time is not what they
  # measure). (A process that already compiled with another cache keeps
  # that one: JAX fixes the cache at its first compile; pass that one as
  # cache_dir.)
  jax.config.update("jax_compilation_cache_dir", cache_dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  result: dict[str, Any] = {
    "meta": _meta(opts, prog),
    "options": _jsonable(dataclasses.asdict(opts)),
  }
  parts = set(opts.parts)
  start = time.perf_counter()
  try:
    if "flops" in parts:
      rates = _matmul_rates(opts, log)  # float32's at the top, the others under "dtypes"
      result["matmul"] = {**rates.pop("float32"), "dtypes": rates}
    if {"throughput", "flops"} & parts:
      result["workloads"] = [e for name in opts.workloads for e in throughput_part(name, opts, log)]
    if "flops" in parts:
      # The machine's load drifts: the rate is the best of two measurements,
      # before and after the throughput part.
      mm = result["matmul"]
      for again in _matmul_rates(opts, log, "again").values():
        m = mm if again["dtype"] == "float32" else mm["dtypes"][again["dtype"]]
        m["flops_per_s_start"], m["flops_per_s_end"] = m["flops_per_s"], again["flops_per_s"]
        m["flops_per_s"] = max(m["flops_per_s"], again["flops_per_s"])
      for w in result.get("workloads", []):
        _add_fractions(w, mm["dtypes"].get(w.get("compute_dtype", "float32"), mm))
    if "levers" in parts:
      result["levers"] = levers_part(opts, log)
    if "programs" in parts:
      result["programs"] = programs_part(opts, log)
    if "stream" in parts:
      result["stream"] = stream_part(opts, log)
    if "compile" in parts:
      result["compile"] = compile_part(opts, log)
    if "memory" in parts:
      result["memory"] = memory_part(opts, log)
    if "devices" in parts:
      result["devices"] = devices_part(opts, log)
    if "tta" in parts:
      result["tta"] = tta_part(opts, log)
  finally:
    for k, v in saved.items():
      jax.config.update(k, v)
    if own_cache:
      shutil.rmtree(cache_dir, ignore_errors=True)
  result["meta"]["load_avg_end"] = list(os.getloadavg())
  result["meta"]["wall_s"] = time.perf_counter() - start
  result["targets"] = targets(result)
  return result


# ---------------------------------------------------------------------------
# Targets and tables.


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
  """The project's targets on the measured numbers (met or missed)."""
  out = []

  def add(name, value, goal, met, unit=""):
    out.append({"target": name, "measured": value, "goal": goal, "met": bool(met), "unit": unit})

  for w in result.get("workloads", []):
    if w["name"] != "digits28":
      continue
    impl = "" if w.get("conv_impl", "slices") == "slices" else f", conv_impl={w['conv_impl']}"
    timed = [r for r in w["rows"] if "fraction_of_matmul" in r]
    if timed:
      best = max(timed, key=lambda r: r["fraction_of_matmul"])
      fr, p = best["fraction_of_matmul"], best["population"]
      add(f"fraction of the matmul rate (28x28, best P: {p}{impl})", fr, ">= 0.50", fr >= 0.5)
      if "fraction_ceiling" in best:
        # What the same epoch would reach if only its matrix products took
        # time: below the goal, no change outside the products can meet it.
        c = best["fraction_ceiling"]
        add(f"its ceiling: the epoch's matmuls alone (P={p}{impl})", c, ">= 0.50", c >= 0.5)
  c = result.get("compile")
  if c:
    add(
      "compile of the default config, cold cache",
      c["cold"]["compile_s"],
      "<= 15 s",
      c["cold"]["compile_s"] <= 15.0,
      "s",
    )
    add(
      "compile of the default config, warm cache",
      c["warm"]["compile_s"],
      "<= 3 s",
      c["warm"]["compile_s"] <= 3.0,
      "s",
    )
  m = result.get("memory")
  if m and m.get("linearity"):
    res = m["linearity"]["state_bytes"]["max_relative_residual"]
    add(
      "population state linear in P (max relative residual of a line fit)",
      res,
      "<= 0.01",
      res <= 0.01,
    )
  t = result.get("tta")
  if t and t.get("runs"):
    n = len(t["runs"])
    seeds = f"{n} seed{'s' if n != 1 else ''}"
    for key in ("hpjax", "hpjax_warm"):
      both = [r for r in t["runs"] if key in r and "optuna" in r]
      ratios = [r[key]["wall_s"] / r["optuna"]["wall_s"] for r in both]
      if ratios:
        cache = both[0][key].get("cache", "cold")
        worst = max(ratios)
        add(
          f"whole-process wall time, hpjax ({cache} cache) / Optuna+PyTorch, worst of {seeds}",
          worst,
          "<= 1",
          worst <= 1,
          "x",
        )
    val = t["mean"]["hpjax"]["val_accuracy"]
    add(f"val accuracy of hpjax's tuned model, mean of {seeds}", val, ">= 0.986", val >= 0.986)
  return out


def _fmt_bytes(v: float | None) -> str:
  return "n/a" if v is None else f"{v / 2**20:.1f} MiB"


def _fmt_s(v: float | None) -> str:
  return "not reached" if v is None else f"{v:.1f} s"


def _device_name(platform_name: str, kind: str) -> str:
  return platform_name if kind.lower() == platform_name.lower() else f"{platform_name} {kind}"


def _jsonable(v):
  if isinstance(v, dict):
    return {str(k): _jsonable(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [_jsonable(x) for x in v]
  return v


def _dtype_text(w: dict[str, Any]) -> str:
  dtype = w.get("compute_dtype", "float32")
  return "" if dtype == "float32" else f", compute_dtype {dtype}"


def _workload_lines(w: dict[str, Any], mm: dict[str, Any] | None) -> list[str]:
  t = w.get("torch")
  f = w.get("flops") or {}
  per = f.get("flops_per_member_step")
  head = (
    f"**{w['description']}**, conv_impl {w.get('conv_impl', 'slices')}"
    f"{_dtype_text(w)}, batch "
    f"{w['batch_size']}, {w['steps_per_call']} steps per call"
  )
  if per:
    head += f"; {per / 1e6:.1f} MFLOP per member-step"
    if f.get("limit_member_steps_per_s"):
      head += f" (arithmetic limit {f['limit_member_steps_per_s']:.0f} member-steps/s)"
  lines = [
    head,
    "",
    "| variant | P | member-steps/s | vs PyTorch | GFLOP/s | of matmul "
    "| ceiling (its matmuls alone) | state | compile |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ]
  for r in w["rows"]:
    if "member_steps_per_s" not in r:
      continue
    name = "hpjax one at a time (jitted epoch)" if r["population"] == 1 else "hpjax population"
    vs = f"{r['vs_torch']:.2f}x" if "vs_torch" in r else "n/a"
    gf = f"{r['achieved_flops_per_s'] / 1e9:.1f}" if "achieved_flops_per_s" in r else "n/a"
    fr = f"{100 * r['fraction_of_matmul']:.1f}%" if "fraction_of_matmul" in r else "n/a"
    ceil = f"{100 * r['fraction_ceiling']:.1f}%" if "fraction_ceiling" in r else "n/a"
    lines.append(
      f"| {name} | {r['population']} | {r['member_steps_per_s']:.1f} | {vs} | {gf} "
      f"| {fr} | {ceil} | {_fmt_bytes(r['state_bytes'])} | {r['compile_s']:.1f} s |"
    )
  if t:
    gf = f"{per * t['member_steps_per_s'] / 1e9:.1f}" if per else "n/a"
    fr = f"{100 * per * t['member_steps_per_s'] / mm['flops_per_s']:.1f}%" if per and mm else "n/a"
    lines.append(
      f"| PyTorch {t['version']} one at a time ({t['device']}, {t['threads']} "
      f"thread{'s' if t['threads'] != 1 else ''}) | 1 "
      f"| {t['member_steps_per_s']:.1f} | 1.00x | {gf} | {fr} | | | |"
    )
  timed = [r for r in w["rows"] if "member_steps_per_s" in r]
  if timed and timed[-1]["population"] > 1:
    big = timed[-1]
    p, steps = big["population"], w["steps_per_call"]
    one = next((r for r in timed if r["population"] == 1), None)
    parts = [f"together {p * steps / big['member_steps_per_s']:.2f} s"]
    if one:
      parts.append(f"hpjax one at a time {p * steps / one['member_steps_per_s']:.2f} s")
    if t:
      parts.append(f"PyTorch one at a time {p * steps / t['member_steps_per_s']:.2f} s")
    lines += ["", f"{p} members x {steps} steps: " + ", ".join(parts)]
  if w.get("torch_note"):
    lines += ["", w["torch_note"]]
  return lines + [""]


def _levers_lines(lev: dict[str, Any]) -> list[str]:
  lines = [
    f"**Levers** ({lev['description']}, {lev['population']} members, batch "
    f"{lev['batch_size']}, {lev['steps_per_call']} steps per call, {lev['backend']}; "
    "variants timed in turn, best call)",
    "",
    "| variant | member-steps/s | vs default | every call | compile |",
    "| --- | --- | --- | --- | --- |",
  ]
  for r in lev["rows"]:
    each = ", ".join(f"{v:.0f}" for v in r["rounds_member_steps_per_s"])
    lines.append(
      f"| {r['variant']} | {r['member_steps_per_s']:.1f} | {r['vs_default']:.2f}x "
      f"| {each} | {r['compile_s']:.1f} s |"
    )
  return lines + [""]


def _stream_lines(st: dict[str, Any]) -> list[str]:
  lines = [
    f"**Streamed from the host vs in memory** ({st['description']}, {st['population']} "
    f"members, batch {st['batch_size']}, {st['steps_per_epoch']} steps per epoch, shared "
    f"order in both, {st['backend']}; variants take turns, best epoch)",
    "",
    "| variant | calls per epoch | member-steps/s | vs in memory | every epoch "
    "| CPU s per epoch (median) | host side alone | build + first epoch |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
  ]
  for r in st["rows"]:
    each = ", ".join(f"{v:.0f}" for v in r["rounds_member_steps_per_s"])
    host = f"{1e3 * r['host_side_epoch_s']:.0f} ms" if "host_side_epoch_s" in r else "-"
    lines.append(
      f"| {r['variant']} | {r['calls_per_epoch']} | {r['member_steps_per_s']:.1f} "
      f"| {r['vs_in_memory']:.2f}x | {each} | {r['cpu_s_per_epoch']:.1f} | {host} "
      f"| {r['build_and_first_epoch_s']:.1f} s |"
    )
  lines += [
    "",
    "Host side alone: an epoch of the stream's batches (the generator, the checks, "
    "the stacking, the transfers) without training.",
  ]
  return lines + [""]


def _programs_lines(prog: dict[str, Any]) -> list[str]:
  lines = [
    f"**Programs around the step** ({prog['description']}, {prog['population']} members, "
    f"{prog['backend']}; no compilation cache)",
    "",
    "| program | setting | compile | call (median) |",
    "| --- | --- | --- | --- |",
  ]
  for r in prog["compiles"]:
    lines.append(
      f"| {r['program']} | {r['setting']} | {r['compile_s']:.2f} s | {1e3 * r['call_s']:.1f} ms |"
    )
  seen = []
  for r in prog["compiles"]:
    if r["program"] not in seen:
      seen.append(r["program"])
      lines.append(
        f"| {r['program']} | largest difference between the two results "
        f"| {r['max_difference']:.2g} | |"
      )
  for title, key in (("validation pass", "validation"), ("eval batch", "eval_batches")):
    lines += [
      "",
      f"| {title} | rows per member | call (median) | largest loss difference |",
      "| --- | --- | --- | --- |",
    ]
    for r in prog[key]:
      lines.append(
        f"| {r['variant']} | {r['rows_per_member']} | {1e3 * r['call_s']:.1f} ms "
        f"| {r['max_loss_difference']:.2g} |"
      )
  lines.insert(
    2,
    f"Validation set {prog['num_val']} examples, test set {prog['num_test']}, "
    f"eval batch {prog['eval_batch_size']}.",
  )
  lines.insert(3, "")
  return lines + [""]


def _seconds_line(h: dict[str, Any]) -> str:
  """Where one hpjax run's seconds went (summary.json's timings)."""
  t = h["timings"]
  phases = dict(t["phases_s"])
  parts = [f"process start and imports {h['process_overhead_s']:.1f}"]
  parts += [f"{k.replace('_', ' ')} {v:.1f}" for k, v in phases.items() if v >= 0.05]
  return (
    f"Where hpjax's {h['wall_s']:.1f} s went ({h.get('cache', 'cold')} cache): "
    + ", ".join(parts)
    + f" s; JAX traced and compiled {t['programs_compiled']} programs "
    f"in {t['jax_trace_s'] + t['jax_compile_s']:.1f} s of them (within build, train, "
    f"evaluate), {t['compile_cache_hits']} from the persistent cache."
  )


def _tta_lines(tta: dict[str, Any]) -> list[str]:
  """The time-to-accuracy table: one row per seed and tuner, then the means over seeds."""
  first = tta["runs"][0]["hpjax"]
  lines = [
    "**Time to accuracy** (digits 28x28; per seed the same splits, search space and budget)",
    "",
    f"| seed | tuner | time to {first['target']} val accuracy "
    "| val accuracy of the tuned model | its test accuracy "
    "| peak val accuracy (any member, any epoch) | member-epochs | wall time | vs Optuna |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ]
  for run in tta["runs"]:
    o = run.get("optuna")
    for key in ("hpjax", "hpjax_warm"):
      h = run.get(key)
      if not h:
        continue
      cache = f", {h['cache']} compilation cache" if h.get("cache") else ""
      vs = f"{h['wall_s'] / o['wall_s']:.2f}x" if o else "n/a"
      lines.append(
        f"| {run['seed']} | {h['tuner']}, {h['members']} members x {h['epochs']} epochs{cache} "
        f"| {_fmt_s(h['time_to_target_s'])} | {h['best_member']['val_accuracy']:.4f} "
        f"| {h['best_member']['test_accuracy']:.4f} | {h['best_val_accuracy']:.4f} "
        f"| {h['member_epochs']} | {h['wall_s']:.1f} s | {vs} |"
      )
    if o:
      lines.append(
        f"| {run['seed']} | {o['tuner']}, {o['trials']} trials x {o['epochs']} epochs "
        f"({o['trials_pruned']} pruned; torch threads {o.get('threads')}) "
        f"| {_fmt_s(o['time_to_target_s'])} | {o['best_trial']['val_accuracy']:.4f} "
        f"| {o['best_trial']['test_accuracy']:.4f} | {o['best_val_accuracy']:.4f} "
        f"| {o['member_epochs']} | {o['wall_s']:.1f} s | |"
      )
  means = tta.get("mean", {})
  if len(tta["runs"]) > 1:
    names = {"hpjax": "hpjax, cold cache", "hpjax_warm": "hpjax, warm cache", "optuna": "Optuna"}
    o = means.get("optuna")
    for key, m in means.items():
      vs = f"{m['wall_s'] / o['wall_s']:.2f}x" if o and key != "optuna" else ""
      lines.append(
        f"| mean of {m['seeds']} | {names[key]} | | {m['val_accuracy']:.4f} "
        f"| {m['test_accuracy']:.4f} | {m['peak_val_accuracy']:.4f} "
        f"| {m['member_epochs']:.0f} | {m['wall_s']:.1f} s | {vs} |"
      )
  if tta.get("optuna_note"):
    lines += ["", tta["optuna_note"]]
  lines.append("")
  for run in tta["runs"]:
    for key in ("hpjax", "hpjax_warm"):
      h = run.get(key)
      if h and h.get("timings"):
        lines += [f"Seed {run['seed']}. " + _seconds_line(h), ""]
  return lines


def markdown(result: dict[str, Any]) -> str:
  """The tables of a result, as markdown."""
  m = result["meta"]
  lines = [
    f"{m['processor']}, {m['cpu_count']} cores, {m['backend']} ({m['device']}), "
    f"jax {m['jax']}; load average {m['load_avg_start'][0]:.2f} at the start, "
    f"{m.get('load_avg_end', [float('nan')])[0]:.2f} at the end; {m['date']}",
    "",
    f"`{m['command']}`",
    "",
  ]
  mm = result.get("matmul")
  if mm:
    for dtype, m in {"float32": mm, **mm.get("dtypes", {})}.items():
      text = (
        f"{dtype} matmul {m['size']}x{m['size']} through XLA (best of {m['reps']}): "
        f"{m['flops_per_s'] / 1e9:.1f} GFLOP/s"
      )
      if "flops_per_s_end" in m:
        text += (
          f" (best of {m['flops_per_s_start'] / 1e9:.1f} before and "
          f"{m['flops_per_s_end'] / 1e9:.1f} after the throughput part)"
        )
      lines += [text, ""]
  for w in result.get("workloads", []):
    lines += _workload_lines(w, mm)
  if result.get("levers"):
    lines += _levers_lines(result["levers"])
  if result.get("programs"):
    lines += _programs_lines(result["programs"])
  if result.get("stream"):
    lines += _stream_lines(result["stream"])
  c = result.get("compile")
  if c:
    lines += [
      f"**Compile of `{c['cold']['config']}`** ({c['cold']['members']} members, "
      f"{c['cold']['groups']} groups): (build + first epoch) - steady epoch, each in a "
      "fresh process with one persistent cache",
      "",
      "| cache | compile | build | first epoch | steady epoch | JAX trace+lower+compile "
      "| JAX compiling (wall) | cache hits | peak RSS |",
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for k in ("cold", "warm"):
      r = c[k]
      ev = r["jax_events"]
      lines.append(
        f"| {k} | {r['compile_s']:.1f} s | {r['build_s']:.1f} s "
        f"| {r['first_epoch_s']:.1f} s | {r['steady_epoch_s']:.2f} s "
        f"| {ev['trace_s'] + ev['lower_s'] + ev['backend_compile_s']:.1f} s "
        f"| {ev.get('compile_wall_s', float('nan')):.1f} s "
        f"| {ev['cache_hits']} | {_fmt_bytes(r.get('hwm_bytes', r['maxrss_bytes']))} |"
      )
    lines.append("")
  mem = result.get("memory")
  if mem:
    lines += [
      f"**Memory** ({mem['workload']}, one process per P, one training call; peak RSS "
      "of the training call, RSS growth from after the data load to after the call)",
      "",
      "| P | population state | per member | XLA temp buffers | peak RSS "
      "| RSS growth | device peak | compiled in the process |",
      "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in mem["rows"]:
      lines.append(
        f"| {r['population']} | {_fmt_bytes(r['state_bytes'])} "
        f"| {r['state_bytes'] / r['population'] / 1024:.0f} KiB "
        f"| {_fmt_bytes(r['xla_temp_bytes'])} | {_fmt_bytes(r['peak_rss_bytes'])} "
        f"| {_fmt_bytes(r['rss_after_bytes'] - r['rss_before_bytes'])} "
        f"| {_fmt_bytes(r['device_peak_bytes'])} "
        f"| {r['backend_compile_s']:.1f} s ({r['cache_hits']} cache hits) |"
      )
    lin = mem.get("linearity") or {}
    if lin:
      fits = []
      for key, name in (
        ("state_bytes", "state"),
        ("peak_rss_bytes", "peak RSS"),
        ("rss_growth_bytes", "RSS growth"),
      ):
        f = lin[key]
        fits.append(
          f"{name} {f['bytes_per_member'] / 1024:.0f} KiB per member + "
          f"{f['intercept_bytes'] / 2**20:.1f} MiB (max residual "
          f"{100 * f['max_relative_residual']:.1f}%)"
        )
      lines += ["", "Line fits in P: " + "; ".join(fits)]
    lines.append("")
  dev = result.get("devices")
  if dev and dev["rows"]:
    r0 = dev["rows"][0]
    lines += [
      f"**Scaling over devices** ({r0['description']}, {dev['population']} members, "
      f"{r0['steps_per_call']} steps per call, "
      f"{_device_name(r0['platform'], r0['device_kind'])})",
      "",
    ]
    if dev.get("note"):
      lines += [dev["note"][0].upper() + dev["note"][1:] + ".", ""]
    lines += [
      "| devices | members per device | member-steps/s (best round) | each round "
      "| speedup | efficiency | compile (first round) |",
      "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in dev["rows"]:
      sp = f"{r['speedup']:.2f}x" if "speedup" in r else "n/a"
      ef = f"{100 * r['efficiency']:.0f}%" if "efficiency" in r else "n/a"
      each = ", ".join(f"{v:.1f}" for v in r.get("rounds_member_steps_per_s", []))
      lines.append(
        f"| {r['devices']} | {r['members_per_device']} | "
        f"{r['member_steps_per_s']:.1f} | {each} | {sp} | {ef} "
        f"| {r['compile_s']:.1f} s |"
      )
    lines.append("")
  elif dev and dev.get("note"):
    lines += [f"**Scaling over devices**: {dev['note']}.", ""]
  if result.get("tta"):
    lines += _tta_lines(result["tta"])
  if result.get("targets"):
    lines += ["**Targets**", "", "| target | goal | measured | met |", "| --- | --- | --- | --- |"]
    for t in result["targets"]:
      v = t["measured"]
      text = "n/a" if v is None else (f"{v:.2f}{t['unit']}" if t["unit"] else f"{v:.3f}")
      lines.append(f"| {t['target']} | {t['goal']} | {text} | {'yes' if t['met'] else 'no'} |")
  return "\n".join(lines)


# ---------------------------------------------------------------------------
# The command line.


def run_child_part(kind: str, opts: Options, population: int = 1, devices: int = 1) -> dict:
  """What a child process (``--child=KIND``) computes, with its compilation cache set."""
  import jax  # pylint: disable=g-import-not-at-top

  if kind == "programs":  # measures compiles: no cache may answer one
    jax.config.update("jax_enable_compilation_cache", False)
    return child_programs(opts, log=lambda line: print(line, flush=True))
  jax.config.update("jax_compilation_cache_dir", opts.cache_dir)
  # Memory and devices children reuse every program the parent compiled; the
  # compile and time-to-accuracy children cache what experiments/tune.py caches.
  min_secs = (
    0.0 if kind in ("memory", "devices") else float(os.environ.get("HPJAX_CACHE_MIN_SECS", "0"))
  )
  jax.config.update("jax_persistent_cache_min_compile_time_secs", min_secs)
  if kind == "compile":
    return child_compile(opts)
  if kind == "memory":
    return child_memory(opts, population)
  return child_devices(opts, devices)


def main(argv: Sequence[str], prog: str = "experiments.benchmark") -> int:
  """Runs the parts the flags name (or one child part); prints the tables."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top

  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    opts = bench_lib.options_from_flags(argv=sys.argv[1:])
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  f = flags.FLAGS
  if f.child:
    out = run_child_part(f.child, opts, f.child_population, f.child_devices)
    print(bench_lib.CHILD_MARK + json.dumps(out), flush=True)
    return 0
  if not f["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  start = time.perf_counter()
  result = run(
    opts,
    log=lambda line: print(f"[{time.perf_counter() - start:6.1f} s] {line}", flush=True),
    prog=prog,
  )
  print("\n" + markdown(result))
  if f.out:
    with open(f.out, "w") as fh:
      json.dump(result, fh, indent=2)
  return 0


def cli(prog: str = "experiments.benchmark", **defaults: Any) -> None:
  """Defines the flags (every :class:`Options` field, ``defaults`` replacing its defaults), runs.

  Args:
    prog: the module launched, for the recorded command line.
    **defaults: a thin main's own defaults (``parts=("levers",)``, ...).
  """
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top

  bench_lib.define_flags(**defaults)
  flags.DEFINE_string("out", None, "Write the results as JSON here.")
  flags.DEFINE_enum("child", None, list(CHILDREN), "Internal: run one child part.")
  flags.DEFINE_integer("child_population", 1, "Internal: P of a memory child.")
  flags.DEFINE_integer("child_devices", 1, "Internal: D of a devices child.")
  app.run(functools.partial(main, prog=prog))


if __name__ == "__main__":
  cli()

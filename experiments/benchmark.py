r"""Side by side in one run: throughput, FLOPs, compile time, memory, time to accuracy.

One absl app, one machine, one set of data; prints markdown tables and, with
``--out``, writes every number as JSON. The parts (``--parts``):

* ``throughput``: member-steps per second of hpjax populations of
  ``--populations`` members (mixed learning rates, activations and
  optimizers, batch 32) on each workload (``--workloads``):

  - ``digits8``: the bench CNN (conv16-pool-conv32-pool-dense64-dense10, the
    default model of ``experiments/configs/common.py``) on digits at 8x8;
  - ``digits28``: the same on digits resized to 28x28;
  - ``resnet32``: a ResNet-style model (``ModelConfig(family='resnet')``)
    on generated CIFAR-shaped 32x32x3 images.

  P=1 is hpjax one member at a time (a jitted single-member epoch, looped
  over ``--alone_members`` members); the same first members are also trained
  one at a time by PyTorch (``experiments/torch_baseline.py``), which is what
  an Optuna or Ray Tune user runs today, and every row carries its ratio to
  that. Each timed call is one compiled epoch over the first ``steps x batch``
  training examples; the median call is reported (the fastest in the JSON).
  PyTorch is timed before and after the hpjax rows of each workload (the
  median over members and both rounds), with the faster of one thread and
  torch's default by a short probe: on a shared machine torch's default of all
  cores can collapse (10-50x) when another process takes a core.
* ``flops``: FLOPs of one member's training step from XLA's cost analysis,
  against the measured float32 matmul rate (``--matmul_size``, best of
  ``--matmul_reps``): achieved FLOP/s = FLOPs per member-step x
  member-steps/s, as a fraction of the matmul rate.
* ``compile``: the default config (``--compile_config``) built and trained
  for two epochs in a fresh process, twice with one new persistent
  compilation cache: cold, then warm (programs cached as
  ``experiments/tune.py`` caches them: those that took at least
  ``$HPJAX_CACHE_MIN_SECS``, default 0: all, to compile). Compile time is
  (build + first epoch) minus the steady second epoch; JAX's own
  trace/lower/compile events are summed too.
* ``memory``: one process per P (``--memory_workload``): peak RSS,
  population-state bytes and XLA's temporary buffers (and the device's peak
  memory where the backend reports it).
* ``devices``: scaling over devices. One process per device count D
  (``--device_counts``, each measured ``--device_rounds`` times in turn,
  the best round kept): a population of ``--device_population`` members of
  ``--device_workload`` split over D devices exactly as the tuner splits it
  (``hpjax.Population(..., mesh=...)``: ``shard_map`` over a 1-D population
  mesh, pad members where D does not divide P; D=1 is the plain unsharded
  engine). Member-steps/s counts real members only; speedup and efficiency
  (speedup / D) are against D=1 in the same run. On CPU the D devices are
  simulated (``--xla_force_host_platform_device_count``) and share the
  machine's cores: no hardware is added, so a speedup there only says that D
  programs side by side keep the cores busier than one. On GPUs the first D real
  devices are used; counts above the devices present are skipped with a note.
* ``tta`` (off by default: 12-15 minutes on 2 cores): time to
  ``--tta_target`` validation accuracy on digits 28x28, hpjax PBT
  (``experiments/configs/digits28_pbt.py``, in a fresh process, cold and
  then warm compilation cache) against Optuna (TPE + median pruner) driving
  PyTorch (``experiments/optuna_torch.py``) with the same search space,
  budget and splits. Both clocks start before the data is loaded.

Launch::

  python -m experiments.benchmark --out=/tmp/bench.json                  # 9-10 min on 2 cores
  python -m experiments.benchmark --parts=tta --out=/tmp/tta.json        # 12-15 min on 2 cores
  python -m experiments.benchmark --parts=throughput,flops --workloads=digits8 \
      --populations=1,8 --torch=off                                      # quick look

PyTorch and Optuna come with the ``[bench]`` extra and are imported only by
the parts that need them; ``--torch=off`` skips the PyTorch rows.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime
import importlib.util
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = ("throughput", "flops", "compile", "memory", "devices", "tta")
DEFAULT_PARTS = ("throughput", "flops", "compile", "memory", "devices")
ACTS = ("relu", "tanh", "sigmoid")
OPTS = ("sgd", "rmsprop", "adam")
# Default training steps per timed call: enough to dwarf the per-call
# overhead, few enough that P=128 fits the 10-minute budget on 2 cores.
WORKLOAD_STEPS = {"digits8": 16, "digits28": 4, "resnet32": 1}
WORKLOADS = tuple(WORKLOAD_STEPS)
_CHILD_MARK = "BENCHMARK_CHILD_JSON "


@dataclasses.dataclass
class Options:
  """Everything a benchmark run needs (the flags, as one value).

  Attributes:
    parts: which of :data:`PARTS` to run.
    populations: population sizes P timed per workload.
    workloads: which of :data:`WORKLOADS`.
    steps: per-workload training steps per timed call (overrides
      :data:`WORKLOAD_STEPS`).
    batch_size: minibatch size of every member.
    min_time: seconds of timed calls per measurement (at least).
    min_reps: timed calls per measurement (at least, while one call stays
      under ``max_time / min_reps`` seconds).
    max_time: seconds of timed calls beyond which fewer than ``min_reps``
      calls are made.
    alone_members: members trained one at a time (hpjax P=1 and PyTorch).
    torch: ``auto`` (when importable), ``on`` or ``off``.
    torch_steps: timed PyTorch steps per member.
    torch_device: ``cpu``, ``cuda`` or ``auto``.
    torch_threads: intra-op threads; 0 measures both one thread and torch's
      default and keeps the faster (on a shared machine torch's default of all
      cores can collapse when another process takes one).
    resnet: ``ModelConfig`` fields of the ``resnet32`` workload.
    resnet_examples: generated 32x32x3 images (before the val/test split).
    matmul_size, matmul_reps: the float32 matmul whose rate is the limit.
    compile_config: the config file whose compile time is measured.
    compile_overrides: ``field=value`` changes to it (tests shrink it).
    memory_workload: the workload of the memory part.
    memory_populations: its population sizes (default: ``populations``).
    tta_population, tta_epochs, tta_trials, tta_target, tta_seed: the
      time-to-accuracy scenario (hpjax members / Optuna trials, epochs each).
    device_counts: device counts D of the ``devices`` part.
    device_population: members split over the D devices.
    device_workload: the workload of the ``devices`` part.
    device_rounds: times every device count is measured, in turn (D=1, 2,
      4, D=1, 2, 4, ...); each D's best round is reported.
    cache_dir: persistent compilation cache of this process and the memory
      children (default: a fresh temporary directory, so compiles are cold).
    argv: the command line, recorded in the JSON.
  """

  parts: tuple = DEFAULT_PARTS
  populations: tuple = (1, 8, 32, 128)
  workloads: tuple = WORKLOADS
  steps: dict = dataclasses.field(default_factory=dict)
  batch_size: int = 32
  min_time: float = 2.0
  min_reps: int = 3
  max_time: float = 15.0
  alone_members: int = 4
  torch: str = "auto"
  torch_steps: int = 20
  torch_device: str = "cpu"
  torch_threads: int = 0
  resnet: dict = dataclasses.field(default_factory=lambda: dict(family="resnet"))
  resnet_examples: int = 512
  matmul_size: int = 2048
  matmul_reps: int = 5
  compile_config: str = os.path.join(ROOT, "experiments", "configs", "digits_pbt.py")
  compile_overrides: tuple = ()
  memory_workload: str = "digits28"
  memory_populations: tuple | None = None
  tta_population: int = 32
  tta_epochs: int = 10
  tta_trials: int = 32
  tta_target: float = 0.97
  tta_seed: int = 0
  device_counts: tuple = (1, 2, 4)
  device_population: int = 32
  device_workload: str = "digits28"
  device_rounds: int = 2
  cache_dir: str | None = None
  argv: tuple = ()

  def steps_for(self, workload: str) -> int:
    """Training steps per timed call of ``workload``."""
    return int(self.steps.get(workload, WORKLOAD_STEPS[workload]))


# ---------------------------------------------------------------------------
# Workloads and populations.


def _members(n: int, batch_size: int, model=None) -> list:
  """``n`` members with mixed learning rates, activations and optimizers."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import hpjax  # pylint: disable=g-import-not-at-top
  model = model or hpjax.ModelConfig()
  lrs = np.logspace(-3.5, -1.5, n) if n > 1 else [1e-3]
  return [hpjax.Member(learning_rate=float(lrs[i]), activation=ACTS[i % 3],
                       optimizer=OPTS[(i // 3) % 3], batch_size=batch_size, model=model)
          for i in range(n)]


def load_workload(name: str, opts: Options):
  """The dataset and model config of a workload.

  Args:
    name: one of :data:`WORKLOADS`.
    opts: options (ResNet config and generated-data size).

  Returns:
    ``(dataset, model_config, description)``.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  import hpjax  # pylint: disable=g-import-not-at-top
  from hpjax import data as data_lib  # pylint: disable=g-import-not-at-top
  if name == "digits8":
    return (data_lib.load_dataset("digits", seed=0), hpjax.ModelConfig(),
            "bench CNN, digits 8x8")
  if name == "digits28":
    return (data_lib.load_dataset("digits", image_size=28, seed=0), hpjax.ModelConfig(),
            "bench CNN, digits 28x28")
  if name == "resnet32":
    rng = np.random.default_rng(0)
    n = opts.resnet_examples
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.int32)
    model = hpjax.ModelConfig(**opts.resnet).validate()
    desc = (f"ResNet depth {model.depth} width {model.width} x{model.convs_per_stage} blocks"
            f"{' BN' if model.batch_norm else ''}, random 32x32x3")
    return data_lib.dataset_from_arrays("random32x32x3", x, y, seed=0), model, desc
  raise ValueError(f"--workloads: unknown value {name!r}; allowed: {', '.join(WORKLOADS)}")


def _tree_bytes(tree) -> int:
  import jax  # pylint: disable=g-import-not-at-top
  return int(sum(a.nbytes for a in jax.tree.leaves(tree)))


@dataclasses.dataclass
class _Compiled:
  """One workload's population of P members, compiled for a timed call."""
  population: int
  steps: int
  executable: Any
  states: list
  x: Any
  y: Any
  compile_s: float
  flops: float | None
  temp_bytes: int | None
  state_bytes: int


def single_member_population(data, model, opts: Options):
  """A one-member ``hpjax.Population`` of a workload: its group functions serve every P.

  The group spec (model, batch size, candidates, schedule) does not depend on
  P, so the jitted init is compiled once, for one member.
  """
  import hpjax  # pylint: disable=g-import-not-at-top
  return hpjax.Population(_members(1, opts.batch_size, model), data, activations=ACTS)


def member_states(pop, members: Sequence[Any]):
  """Each member's one-member state, as ``hpjax.Population`` initialises member ``i``.

  Member ``i``'s state depends only on (seed 0, ``i``) and its own
  hyperparameters, so one compiled init serves every P. A generator.
  """
  from hpjax import population as pop_lib  # pylint: disable=g-import-not-at-top
  fns = pop.groups[0].fns
  hp = pop.hparam_arrays(members)
  for i in range(len(members)):
    yield fns.init(pop_lib.member_keys(0, [i]), {k: v[i:i + 1] for k, v in hp.items()})


def population_state(pop, members: Sequence[Any]):
  """The state of a population of ``members``, exactly as ``hpjax.Population`` builds it.

  Built one member at a time into host buffers, then placed on the device:
  no vmapped init to compile for each P, and at most one state and one
  member in memory besides (tests/test_benchmark.py checks it equals the
  population's own state).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  bufs, treedef = None, None
  for i, state in enumerate(member_states(pop, members)):
    if len(members) == 1:
      return state
    leaves, treedef = jax.tree.flatten(state)
    if bufs is None:
      bufs = [np.empty((len(members),) + l.shape[1:], l.dtype) for l in leaves]
    for buf, leaf in zip(bufs, leaves):
      buf[i] = np.asarray(leaf)[0]
    del state, leaves
  return jax.device_put(jax.tree.unflatten(treedef, bufs))


def _training_slice(data, steps: int, batch_size: int):
  """The first ``steps x batch_size`` training examples: what one timed call trains on."""
  n = steps * batch_size
  if n > data.num_train:
    raise ValueError(f"--steps: {steps} steps of {batch_size} need {n} training examples, "
                     f"{data.name} has {data.num_train}")
  return data.x_train[:n], data.y_train[:n]


def _compile_population(data, model, p: int, opts: Options, steps: int,
                        pop=None) -> _Compiled:
  """Prepares P members and compiles one epoch over ``steps`` batches.

  For P=1 the states of ``opts.alone_members`` members are prepared, to be
  trained in turn by the same compiled single-member epoch.

  Args:
    data, model: the workload.
    p: population size.
    opts: options (batch size, alone members).
    steps: training steps per call.
    pop: the workload's :func:`single_member_population` (built if None).
  """
  b = opts.batch_size
  x, y = _training_slice(data, steps, b)
  pop = pop or single_member_population(data, model, opts)
  fns = pop.groups[0].fns
  if p == 1:
    states = list(member_states(pop, _members(max(1, opts.alone_members), b, model)))
  else:
    states = [population_state(pop, _members(p, b, model))]
  start = time.perf_counter()
  executable = fns.train_epoch.lower(states[0], x, y).compile()
  compile_s = time.perf_counter() - start
  cost = executable.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per program
    cost = cost[0] if cost else {}
  try:
    temp = int(executable.memory_analysis().temp_size_in_bytes)
  except Exception:  # pylint: disable=broad-except
    temp = None  # not every backend reports it
  return _Compiled(p, steps, executable, states, x, y, compile_s,
                   float(cost["flops"]) if cost and "flops" in cost else None, temp,
                   _tree_bytes(states[0]))


def _reps(first_s: float, opts: Options) -> int:
  """How many timed calls after a first one that took ``first_s`` seconds."""
  first_s = max(first_s, 1e-6)
  return max(math.ceil(opts.min_time / first_s),
             min(opts.min_reps, max(1, math.floor(opts.max_time / first_s))))


def time_calls(c: _Compiled, opts: Options) -> dict[str, Any]:
  """Times the compiled epoch; states are trained round-robin (P=1: one at a time).

  Returns:
    ``member_steps_per_s`` (from the median call), ``best_member_steps_per_s``
    (the fastest call), ``call_s`` (all timed calls) and ``first_call_s``.
  """
  import jax  # pylint: disable=g-import-not-at-top

  def call(i: int) -> float:
    j = i % len(c.states)
    start = time.perf_counter()
    c.states[j], m = c.executable(c.states[j], c.x, c.y)
    jax.block_until_ready((c.states[j], m))
    return time.perf_counter() - start

  first = call(0)
  # A long first call is a fair sample (no compile: the executable is ready);
  # a short one may carry one-off allocation costs.
  times = [first] if first >= 5.0 else []
  reps = _reps(first, opts)
  i = 1
  while len(times) < reps:
    times.append(call(i))
    i += 1
  work = c.population * c.steps
  return {"member_steps_per_s": work / statistics.median(times),
          "best_member_steps_per_s": work / min(times), "call_s": times, "first_call_s": first}


def flops_per_member_step(data, model, compiled_p1: _Compiled, opts: Options,
                          pop=None) -> dict[str, Any]:
  """FLOPs of one member's training step, from XLA's cost analysis.

  XLA's analysis of a loop body may count it once (this jax: yes) or times
  its trip count; lowering the same epoch for 1 and 2 steps tells which, and
  the compiled P=1 figure is divided accordingly.
  """
  g_steps = compiled_p1.steps
  pop = pop or single_member_population(data, model, opts)
  g = pop.groups[0]
  b = opts.batch_size

  def lowered_flops(s):
    cost = g.fns.train_epoch.lower(g.state, data.x_train[:s * b], data.y_train[:s * b]
                                   ).cost_analysis()
    if isinstance(cost, (list, tuple)):
      cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", float("nan")))

  one, two = lowered_flops(1), lowered_flops(2)
  counts_trips = bool(two > 1.5 * one)
  total = compiled_p1.flops
  per_step = None if total is None else (total / g_steps if counts_trips else total)
  return {"flops_per_member_step": per_step, "compiled_epoch_flops": total,
          "steps_in_epoch": g_steps, "loop_counted_per_trip": counts_trips,
          "lowered_1_step_flops": one, "lowered_2_step_flops": two}


def matmul_rate(size: int, reps: int) -> dict[str, Any]:
  """The machine's float32 matmul rate through XLA (best of ``reps``)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (size, size), jnp.float32)
  bm = jax.random.normal(kb, (size, size), jnp.float32)
  f = jax.jit(jnp.dot)
  jax.block_until_ready(f(a, bm))
  best = math.inf
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(f(a, bm))
    best = min(best, time.perf_counter() - start)
  return {"size": size, "reps": reps, "best_s": best, "flops_per_s": 2.0 * size ** 3 / best}


# ---------------------------------------------------------------------------
# PyTorch one at a time.


def _torch_available() -> bool:
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True


class TorchBaseline:
  """PyTorch training the first ``alone_members`` members one after another.

  The thread count is chosen once by a short probe (with ``torch_threads ==
  0``, one thread against torch's default: on a shared machine the default
  of all cores can collapse when another process takes one). :meth:`measure`
  then times every member for ``torch_steps`` steps; it is called before and
  after the hpjax rows of a workload so that a drifting machine load weighs
  on both sides alike.
  """

  def __init__(self, data, model, opts: Options):
    import numpy as np  # pylint: disable=g-import-not-at-top
    import torch  # pylint: disable=g-import-not-at-top
    from experiments import torch_baseline  # pylint: disable=g-import-not-at-top
    self._tb = torch_baseline
    self._torch = torch
    self.opts = opts
    members = _members(opts.alone_members, opts.batch_size, model)
    self.members = [dict(activation=m.activation, optimizer=m.optimizer, lr=m.learning_rate,
                         batch_size=m.batch_size, model=dataclasses.asdict(m.model))
                    for m in members]
    self.x = np.asarray(data.x_train)
    self.y = np.asarray(data.y_train)
    self.device = torch_baseline.resolve_device(opts.torch_device)
    self.default_threads = torch.get_num_threads()
    self.probe = {}
    if opts.torch_threads:
      self.threads = opts.torch_threads
    else:
      self.threads = probe_torch_threads(self.x, self.y, self.members[0], self.device)
      self.probe = dict(probe_torch_threads.last)
    self.rates: list[float] = []
    self.rounds: list[float] = []

  def measure(self) -> float:
    """Times every member once; returns the median member-steps/s of this round."""
    self._torch.set_num_threads(self.threads)
    try:
      self._tb.train_member(self.x, self.y, max_steps=3, device=self.device, **self.members[0])
      rates = []
      for i, m in enumerate(self.members):
        r = self._tb.train_member(self.x, self.y, max_steps=self.opts.torch_steps, seed=i,
                                  device=self.device, **m)
        rates.append(r["steps"] / r["seconds"])
    finally:
      self._torch.set_num_threads(self.default_threads)
    self.rates += rates
    self.rounds.append(statistics.median(rates))
    return self.rounds[-1]

  def result(self) -> dict[str, Any]:
    """The baseline: the median over all members of all rounds."""
    return {"member_steps_per_s": statistics.median(self.rates),
            "best_member_steps_per_s": max(self.rates), "rounds": self.rounds,
            "threads": self.threads, "thread_probe": {str(k): v for k, v in self.probe.items()},
            "device": self.device, "members": len(self.members),
            "steps_per_member": self.opts.torch_steps, "version": self._torch.__version__}


def probe_torch_threads(x, y, member: dict[str, Any], device: str = "cpu",
                        steps: int = 8) -> int:
  """The faster torch thread count, 1 or torch's default, by a short probe.

  The rates probed are kept in ``probe_torch_threads.last``.
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
  probe_torch_threads.last = rates
  return max(rates, key=rates.get)


probe_torch_threads.last = {}


# ---------------------------------------------------------------------------
# Child processes: compile time and memory.


def _events():
  """Sums JAX's compile-related duration events and counts cache hits."""
  import jax  # pylint: disable=g-import-not-at-top
  sums = {"trace_s": 0.0, "lower_s": 0.0, "backend_compile_s": 0.0, "cache_hits": 0,
          "cache_retrieval_s": 0.0}
  names = {"/jax/core/compile/jaxpr_trace_duration": "trace_s",
           "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
           "/jax/core/compile/backend_compile_duration": "backend_compile_s",
           "/jax/compilation_cache/cache_retrieval_time_sec": "cache_retrieval_s"}

  def on_duration(event, duration, **kw):
    del kw
    if event in names:
      sums[names[event]] += duration

  def on_event(event, **kw):
    del kw
    if event == "/jax/compilation_cache/cache_hits":
      sums["cache_hits"] += 1

  jax.monitoring.register_event_duration_secs_listener(on_duration)
  jax.monitoring.register_event_listener(on_event)
  return sums


def _load_config(path: str, overrides: Sequence[str]):
  """``get_config()`` of a config file, with ``field=value`` overrides applied."""
  spec = importlib.util.spec_from_file_location("benchmark_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  cfg = module.get_config()
  for item in overrides:
    field, _, text = item.partition("=")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    node = cfg
    *parents, leaf = field.split(".")
    for name in parents:
      node = node[name]
    node[leaf] = value
  return cfg


def _rss() -> dict[str, int]:
  """Current and peak resident memory of this process, in bytes."""
  out = {"maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(("VmRSS:", "VmHWM:")):
          key = "rss_bytes" if line.startswith("VmRSS") else "hwm_bytes"
          out[key] = int(line.split()[1]) * 1024
  except OSError:
    pass
  return out


def _device_peak() -> int | None:
  import jax  # pylint: disable=g-import-not-at-top
  stats = jax.devices()[0].memory_stats() or {}
  v = stats.get("peak_bytes_in_use")
  return int(v) if v is not None else None


def child_compile(opts: Options) -> dict[str, Any]:
  """In a fresh process: build the config's population, train two epochs, time them.

  Mirrors what ``hpjax.tuner.run`` builds (members, groups, schedule,
  candidates), without its logging and checkpoints.
  """
  import jax  # pylint: disable=g-import-not-at-top
  sums = _events()
  from hpjax import optim  # pylint: disable=g-import-not-at-top
  from hpjax import space as space_lib  # pylint: disable=g-import-not-at-top
  from hpjax import tuner  # pylint: disable=g-import-not-at-top
  from hpjax.models import ACTIVATIONS  # pylint: disable=g-import-not-at-top
  from hpjax.population import Population  # pylint: disable=g-import-not-at-top
  cfg = _load_config(opts.compile_config, opts.compile_overrides).to_dict()
  data = tuner.config_dataset(cfg)
  jax.block_until_ready(data.x_train)
  t0 = time.perf_counter()
  members, space = tuner.build_members(cfg, data.task)
  s = cfg.get("schedule", {})
  schedule = optim.EpochSchedule(s.get("kind", "constant"), float(s.get("warmup_epochs", 0.0)),
                                 float(cfg["epochs"]), float(s.get("alpha", 0.0)))
  activations = space_lib.candidates(space, "activation", sorted(
      {m.activation for m in members}, key=list(ACTIVATIONS).index))
  losses = space_lib.candidates(space, "loss", list(dict.fromkeys(m.loss for m in members)))
  pop = Population(members, data, seed=int(cfg["seed"]), activations=activations,
                   losses=losses, schedule=schedule,
                   eval_batch_size=int(cfg.get("eval_batch_size", 256)))
  jax.block_until_ready([g.state for g in pop.groups])
  t1 = time.perf_counter()
  pop.train_epoch()
  pop.evaluate("val")  # host arrays: synchronous
  t2 = time.perf_counter()
  pop.train_epoch()
  pop.evaluate("val")
  t3 = time.perf_counter()
  build, first, steady = t1 - t0, t2 - t1, t3 - t2
  return {"config": os.path.relpath(opts.compile_config, ROOT),
          "overrides": list(opts.compile_overrides), "members": pop.size,
          "groups": len(pop.groups), "build_s": build, "first_epoch_s": first,
          "steady_epoch_s": steady, "compile_s": build + first - steady,
          "jax_events": dict(sums), **_rss(), "device_peak_bytes": _device_peak()}


def child_devices(opts: Options, d: int) -> dict[str, Any]:
  """In a fresh process: the device-scaling population split over ``d`` devices, timed.

  Builds ``hpjax.Population`` as the tuner does (``mesh=None`` for one
  device, a population mesh over the first ``d`` devices otherwise), then
  compiles and times its group's epoch over the workload's first
  ``steps x batch`` examples, as the throughput part does.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import hpjax  # pylint: disable=g-import-not-at-top
  from hpjax import distributed  # pylint: disable=g-import-not-at-top
  devices = jax.devices()
  if d < 1 or d > len(devices):
    raise ValueError(f"--child_devices: {d} devices asked for, {len(devices)} present "
                     f"({devices[0].platform})")
  data, model, desc = load_workload(opts.device_workload, opts)
  steps, b, p = opts.steps_for(opts.device_workload), opts.batch_size, opts.device_population
  x, y = _training_slice(data, steps, b)
  mesh = distributed.population_mesh(devices[:d]) if d > 1 else None
  start = time.perf_counter()
  pop = hpjax.Population(_members(p, b, model), data, activations=ACTS, mesh=mesh)
  (group,) = pop.groups
  state = jax.block_until_ready(group.state)
  build_s = time.perf_counter() - start
  if mesh is not None:
    x, y = distributed.put((x, y), distributed.replicated(mesh))
  start = time.perf_counter()
  executable = group.fns.train_epoch.lower(state, x, y).compile()
  compile_s = time.perf_counter() - start
  per_device = jax.tree.leaves(state)[0].shape[0] // d
  c = _Compiled(p, steps, executable, [state], x, y, compile_s, None, None, _tree_bytes(state))
  row = time_calls(c, opts)
  return {"devices": d, "platform": devices[0].platform, "device_kind": devices[0].device_kind,
          "workload": opts.device_workload, "description": desc, "population": p,
          "padded_population": per_device * d, "members_per_device": per_device,
          "steps_per_call": steps, "build_s": build_s, "compile_s": compile_s, **row}


def _reset_peak_rss() -> bool:
  """Resets this process's peak RSS (Linux ``clear_refs``); False where unsupported."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
  except OSError:
    return False
  return True


def child_memory(opts: Options, p: int) -> dict[str, Any]:
  """In a fresh process: a P-member population of the memory workload, one training call.

  The peak RSS is reset (where Linux allows) after the state is built and
  the epoch compiled, so that it is the peak of training itself: the
  resident process, the population state, the data and XLA's temporaries.
  """
  import gc  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  sums = _events()
  data, model, desc = load_workload(opts.memory_workload, opts)
  jax.block_until_ready(data.x_train)
  before = _rss()
  c = _compile_population(data, model, p, dataclasses.replace(opts, alone_members=1),
                          opts.steps_for(opts.memory_workload))
  jax.block_until_ready(c.states)
  gc.collect()
  resident = _rss()
  reset = _reset_peak_rss()
  c.states[0], m = c.executable(c.states[0], c.x, c.y)
  jax.block_until_ready((c.states[0], m))
  after = _rss()
  return {"workload": opts.memory_workload, "description": desc, "population": p,
          "state_bytes": c.state_bytes, "xla_temp_bytes": c.temp_bytes,
          "rss_before_bytes": before.get("rss_bytes", before["maxrss_bytes"]),
          "rss_resident_bytes": resident.get("rss_bytes", resident["maxrss_bytes"]),
          "peak_rss_bytes": after.get("hwm_bytes", after["maxrss_bytes"]),
          "peak_is_training_only": reset,
          "rss_after_bytes": after.get("rss_bytes", after["maxrss_bytes"]),
          "maxrss_bytes": after["maxrss_bytes"], "device_peak_bytes": _device_peak(),
          "backend_compile_s": sums["backend_compile_s"], "cache_hits": sums["cache_hits"]}


def _child_flags(opts: Options) -> list[str]:
  out = [f"--workloads={','.join(opts.workloads)}", f"--batch_size={opts.batch_size}",
         f"--memory_workload={opts.memory_workload}",
         f"--steps={','.join(f'{k}={v}' for k, v in opts.steps.items())}",
         f"--compile_config={opts.compile_config}",
         f"--resnet={json.dumps(opts.resnet)}", f"--resnet_examples={opts.resnet_examples}"]
  out += [f"--compile_override={o}" for o in opts.compile_overrides]
  out += [f"--device_population={opts.device_population}",
          f"--device_workload={opts.device_workload}", f"--min_time={opts.min_time}",
          f"--min_reps={opts.min_reps}", f"--max_time={opts.max_time}"]
  out += [f"--tta_population={opts.tta_population}", f"--tta_epochs={opts.tta_epochs}",
          f"--tta_target={opts.tta_target}", f"--tta_seed={opts.tta_seed}"]
  return out


def run_child(kind: str, opts: Options, cache_dir: str, extra: Sequence[str] = (),
              timeout: float = 900, env: dict[str, str] | None = None) -> dict[str, Any]:
  """Runs ``python -m experiments.benchmark --child=KIND`` and returns its JSON.

  ``env`` adds to (or replaces in) this process's environment.
  """
  cmd = [sys.executable, "-m", "experiments.benchmark", f"--child={kind}",
         f"--cache_dir={cache_dir}", *_child_flags(opts), *extra]
  start = time.perf_counter()
  r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                     env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})), check=False)
  wall = time.perf_counter() - start
  lines = [l for l in r.stdout.splitlines() if l.startswith(_CHILD_MARK)]
  if r.returncode != 0 or not lines:
    raise RuntimeError(f"benchmark child {kind!r} failed (exit {r.returncode}):\n"
                       + r.stderr[-3000:])
  out = json.loads(lines[-1][len(_CHILD_MARK):])
  out["process_wall_s"] = wall
  return out


# ---------------------------------------------------------------------------
# Time to accuracy.


def tta_hpjax(opts: Options, log: Callable[[str], None] = print) -> dict[str, Any]:
  """hpjax PBT on digits 28x28 (``digits28_pbt``), timed from the call.

  The time to the target is the moment the tuner logs the end of the first
  epoch in which any member reached it (metrics and PBT decisions of that
  epoch included), counted from before ``tuner.run`` loads the data.
  """
  from experiments.configs import digits28_pbt  # pylint: disable=g-import-not-at-top
  from hpjax import tuner  # pylint: disable=g-import-not-at-top
  cfg = digits28_pbt.get_config()
  cfg.population = opts.tta_population
  cfg.epochs = opts.tta_epochs
  cfg.seed = opts.tta_seed
  workdir = tempfile.mkdtemp(prefix="hpjax_tta_")
  epoch_end: dict[int, float] = {}
  t0 = time.perf_counter()

  def on_log(line: str) -> None:
    now = time.perf_counter()
    if line.startswith("epoch "):
      epoch_end[int(line.split()[1].split("/")[0])] = now - t0
      log(f"hpjax {line.strip()}  [{now - t0:.1f} s]")

  try:
    summary = tuner.run(cfg, workdir, log=on_log)
    total = time.perf_counter() - t0
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      rows = [json.loads(l) for l in f if l.strip()]
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  hits = sorted(r["epoch"] for r in rows if r.get("val_accuracy", 0.0) >= opts.tta_target)
  curve = {}
  for r in rows:
    curve[r["epoch"]] = max(curve.get(r["epoch"], 0.0), r["val_accuracy"])
  return {
      "tuner": "hpjax PBT (experiments/configs/digits28_pbt.py)",
      "members": opts.tta_population, "epochs": opts.tta_epochs, "target": opts.tta_target,
      "wall_s": total,
      "time_to_target_s": epoch_end.get(hits[0]) if hits else None,
      "epoch_reached": hits[0] if hits else None,
      "best_val_accuracy": max(r["val_accuracy"] for r in rows),
      "best_member": {"val_accuracy": summary["val"]["accuracy"],
                      "test_accuracy": summary["test"]["accuracy"],
                      "hyperparameters": summary["hyperparameters"]},
      "member_epochs": len(rows),
      "curve": [[epoch_end.get(e), e, v] for e, v in sorted(curve.items())],
  }


# ---------------------------------------------------------------------------
# The run.


def _meta(opts: Options) -> dict[str, Any]:
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  return {"date": datetime.datetime.now().isoformat(timespec="seconds"),
          "host": platform.node(), "machine": platform.machine(),
          "processor": _cpu_name(), "cpu_count": os.cpu_count(),
          "python": platform.python_version(), "jax": jax.__version__,
          "backend": jax.default_backend(), "device": device.device_kind,
          "devices": jax.device_count(), "load_avg_start": list(os.getloadavg()),
          "command": "python -m experiments.benchmark " + " ".join(opts.argv)}


def _cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def run(opts: Options, log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs the chosen parts; returns every result as one JSON-able dict.

  Args:
    opts: what to run and at which sizes.
    log: progress lines.

  Returns:
    ``meta``, then one entry per part run (``matmul``, ``workloads``,
    ``compile``, ``memory``, ``tta``), and ``targets``.
  """
  bad = set(opts.parts) - set(PARTS)
  if bad:
    raise ValueError(f"--parts: unknown {sorted(bad)}; allowed: {', '.join(PARTS)}")
  import jax  # pylint: disable=g-import-not-at-top
  own_cache = opts.cache_dir is None
  cache_dir = opts.cache_dir or tempfile.mkdtemp(prefix="hpjax_bench_cache_")
  saved = {k: getattr(jax.config, k) for k in
           ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")}
  # Every compile goes to this cache, so the memory children reuse the
  # programs compiled here (their compile time is not what they measure).
  # (A process that already compiled with another cache keeps that one: JAX
  # fixes the cache at its first compile; pass that one as cache_dir.)
  jax.config.update("jax_compilation_cache_dir", cache_dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  result: dict[str, Any] = {"meta": _meta(opts), "options": _jsonable(dataclasses.asdict(opts))}
  start = time.perf_counter()
  try:
    if "flops" in opts.parts:
      result["matmul"] = matmul_rate(opts.matmul_size, opts.matmul_reps)
      log(f"matmul {opts.matmul_size}^2 float32: "
          f"{result['matmul']['flops_per_s'] / 1e9:.1f} GFLOP/s")
    if {"throughput", "flops"} & set(opts.parts):
      result["workloads"] = [_workload(name, opts, log) for name in opts.workloads]
    if "flops" in opts.parts:
      # The machine's load drifts: the rate is the best of two measurements,
      # before and after the throughput part.
      again = matmul_rate(opts.matmul_size, opts.matmul_reps)
      log(f"matmul again: {again['flops_per_s'] / 1e9:.1f} GFLOP/s")
      mm = result["matmul"]
      mm["flops_per_s_start"], mm["flops_per_s_end"] = mm["flops_per_s"], again["flops_per_s"]
      mm["flops_per_s"] = max(mm["flops_per_s"], again["flops_per_s"])
      for w in result.get("workloads", []):
        _add_fractions(w, mm)
    if "compile" in opts.parts:
      result["compile"] = _compile_part(opts, log)
    if "memory" in opts.parts:
      result["memory"] = _memory_part(opts, cache_dir, log)
    if "devices" in opts.parts:
      result["devices"] = _devices_part(opts, cache_dir, log)
    if "tta" in opts.parts:
      result["tta"] = _tta_part(opts, log)
  finally:
    for k, v in saved.items():
      jax.config.update(k, v)
    if own_cache:
      shutil.rmtree(cache_dir, ignore_errors=True)
  result["meta"]["load_avg_end"] = list(os.getloadavg())
  result["meta"]["wall_s"] = time.perf_counter() - start
  result["targets"] = targets(result)
  return result


def _workload(name: str, opts: Options, log: Callable[[str], None]) -> dict[str, Any]:
  """Throughput and FLOPs of one workload at every P."""
  data, model, desc = load_workload(name, opts)
  steps = opts.steps_for(name)
  out: dict[str, Any] = {"name": name, "description": desc, "batch_size": opts.batch_size,
                         "steps_per_call": steps, "model": dataclasses.asdict(model),
                         "input_shape": list(data.input_shape), "rows": []}
  use_torch = "throughput" in opts.parts and (
      opts.torch == "on" or (opts.torch == "auto" and _torch_available()))
  if "throughput" in opts.parts and not use_torch:
    out["torch_note"] = ("PyTorch rows skipped (--torch=off)" if opts.torch == "off" else
                         "PyTorch not installed (pip install -e '.[bench]'): rows skipped")
  baseline = None
  if use_torch:
    baseline = TorchBaseline(data, model, opts)
    log(f"{name} PyTorch one at a time: {baseline.measure():.1f} member-steps/s "
        f"({baseline.threads} thread(s); probe {_rates_text(baseline.probe)})")
  pops = sorted(set(opts.populations) | ({1} if "flops" in opts.parts else set()))
  if "throughput" not in opts.parts:
    pops = [1]
  p1 = None
  pop = single_member_population(data, model, opts)
  for p in pops:
    c = _compile_population(data, model, p, opts, steps, pop)
    row = {"population": p, "compile_s": c.compile_s, "state_bytes": c.state_bytes,
           "xla_temp_bytes": c.temp_bytes, "epoch_flops": c.flops}
    if "throughput" in opts.parts:
      row.update(time_calls(c, opts))
      log(f"{name} P={p}: {row['member_steps_per_s']:.1f} member-steps/s "
          f"(compile {c.compile_s:.1f} s, {len(row['call_s'])} calls)")
    if p == 1:
      p1 = c
    if p in opts.populations or p != 1:
      out["rows"].append(row)
    del c
  if "flops" in opts.parts:
    out["flops"] = flops_per_member_step(data, model, p1, opts, pop)
    per = out["flops"]["flops_per_member_step"]
    log(f"{name}: {per / 1e6:.1f} MFLOP per member-step")
  if baseline is not None:
    log(f"{name} PyTorch one at a time, again: {baseline.measure():.1f} member-steps/s")
    out["torch"] = baseline.result()
    t = out["torch"]["member_steps_per_s"]
    for row in out["rows"]:
      if "member_steps_per_s" in row:
        row["vs_torch"] = row["member_steps_per_s"] / t
  return out


def _rates_text(rates: dict) -> str:
  return ", ".join(f"{k} thread(s) {v:.1f}/s" for k, v in rates.items()) or "none"


def _add_fractions(w: dict[str, Any], matmul: dict[str, Any]) -> None:
  """Achieved FLOP/s and the fraction of the matmul rate, for every timed row."""
  per = (w.get("flops") or {}).get("flops_per_member_step")
  if not per:
    return
  w["flops"]["limit_member_steps_per_s"] = matmul["flops_per_s"] / per
  for row in w["rows"]:
    if "member_steps_per_s" in row:
      row["achieved_flops_per_s"] = per * row["member_steps_per_s"]
      row["fraction_of_matmul"] = row["achieved_flops_per_s"] / matmul["flops_per_s"]


def _compile_part(opts: Options, log: Callable[[str], None]) -> dict[str, Any]:
  cache = tempfile.mkdtemp(prefix="hpjax_compile_cache_")
  try:
    cold = run_child("compile", opts, cache)
    log(f"compile cold: {cold['compile_s']:.1f} s")
    warm = run_child("compile", opts, cache)
    log(f"compile warm: {warm['compile_s']:.1f} s")
  finally:
    shutil.rmtree(cache, ignore_errors=True)
  return {"cold": cold, "warm": warm}


def _memory_part(opts: Options, cache_dir: str, log: Callable[[str], None]) -> dict[str, Any]:
  rows = []
  for p in sorted(set(opts.memory_populations or opts.populations)):
    r = run_child("memory", opts, cache_dir, [f"--child_population={p}"])
    rows.append(r)
    log(f"memory P={p}: state {r['state_bytes'] / 2**20:.2f} MiB, peak RSS "
        f"{r['peak_rss_bytes'] / 2**20:.0f} MiB")
  return {"workload": opts.memory_workload, "rows": rows, "linearity": _linearity(rows)}


def _devices_part(opts: Options, cache_dir: str, log: Callable[[str], None]) -> dict[str, Any]:
  """One child per device count; speedup and efficiency against one device."""
  import jax  # pylint: disable=g-import-not-at-top
  backend = jax.default_backend()
  counts = sorted(set(opts.device_counts))
  if not counts or counts[0] < 1:
    raise ValueError(f"--device_counts: must be positive integers, got {list(opts.device_counts)}")
  out: dict[str, Any] = {"workload": opts.device_workload, "population": opts.device_population,
                         "backend": backend, "rows": []}
  if backend == "cpu":
    out["simulated"] = True
    out["note"] = (f"simulated CPU devices (--xla_force_host_platform_device_count) sharing "
                   f"{os.cpu_count()} cores: no hardware is added, so a speedup only says that D "
                   "programs side by side use the cores better than XLA's threads in one")
  else:
    out["simulated"] = False
    present = jax.local_device_count()
    skipped = [d for d in counts if d > present]
    counts = [d for d in counts if d <= present]
    if skipped:
      out["note"] = f"{len(skipped)} device count(s) {skipped} skipped: {present} present"
  rounds: dict[int, list[dict[str, Any]]] = {d: [] for d in counts}
  for k in range(max(1, opts.device_rounds)):
    # In turn, so that a drift in the machine's load touches every D alike.
    for d in counts:
      env = None
      if backend == "cpu":
        flags_env = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                             if not f.startswith("--xla_force_host_platform_device_count"))
        env = {"XLA_FLAGS": f"{flags_env} --xla_force_host_platform_device_count={d}".strip(),
               "JAX_NUM_CPU_DEVICES": str(d)}
      r = run_child("devices", opts, cache_dir, [f"--child_devices={d}"], env=env)
      rounds[d].append(r)
      log(f"devices D={d} (round {k + 1}): {r['member_steps_per_s']:.1f} member-steps/s "
          f"({r['members_per_device']} members per device, compile {r['compile_s']:.1f} s)")
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


def _linearity(rows: Sequence[dict]) -> dict[str, Any]:
  """How far state bytes and peak RSS are from a straight line in P."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  if len(rows) < 2:
    return {}
  p = np.array([r["population"] for r in rows], np.float64)
  out = {}
  values = {"state_bytes": [r["state_bytes"] for r in rows],
            "peak_rss_bytes": [r["peak_rss_bytes"] for r in rows],
            "rss_growth_bytes": [r["rss_after_bytes"] - r["rss_before_bytes"] for r in rows]}
  for key, v in values.items():
    v = np.array(v, np.float64)
    slope, intercept = np.polyfit(p, v, 1)
    fit = slope * p + intercept
    residual = np.max(np.abs(v - fit) / np.maximum(np.abs(v), 1.0))
    out[key] = {"bytes_per_member": float(slope), "intercept_bytes": float(intercept),
                "max_relative_residual": float(residual)}
  return out


def _tta_part(opts: Options, log: Callable[[str], None]) -> dict[str, Any]:
  # hpjax runs twice in fresh processes sharing one new persistent cache:
  # a user's first run (cold), then any later run (experiments/tune.py
  # keeps a persistent cache by default).
  cache = tempfile.mkdtemp(prefix="hpjax_tta_cache_")
  out = {}
  try:
    for key in ("hpjax", "hpjax_warm"):
      out[key] = run_child("tta", opts, cache, timeout=3600)
      h = out[key]
      log(f"{key}: {h['target']} after {_fmt_s(h['time_to_target_s'])}; best "
          f"{h['best_val_accuracy']:.4f}; {h['wall_s']:.1f} s in all")
  finally:
    shutil.rmtree(cache, ignore_errors=True)
  out["hpjax"]["cache"], out["hpjax_warm"]["cache"] = "cold", "warm"
  if opts.torch == "off" or (opts.torch == "auto" and not _torch_available()):
    out["optuna_note"] = "Optuna + PyTorch skipped (--torch=off or not installed)"
    return out
  from experiments import optuna_torch  # pylint: disable=g-import-not-at-top
  threads = opts.torch_threads or None
  if threads is None:
    threads = _probe_torch_threads(opts)
  out["optuna"] = optuna_torch.run_study(
      trials=opts.tta_trials, epochs=opts.tta_epochs, target=opts.tta_target,
      seed=opts.tta_seed, device=opts.torch_device, threads=threads, log=log)
  out["optuna"]["threads"] = threads
  o = out["optuna"]
  log(f"optuna: {o['target']} after {o['time_to_target_s']} s; best {o['best_val_accuracy']:.4f}")
  return out


def _probe_torch_threads(opts: Options) -> int:
  """The faster torch thread count (1 or torch's default) on the 28x28 bench CNN."""
  from experiments import optuna_torch  # pylint: disable=g-import-not-at-top
  from experiments import torch_baseline  # pylint: disable=g-import-not-at-top
  d = optuna_torch.load_arrays(28, opts.tta_seed)
  return probe_torch_threads(d["x_train"], d["y_train"],
                             dict(activation="relu", optimizer="adam", lr=1e-3, batch_size=16),
                             torch_baseline.resolve_device(opts.torch_device), steps=20)


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
    rows = {r["population"]: r for r in w["rows"]}
    if 32 in rows and "vs_torch" in rows[32]:
      v = rows[32]["vs_torch"]
      add("P=32 at 28x28 vs PyTorch one at a time", v, ">= 3x", v >= 3.0, "x")
    fr = [r["fraction_of_matmul"] for r in w["rows"] if "fraction_of_matmul" in r]
    if fr:
      add("fraction of the matmul rate (28x28, best P)", max(fr), ">= 0.25", max(fr) >= 0.25)
  c = result.get("compile")
  if c:
    add("compile of the default config, cold cache", c["cold"]["compile_s"], "<= 15 s",
        c["cold"]["compile_s"] <= 15.0, "s")
    add("compile of the default config, warm cache", c["warm"]["compile_s"], "<= 3 s",
        c["warm"]["compile_s"] <= 3.0, "s")
  m = result.get("memory")
  if m and m.get("linearity"):
    res = m["linearity"]["state_bytes"]["max_relative_residual"]
    add("population state linear in P (max relative residual of a line fit)", res, "<= 0.01",
        res <= 0.01)
  t = result.get("tta")
  if t and "optuna" in t:
    for key in ("hpjax", "hpjax_warm"):
      if key not in t:
        continue
      h, o = t[key]["time_to_target_s"], t["optuna"]["time_to_target_s"]
      name = (f"time to {t[key]['target']} val accuracy, hpjax "
              f"({t[key].get('cache', 'cold')} cache) / Optuna+PyTorch")
      if h is not None and o is not None:
        add(name, h / o, "<= 1/3", h / o <= 1.0 / 3.0, "x")
      else:
        add(name, None, "<= 1/3", False)
  return out


def _fmt_bytes(v: float | None) -> str:
  return "n/a" if v is None else f"{v / 2**20:.1f} MiB"


def markdown(result: dict[str, Any]) -> str:
  """The tables of a result, as markdown."""
  m = result["meta"]
  lines = [f"{m['processor']}, {m['cpu_count']} cores, {m['backend']} ({m['device']}), "
           f"jax {m['jax']}; load average {m['load_avg_start'][0]:.2f} at the start, "
           f"{m.get('load_avg_end', [float('nan')])[0]:.2f} at the end; {m['date']}", "",
           f"`{m['command']}`", ""]
  mm = result.get("matmul")
  if mm:
    text = (f"float32 matmul {mm['size']}x{mm['size']} through XLA (best of {mm['reps']}): "
            f"{mm['flops_per_s'] / 1e9:.1f} GFLOP/s")
    if "flops_per_s_end" in mm:
      text += (f" (best of {mm['flops_per_s_start'] / 1e9:.1f} before and "
               f"{mm['flops_per_s_end'] / 1e9:.1f} after the throughput part)")
    lines += [text, ""]
  for w in result.get("workloads", []):
    t = w.get("torch")
    f = w.get("flops") or {}
    per = f.get("flops_per_member_step")
    head = f"**{w['description']}**, batch {w['batch_size']}, {w['steps_per_call']} steps per call"
    if per:
      head += f"; {per / 1e6:.1f} MFLOP per member-step"
      if f.get("limit_member_steps_per_s"):
        head += f" (arithmetic limit {f['limit_member_steps_per_s']:.0f} member-steps/s)"
    lines += [head, "", "| variant | P | member-steps/s | vs PyTorch | GFLOP/s | of matmul "
              "| state | compile |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in w["rows"]:
      if "member_steps_per_s" not in r:
        continue
      name = "hpjax one at a time (jitted epoch)" if r["population"] == 1 else "hpjax population"
      vs = f"{r['vs_torch']:.2f}x" if "vs_torch" in r else "n/a"
      gf = f"{r['achieved_flops_per_s'] / 1e9:.1f}" if "achieved_flops_per_s" in r else "n/a"
      fr = f"{100 * r['fraction_of_matmul']:.1f}%" if "fraction_of_matmul" in r else "n/a"
      lines.append(f"| {name} | {r['population']} | {r['member_steps_per_s']:.1f} | {vs} | {gf} "
                   f"| {fr} | {_fmt_bytes(r['state_bytes'])} | {r['compile_s']:.1f} s |")
    if t:
      gf = f"{per * t['member_steps_per_s'] / 1e9:.1f}" if per else "n/a"
      fr = (f"{100 * per * t['member_steps_per_s'] / mm['flops_per_s']:.1f}%"
            if per and mm else "n/a")
      lines.append(f"| PyTorch {t['version']} one at a time ({t['device']}, {t['threads']} "
                   f"thread{'s' if t['threads'] != 1 else ''}) | 1 "
                   f"| {t['member_steps_per_s']:.1f} | 1.00x | {gf} | {fr} | | |")
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
    lines.append("")
  c = result.get("compile")
  if c:
    lines += [f"**Compile of `{c['cold']['config']}`** ({c['cold']['members']} members, "
              f"{c['cold']['groups']} groups): (build + first epoch) - steady epoch, each in a "
              "fresh process with one persistent cache", "",
              "| cache | compile | build | first epoch | steady epoch | JAX trace+lower+compile "
              "| cache hits | peak RSS |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for k in ("cold", "warm"):
      r = c[k]
      ev = r["jax_events"]
      lines.append(f"| {k} | {r['compile_s']:.1f} s | {r['build_s']:.1f} s "
                   f"| {r['first_epoch_s']:.1f} s | {r['steady_epoch_s']:.2f} s "
                   f"| {ev['trace_s'] + ev['lower_s'] + ev['backend_compile_s']:.1f} s "
                   f"| {ev['cache_hits']} | {_fmt_bytes(r.get('hwm_bytes', r['maxrss_bytes']))} |")
    lines.append("")
  mem = result.get("memory")
  if mem:
    lines += [f"**Memory** ({mem['workload']}, one process per P, one training call; peak RSS "
              "of the training call, RSS growth from after the data load to after the call)", "",
              "| P | population state | per member | XLA temp buffers | peak RSS "
              "| RSS growth | device peak | compiled in the process |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in mem["rows"]:
      lines.append(f"| {r['population']} | {_fmt_bytes(r['state_bytes'])} "
                   f"| {r['state_bytes'] / r['population'] / 1024:.0f} KiB "
                   f"| {_fmt_bytes(r['xla_temp_bytes'])} | {_fmt_bytes(r['peak_rss_bytes'])} "
                   f"| {_fmt_bytes(r['rss_after_bytes'] - r['rss_before_bytes'])} "
                   f"| {_fmt_bytes(r['device_peak_bytes'])} "
                   f"| {r['backend_compile_s']:.1f} s ({r['cache_hits']} cache hits) |")
    lin = mem.get("linearity") or {}
    if lin:
      fits = []
      for key, name in (("state_bytes", "state"), ("peak_rss_bytes", "peak RSS"),
                        ("rss_growth_bytes", "RSS growth")):
        f = lin[key]
        fits.append(f"{name} {f['bytes_per_member'] / 1024:.0f} KiB per member + "
                    f"{f['intercept_bytes'] / 2**20:.1f} MiB (max residual "
                    f"{100 * f['max_relative_residual']:.1f}%)")
      lines += ["", "Line fits in P: " + "; ".join(fits)]
    lines.append("")
  dev = result.get("devices")
  if dev and dev["rows"]:
    r0 = dev["rows"][0]
    lines += [f"**Scaling over devices** ({r0['description']}, {dev['population']} members, "
              f"{r0['steps_per_call']} steps per call, "
              f"{_device_name(r0['platform'], r0['device_kind'])})", ""]
    if dev.get("note"):
      lines += [dev["note"][0].upper() + dev["note"][1:] + ".", ""]
    lines += ["| devices | members per device | member-steps/s (best round) | each round "
              "| speedup | efficiency | compile (first round) |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in dev["rows"]:
      sp = f"{r['speedup']:.2f}x" if "speedup" in r else "n/a"
      ef = f"{100 * r['efficiency']:.0f}%" if "efficiency" in r else "n/a"
      each = ", ".join(f"{v:.1f}" for v in r.get("rounds_member_steps_per_s", []))
      lines.append(f"| {r['devices']} | {r['members_per_device']} | "
                   f"{r['member_steps_per_s']:.1f} | {each} | {sp} | {ef} "
                   f"| {r['compile_s']:.1f} s |")
    lines.append("")
  tta = result.get("tta")
  if tta:
    lines += ["**Time to accuracy** (digits 28x28, same splits, same search space and budget)", "",
              f"| tuner | time to {tta['hpjax']['target']} val accuracy | best val accuracy "
              "| test accuracy of the best | member-epochs | wall time |",
              "| --- | --- | --- | --- | --- | --- |"]
    for key in ("hpjax", "hpjax_warm"):
      h = tta.get(key)
      if not h:
        continue
      cache = f", {h['cache']} compilation cache" if h.get("cache") else ""
      lines.append(f"| {h['tuner']}, {h['members']} members x {h['epochs']} epochs{cache} "
                   f"| {_fmt_s(h['time_to_target_s'])} | {h['best_val_accuracy']:.4f} "
                   f"| {h['best_member']['test_accuracy']:.4f} | {h['member_epochs']} "
                   f"| {h['wall_s']:.1f} s |")
    o = tta.get("optuna")
    if o:
      lines.append(f"| {o['tuner']}, {o['trials']} trials x {o['epochs']} epochs "
                   f"({o['trials_pruned']} pruned; torch threads {o.get('threads')}) "
                   f"| {_fmt_s(o['time_to_target_s'])} | {o['best_val_accuracy']:.4f} "
                   f"| {o['best_trial']['test_accuracy']:.4f} | {o['member_epochs']} "
                   f"| {o['wall_s']:.1f} s |")
    elif tta.get("optuna_note"):
      lines += ["", tta["optuna_note"]]
    lines.append("")
  if result.get("targets"):
    lines += ["**Targets**", "", "| target | goal | measured | met |", "| --- | --- | --- | --- |"]
    for t in result["targets"]:
      v = t["measured"]
      text = "n/a" if v is None else (f"{v:.2f}{t['unit']}" if t["unit"] else f"{v:.3f}")
      lines.append(f"| {t['target']} | {t['goal']} | {text} | {'yes' if t['met'] else 'no'} |")
  return "\n".join(lines)


def _device_name(platform_name: str, kind: str) -> str:
  return platform_name if kind.lower() == platform_name.lower() else f"{platform_name} {kind}"


def _fmt_s(v: float | None) -> str:
  return "not reached" if v is None else f"{v:.1f} s"


def _jsonable(v):
  if isinstance(v, dict):
    return {str(k): _jsonable(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [_jsonable(x) for x in v]
  return v


# ---------------------------------------------------------------------------
# Flags.

_PARTS = flags.DEFINE_list("parts", list(DEFAULT_PARTS), f"Parts to run, of {', '.join(PARTS)}.")
_POPS = flags.DEFINE_list("populations", ["1", "8", "32", "128"], "Population sizes P.")
_WORKLOADS = flags.DEFINE_list("workloads", list(WORKLOADS), f"Of {', '.join(WORKLOADS)}.")
_STEPS = flags.DEFINE_list(
    "steps", [], "Training steps per timed call: N for every workload, or WORKLOAD=N items "
    f"(defaults: {', '.join(f'{k}={v}' for k, v in WORKLOAD_STEPS.items())}).")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Minibatch size of every member.")
_MIN_TIME = flags.DEFINE_float("min_time", 2.0, "Seconds of timed calls per measurement.")
_MIN_REPS = flags.DEFINE_integer("min_reps", 3, "Timed calls per measurement (at least).")
_MAX_TIME = flags.DEFINE_float("max_time", 15.0, "Fewer than --min_reps calls beyond this.")
_ALONE = flags.DEFINE_integer("alone_members", 4, "Members trained one at a time.")
_TORCH = flags.DEFINE_enum("torch", "auto", ["auto", "on", "off"], "PyTorch baselines.")
_TORCH_STEPS = flags.DEFINE_integer("torch_steps", 20, "Timed PyTorch steps per member.")
_TORCH_DEVICE = flags.DEFINE_string("torch_device", "cpu", "cpu, cuda or auto.")
_TORCH_THREADS = flags.DEFINE_integer(
    "torch_threads", 0, "PyTorch intra-op threads; 0: the faster of 1 and torch's default.")
_RESNET = flags.DEFINE_string("resnet", '{"family": "resnet"}',
                              "ModelConfig fields (JSON) of the resnet32 workload.")
_RESNET_N = flags.DEFINE_integer("resnet_examples", 512, "Generated 32x32x3 images.")
_MM_SIZE = flags.DEFINE_integer("matmul_size", 2048, "Side of the timed float32 matmul.")
_MM_REPS = flags.DEFINE_integer("matmul_reps", 5, "Timed matmuls (best is kept).")
_COMPILE_CONFIG = flags.DEFINE_string(
    "compile_config", os.path.join(ROOT, "experiments", "configs", "digits_pbt.py"),
    "Config file whose compile time is measured.")
_COMPILE_OVERRIDE = flags.DEFINE_multi_string(
    "compile_override", [], "FIELD=VALUE changes to --compile_config (repeatable).")
_MEM_WORKLOAD = flags.DEFINE_string("memory_workload", "digits28", "Workload of the memory part.")
_MEM_POPS = flags.DEFINE_list("memory_populations", None,
                              "Population sizes of the memory part (default: --populations).")
_TTA_POP = flags.DEFINE_integer("tta_population", 32, "hpjax members in the time-to-accuracy run.")
_TTA_EPOCHS = flags.DEFINE_integer("tta_epochs", 10, "Epochs (hpjax and each Optuna trial).")
_TTA_TRIALS = flags.DEFINE_integer("tta_trials", 32, "Optuna trials.")
_TTA_TARGET = flags.DEFINE_float("tta_target", 0.97, "Validation accuracy to reach.")
_TTA_SEED = flags.DEFINE_integer("tta_seed", 0, "Seed of both tuners and of the splits.")
_DEV_COUNTS = flags.DEFINE_list("device_counts", ["1", "2", "4"],
                                "Device counts D of the devices part.")
_DEV_POP = flags.DEFINE_integer("device_population", 32, "Members split over the devices.")
_DEV_WORKLOAD = flags.DEFINE_string("device_workload", "digits28",
                                    "Workload of the devices part.")
_DEV_ROUNDS = flags.DEFINE_integer("device_rounds", 2,
                                   "Times each device count is measured, in turn (best kept).")
_CACHE = flags.DEFINE_string("cache_dir", None,
                             "Persistent compilation cache (default: a fresh temporary one).")
_OUT = flags.DEFINE_string("out", None, "Write the results as JSON here.")
_CHILD = flags.DEFINE_enum("child", None, ["compile", "memory", "devices", "tta"],
                           "Internal: run one child part.")
_CHILD_POP = flags.DEFINE_integer("child_population", 1, "Internal: P of a memory child.")
_CHILD_DEVICES = flags.DEFINE_integer("child_devices", 1, "Internal: D of a devices child.")


def options_from_flags(argv: Sequence[str] = ()) -> Options:
  """The :class:`Options` the command-line flags describe."""
  steps: dict[str, int] = {}
  workloads = tuple(_WORKLOADS.value)
  for item in _STEPS.value:
    if "=" in item:
      k, v = item.split("=", 1)
      steps[k] = int(v)
    else:
      steps.update({w: int(item) for w in WORKLOADS})
  for flag, names in (("workloads", workloads), ("memory_workload", [_MEM_WORKLOAD.value]),
                      ("device_workload", [_DEV_WORKLOAD.value])):
    for w in names:
      if w not in WORKLOADS:
        raise app.UsageError(f"--{flag}: unknown value {w!r}; allowed: {', '.join(WORKLOADS)}")
  try:
    counts = tuple(int(d) for d in _DEV_COUNTS.value)
  except ValueError:
    counts = ()
  if not counts or min(counts) < 1:
    raise app.UsageError(f"--device_counts: must be positive integers, got "
                         f"{','.join(_DEV_COUNTS.value)}")
  return Options(
      parts=tuple(_PARTS.value), populations=tuple(int(p) for p in _POPS.value),
      workloads=workloads, steps=steps, batch_size=_BATCH.value, min_time=_MIN_TIME.value,
      min_reps=_MIN_REPS.value, max_time=_MAX_TIME.value, alone_members=_ALONE.value,
      torch=_TORCH.value, torch_steps=_TORCH_STEPS.value, torch_device=_TORCH_DEVICE.value,
      torch_threads=_TORCH_THREADS.value, resnet=json.loads(_RESNET.value),
      resnet_examples=_RESNET_N.value, matmul_size=_MM_SIZE.value, matmul_reps=_MM_REPS.value,
      compile_config=_COMPILE_CONFIG.value, compile_overrides=tuple(_COMPILE_OVERRIDE.value),
      memory_workload=_MEM_WORKLOAD.value,
      memory_populations=(tuple(int(p) for p in _MEM_POPS.value) if _MEM_POPS.value else None),
      tta_population=_TTA_POP.value,
      tta_epochs=_TTA_EPOCHS.value, tta_trials=_TTA_TRIALS.value, tta_target=_TTA_TARGET.value,
      tta_seed=_TTA_SEED.value, device_counts=counts, device_population=_DEV_POP.value,
      device_workload=_DEV_WORKLOAD.value, device_rounds=_DEV_ROUNDS.value,
      cache_dir=_CACHE.value, argv=tuple(argv))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  opts = options_from_flags(sys.argv[1:])
  if _CHILD.value:
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update("jax_compilation_cache_dir", opts.cache_dir)
    # Memory children reuse every program the parent compiled; the compile
    # and time-to-accuracy children cache what experiments/tune.py caches.
    min_secs = (0.0 if _CHILD.value in ("memory", "devices")
                else float(os.environ.get("HPJAX_CACHE_MIN_SECS", "0")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_secs)
    if _CHILD.value == "compile":
      out = child_compile(opts)
    elif _CHILD.value == "memory":
      out = child_memory(opts, _CHILD_POP.value)
    elif _CHILD.value == "devices":
      out = child_devices(opts, _CHILD_DEVICES.value)
    else:
      out = tta_hpjax(opts, log=lambda line: print(line, flush=True))
    print(_CHILD_MARK + json.dumps(out), flush=True)
    return 0
  from absl import logging  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  start = time.perf_counter()
  result = run(opts, log=lambda line: print(f"[{time.perf_counter() - start:6.1f} s] {line}",
                                            flush=True))
  print("\n" + markdown(result))
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(result, f, indent=2)
  return 0


if __name__ == "__main__":
  app.run(main)

"""What every benchmark part shares: its options, workloads, states, timing and children.

* :class:`Options` is the one definition of the benchmark's settings: its
  fields (type, default, help, allowed values) generate the command-line
  flags (:func:`define_flags`), read them back (:func:`options_from_flags`)
  and give a child process the very same settings (:func:`to_argv`).
* A workload (:func:`load_workload`) is a dataset and the structural
  hyperparameters of its model; :func:`members` are the members every part
  trains (mixed learning rates, activations and optimizers).
* States come from the engine's own group init (:func:`init_states`), the
  program :class:`hpjax.Population` initialises its members with.
* :func:`seconds` is the one timing primitive; :func:`time_calls` (adaptive
  repetitions) and :func:`in_turn` (variants taking turns) build on it.
* :func:`run_child` runs one part in a fresh process
  (``python -m experiments.benchmark --child=KIND``) and reads its JSON.

Nothing here imports JAX at module level: the flags are defined and read
before any backend starts.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator, Mapping, Sequence
import dataclasses
import importlib.util
import json
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import time
import types
import typing
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = (
  "throughput",
  "flops",
  "compile",
  "memory",
  "devices",
  "tta",
  "levers",
  "programs",
  "stream",
)
DEFAULT_PARTS = ("throughput", "flops", "compile", "memory", "devices")
ACTS = ("relu", "tanh", "sigmoid")
OPTS = ("sgd", "rmsprop", "adam")
CONV_IMPLS = ("slices", "xla")
# hpjax.models.COMPUTE_DTYPES, written out: importing hpjax.models imports
# flax and JAX, which this module leaves until a part runs (a test checks
# that the two agree).
COMPUTE_DTYPES = ("float32", "bfloat16")
# Default training steps per timed call: enough to dwarf the per-call
# overhead, few enough that P=128 fits the 10-minute budget on 2 cores.
WORKLOAD_STEPS = {"digits8": 16, "digits28": 4, "resnet32": 1}
WORKLOADS = tuple(WORKLOAD_STEPS)
CHILD_MARK = "BENCHMARK_CHILD_JSON "


# ---------------------------------------------------------------------------
# Options: one definition, flags and child arguments generated from it.


def option(
  default: Any = dataclasses.MISSING,
  help: str = "",  # noqa: A002 - argparse's and absl's name for it
  *,
  choices: Sequence[str] = (),
  factory: Callable[[], Any] | None = None,
  parse: Callable[[str], Any] | None = None,
  fmt: Callable[[Any], str] | None = None,
  repeat: bool = False,
  flag: bool = True,
) -> Any:
  """A field of :class:`Options` with what its flag needs.

  Args:
    default: the default value (or ``factory`` for a dict).
    help: the flag's help text.
    choices: allowed values (of the value, or of each item of a tuple).
    factory: builds a mutable default.
    parse, fmt: text -> value and value -> text, where the field's type
      alone does not say (default: derived from the type).
    repeat: a repeatable flag (``--name=a --name=b``), for items that may
      hold commas.
    flag: False for a field that is not a flag.
  """
  meta = dict(help=help, choices=tuple(choices), parse=parse, fmt=fmt, repeat=repeat, flag=flag)
  if factory is not None:
    return dataclasses.field(default_factory=factory, metadata=meta)
  return dataclasses.field(default=default, metadata=meta)


def _parse_steps(text: str) -> dict[str, int]:
  """``N`` (every workload) or ``WORKLOAD=N`` items, comma-separated."""
  steps: dict[str, int] = {}
  for item in _items(text):
    if "=" in item:
      k, v = item.split("=", 1)
      if k not in WORKLOADS:
        raise ValueError(f"unknown workload {k!r}; allowed: {', '.join(WORKLOADS)}")
      steps[k] = int(v)
    else:
      steps.update({w: int(item) for w in WORKLOADS})
  return steps


def _fmt_steps(steps: Mapping[str, int]) -> str:
  return ",".join(f"{k}={v}" for k, v in steps.items())


@dataclasses.dataclass
class Options:
  """Everything a benchmark run needs; each field is also a flag of the same name."""

  parts: tuple[str, ...] = option(DEFAULT_PARTS, "Parts to run.", choices=PARTS)
  populations: tuple[int, ...] = option(
    (1, 8, 32, 128), "Population sizes P timed per workload (P=1: members one at a time)."
  )
  workloads: tuple[str, ...] = option(
    WORKLOADS, "Workloads of the throughput and flops parts.", choices=WORKLOADS
  )
  conv_impls: tuple[str, ...] = option(
    ("slices",),
    "Convolution implementations timed by the throughput and flops parts (the "
    "structural hyperparameter conv_impl); the other parts use the first.",
    choices=CONV_IMPLS,
  )
  compute_dtypes: tuple[str, ...] = option(
    ("float32",),
    "Computation dtypes timed by the throughput and flops parts, each with every "
    "--conv_impls (the structural hyperparameter compute_dtype: bfloat16 computes in "
    "bfloat16 with float32 parameters); the other parts use the first.",
    choices=COMPUTE_DTYPES,
  )
  steps: dict[str, int] = option(
    help="Training steps per timed call: N for every workload, or WORKLOAD=N items "
    f"(defaults: {_fmt_steps(WORKLOAD_STEPS)}).",
    factory=dict,
    parse=_parse_steps,
    fmt=_fmt_steps,
  )
  batch_size: int = option(32, "Minibatch size of every member.")
  min_time: float = option(2.0, "Seconds of timed calls per measurement (at least).")
  min_reps: int = option(
    3,
    "Timed calls per measurement (at least, while one call stays under "
    "max_time / min_reps seconds).",
  )
  max_time: float = option(
    15.0, "Seconds of timed calls beyond which fewer than min_reps calls are made."
  )
  alone_members: int = option(4, "Members trained one at a time (hpjax P=1 and PyTorch).")
  torch: str = option(
    "auto", "PyTorch baselines: auto (when importable), on or off.", choices=("auto", "on", "off")
  )
  torch_steps: int = option(20, "Timed PyTorch steps per member.")
  torch_device: str = option("cpu", "PyTorch's device.", choices=("cpu", "cuda", "auto"))
  torch_threads: int = option(
    0,
    "PyTorch intra-op threads; 0: the faster of 1 and torch's "
    "default by a short probe (on a shared machine torch's default of "
    "all cores can collapse when another process takes one).",
  )
  resnet: dict[str, Any] = option(
    help="Structural hyperparameters (JSON) of the resnet32 workload's model.",
    factory=lambda: {"family": "resnet"},
    parse=json.loads,
    fmt=json.dumps,
  )
  resnet_examples: int = option(512, "Generated 32x32x3 images (before the val/test split).")
  matmul_size: int = option(2048, "Side of the timed float32 matmul (the flops part's limit).")
  matmul_reps: int = option(5, "Timed matmuls (the best is kept).")
  compile_config: str = option(
    os.path.join(ROOT, "experiments", "configs", "digits_pbt.py"),
    "Config file whose compile time the compile part measures.",
  )
  compile_overrides: tuple[str, ...] = option(
    (), "FIELD=VALUE changes to compile_config (repeatable).", repeat=True
  )
  compile_batch_mode: str = option(
    "auto",
    "hpjax.Population's batch_mode in the compile part: 'traced' (one program, "
    "micro-batches), 'structural' (a group per batch size), 'auto' (as a run).",
    choices=("auto", "traced", "structural"),
  )
  memory_workload: str = option("digits28", "Workload of the memory part.", choices=WORKLOADS)
  memory_populations: tuple[int, ...] | None = option(
    None, "Population sizes of the memory part (default: populations)."
  )
  device_counts: tuple[int, ...] = option((1, 2, 4), "Device counts D of the devices part.")
  device_population: int = option(32, "Members split over the devices.")
  device_workload: str = option("digits28", "Workload of the devices part.", choices=WORKLOADS)
  device_rounds: int = option(2, "Times each device count is measured, in turn (best kept).")
  tta_config: str = option(
    "experiments/configs/digits28_pbt.py",
    "hpjax's config of the time-to-accuracy run (the same space as "
    "Optuna's; e.g. experiments/configs/digits28_budget.py).",
  )
  tta_population: int = option(32, "hpjax members in the time-to-accuracy run.")
  tta_epochs: int = option(10, "Epochs (hpjax and each Optuna trial).")
  tta_trials: int = option(32, "Optuna trials.")
  tta_target: float = option(0.97, "Validation accuracy to reach.")
  tta_seeds: tuple[int, ...] = option(
    (0,),
    "Seeds of the time-to-accuracy part, one after another: each draws the splits, "
    "hpjax's members and Optuna's sampler, and runs every tuner in turn.",
  )
  lever_workload: str = option("digits28", "Workload of the levers part.", choices=WORKLOADS)
  lever_population: int = option(32, "Members of the levers part.")
  lever_rounds: int = option(3, "Timed calls per variant of the levers part, taking turns.")
  programs_workload: str = option("digits8", "Workload of the programs part.", choices=WORKLOADS)
  programs_population: int = option(8, "Members of the programs part.")
  programs_rounds: int = option(2, "Compiles per program and setting, alternating (best kept).")
  programs_reps: int = option(5, "Timed calls per program (median reported).")
  eval_batches: tuple[int, ...] = option((256, 64, 32), "Eval batch sizes of the programs part.")
  stream_workload: str = option("digits28", "Workload of the stream part.", choices=WORKLOADS)
  stream_population: int = option(32, "Members of the stream part.")
  stream_rounds: int = option(3, "Epochs per variant of the stream part, taking turns (best kept).")
  stream_calls: tuple[int, ...] = option(
    (1, 4, 8, 39), "Batches per jitted call (Stream.steps_per_call) timed by the stream part."
  )
  cache_dir: str | None = option(
    None,
    "Persistent compilation cache of this process and the "
    "children (default: a fresh temporary one, so compiles are "
    "cold).",
  )
  argv: tuple[str, ...] = option((), flag=False)

  def steps_for(self, workload: str) -> int:
    """Training steps per timed call of ``workload``."""
    return int(self.steps.get(workload, WORKLOAD_STEPS[workload]))

  def validate(self) -> "Options":
    """Checks every field's allowed values and bounds; returns self.

    Raises:
      ValueError: one line naming the flag.
    """
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      choices = f.metadata.get("choices")
      if choices:
        for v in value if isinstance(value, tuple) else (value,):
          if v not in choices:
            raise ValueError(f"--{f.name}: unknown value {v!r}; allowed: {', '.join(choices)}")
    for name in ("populations", "device_counts", "eval_batches", "stream_calls"):
      values = getattr(self, name)
      if not values or min(values) < 1:
        raise ValueError(f"--{name}: must be positive integers, got {list(values)}")
    if self.memory_populations is not None and (
      not self.memory_populations or min(self.memory_populations) < 1
    ):
      raise ValueError(
        f"--memory_populations: must be positive integers, got {list(self.memory_populations)}"
      )
    if (
      not self.tta_seeds
      or min(self.tta_seeds) < 0
      or len(set(self.tta_seeds)) < len(self.tta_seeds)
    ):
      raise ValueError(
        f"--tta_seeds: must be distinct non-negative integers, got {list(self.tta_seeds)}"
      )
    for name in (
      "batch_size",
      "min_reps",
      "alone_members",
      "torch_steps",
      "resnet_examples",
      "matmul_size",
      "matmul_reps",
      "device_population",
      "device_rounds",
      "tta_population",
      "tta_epochs",
      "tta_trials",
      "lever_population",
      "lever_rounds",
      "programs_population",
      "programs_rounds",
      "programs_reps",
      "stream_population",
      "stream_rounds",
    ):
      if getattr(self, name) < 1:
        raise ValueError(f"--{name}: must be >= 1, got {getattr(self, name)}")
    if not self.conv_impls:
      raise ValueError("--conv_impls: at least one of " + ", ".join(CONV_IMPLS))
    if not self.compute_dtypes:
      raise ValueError("--compute_dtypes: at least one of " + ", ".join(COMPUTE_DTYPES))
    return self


def _items(text: str) -> list[str]:
  return [t.strip() for t in text.split(",") if t.strip()]


class _Codec(typing.NamedTuple):
  parse: Callable[[str], Any]
  fmt: Callable[[Any], str]


def _codec(field: dataclasses.Field, tp: Any) -> _Codec:
  """How a field's value is read from and written to its flag's text."""
  meta = field.metadata
  if typing.get_origin(tp) in (typing.Union, types.UnionType):
    (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
  origin = typing.get_origin(tp) or tp
  if meta["parse"] is not None:
    return _Codec(meta["parse"], meta["fmt"])
  if origin is tuple:
    item = typing.get_args(tp)[0]
    return _Codec(lambda s: tuple(item(v) for v in _items(s)), lambda v: ",".join(map(str, v)))
  if origin is dict:
    return _Codec(json.loads, json.dumps)
  if tp is bool:
    return _Codec(_parse_bool, lambda v: "true" if v else "false")
  if tp is float:
    return _Codec(float, repr)
  if tp in (int, str):
    return _Codec(tp, str)
  raise TypeError(f"Options.{field.name}: no flag for type {tp!r}")


def _parse_bool(text: str) -> bool:
  if text.lower() in ("true", "1", "yes"):
    return True
  if text.lower() in ("false", "0", "no"):
    return False
  raise ValueError(f"must be true or false, got {text!r}")


def _flag_fields() -> Iterator[tuple[dataclasses.Field, _Codec]]:
  hints = typing.get_type_hints(Options)
  for f in dataclasses.fields(Options):
    if f.metadata["flag"]:
      yield f, _codec(f, hints[f.name])


def _default(f: dataclasses.Field) -> Any:
  return f.default_factory() if f.default is dataclasses.MISSING else f.default


def define_flags(flag_values=None, **defaults: Any) -> None:
  """Defines one flag per field of :class:`Options` (a tuple as a comma-separated list).

  Args:
    flag_values: an ``absl.flags.FlagValues`` (default: the global flags).
    **defaults: field values that replace the dataclass's defaults (a thin
      main's own defaults).
  """
  from absl import flags  # pylint: disable=g-import-not-at-top

  flag_values = flags.FLAGS if flag_values is None else flag_values
  unknown = set(defaults) - {f.name for f, _ in _flag_fields()}
  if unknown:
    raise ValueError(f"define_flags: unknown options {sorted(unknown)}")
  for f, codec in _flag_fields():
    value = defaults.get(f.name, _default(f))
    help_text = f.metadata["help"]
    if f.metadata["choices"]:
      help_text += f" Allowed: {', '.join(f.metadata['choices'])}."
    if f.metadata["repeat"]:
      flags.DEFINE_multi_string(f.name, list(value), help_text, flag_values=flag_values)
    else:
      flags.DEFINE_string(
        f.name, None if value is None else codec.fmt(value), help_text, flag_values=flag_values
      )


def options_from_flags(flag_values=None, argv: Sequence[str] = ()) -> Options:
  """The :class:`Options` the flags defined by :func:`define_flags` hold.

  Raises:
    ValueError: a value that does not parse or is not allowed, naming the flag.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top

  flag_values = flags.FLAGS if flag_values is None else flag_values
  values: dict[str, Any] = {}
  for f, codec in _flag_fields():
    text = flag_values[f.name].value
    if f.metadata["repeat"]:
      values[f.name] = tuple(text or ())
      continue
    if text is None:
      values[f.name] = None
      continue
    try:
      values[f.name] = codec.parse(text)
    except (ValueError, TypeError) as e:
      raise ValueError(f"--{f.name}: cannot read {text!r}: {e}") from None
  return Options(**values, argv=tuple(argv)).validate()


def to_argv(opts: Options) -> list[str]:
  """Flags that give another process exactly ``opts`` (every field but ``argv``)."""
  out = []
  for f, codec in _flag_fields():
    value = getattr(opts, f.name)
    if f.metadata["repeat"]:
      out += [f"--{f.name}={v}" for v in value]
    elif value is not None:
      out.append(f"--{f.name}={codec.fmt(value)}")
  return out


def flag_names() -> tuple[str, ...]:
  """The names of the flags :func:`define_flags` defines."""
  return tuple(f.name for f, _ in _flag_fields())


# ---------------------------------------------------------------------------
# Workloads, members and their states.


@dataclasses.dataclass
class Workload:
  """A dataset and the model every member of a benchmark trains on it.

  Attributes:
    name: one of :data:`WORKLOADS`.
    data: the :class:`hpjax.Dataset`.
    structural: the model's structural hyperparameters (``family``,
      ``width``, ...; the table's defaults for the others).
    description: one line for the tables.
  """

  name: str
  data: Any
  structural: dict
  description: str


def load_workload(name: str, opts: Options) -> Workload:
  """The dataset and model of a workload (``resnet32``: ``opts.resnet``, generated images)."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  import hpjax  # pylint: disable=g-import-not-at-top
  from hpjax import hparams as hp_lib  # pylint: disable=g-import-not-at-top

  if name == "digits8":
    return Workload(name, hpjax.load_dataset("digits", seed=0), {}, "bench CNN, digits 8x8")
  if name == "digits28":
    return Workload(
      name, hpjax.load_dataset("digits", image_size=28, seed=0), {}, "bench CNN, digits 28x28"
    )
  if name == "resnet32":
    rng = np.random.default_rng(0)
    n = opts.resnet_examples
    x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.int32)
    structural = {k: hp_lib.lookup(k).check(v, f"--resnet: {k}") for k, v in opts.resnet.items()}
    m = {k: hp_lib.BUILTIN[k].default for k in hp_lib.MODEL_STRUCTURAL} | structural
    desc = (
      f"ResNet depth {m['depth']} width {m['width']} x{m['convs_per_stage']} blocks"
      f"{' BN' if m['batch_norm'] else ''}, random 32x32x3"
    )
    return Workload(
      name, hpjax.dataset_from_arrays("random32x32x3", x, y, seed=0), structural, desc
    )
  raise ValueError(f"--workloads: unknown value {name!r}; allowed: {', '.join(WORKLOADS)}")


def members(n: int, batch_size: int, structural: Mapping[str, Any] | None = None) -> list:
  """``n`` members with mixed learning rates, activations and optimizers.

  Member ``i`` is the same in every population it belongs to (its rate is
  log-spaced over ``n``, its activation and optimizer cycle with ``i``).
  """
  import numpy as np  # pylint: disable=g-import-not-at-top

  import hpjax  # pylint: disable=g-import-not-at-top

  lrs = np.logspace(-3.5, -1.5, n) if n > 1 else [1e-3]
  return [
    hpjax.Member(
      learning_rate=float(lrs[i]),
      activation=ACTS[i % 3],
      optimizer=OPTS[(i // 3) % 3],
      batch_size=batch_size,
      **dict(structural or {}),
    )
    for i in range(n)
  ]


def one_member_population(data, structural: Mapping[str, Any], batch_size: int):
  """A one-member population of a workload: its group serves every P.

  The group's spec (model, batch size, compiled candidates, schedule) does
  not depend on P; :func:`init_states` builds states of any size with it.
  """
  import hpjax  # pylint: disable=g-import-not-at-top

  return hpjax.Population(
    members(1, batch_size, structural),
    data,
    candidates={"activation": ACTS, "optimizer": OPTS},
    mesh=None,
  )


def init_states(pop, group_members: Sequence[Any], size: int, spec=None) -> Iterator[Any]:
  """States of ``size`` members each, from the population's own group init.

  Member ``i`` of ``group_members`` is initialised from ``(pop.seed, i)``
  with its own hyperparameters (``pop.hparam_arrays``), by the group's
  ``init`` (:func:`hpjax.engine.group_functions`): what
  :class:`hpjax.Population` does for a group of those members. ``size=1``
  gives one state per member (members trained one at a time). A generator:
  one state is built at a time.

  Args:
    pop: a one-group population (:func:`one_member_population`).
    group_members: the members (of that group's structural values).
    size: members per state.
    spec: a variant of the group's :class:`hpjax.engine.GroupSpec` whose init
      builds the states (default: the group's own).
  """
  from hpjax import engine  # pylint: disable=g-import-not-at-top

  (group,) = pop.groups
  fns = engine.group_functions(spec or group.fns.spec)
  hp = pop.hparam_arrays([pop.resolve(m) for m in group_members])
  keys = engine.member_keys(pop.seed, range(len(group_members)))
  for i in range(0, len(group_members), size):
    yield fns.init(keys[i : i + size], {k: v[i : i + size] for k, v in hp.items()})


def training_slice(data, steps: int, batch_size: int):
  """The first ``steps x batch_size`` training examples: what one timed call trains on."""
  n = steps * batch_size
  if n > data.num_train:
    raise ValueError(
      f"--steps: {steps} steps of {batch_size} need {n} training examples, "
      f"{data.name} has {data.num_train}"
    )
  return data.x_train[:n], data.y_train[:n]


def tree_bytes(tree) -> int:
  """Bytes of every array in ``tree``."""
  import jax  # pylint: disable=g-import-not-at-top

  return int(sum(a.nbytes for a in jax.tree.leaves(tree)))


@dataclasses.dataclass
class Compiled:
  """A group's epoch compiled ahead of time for states shaped like one.

  Attributes:
    executable: the compiled ``train_epoch`` (donates its state).
    compile_s: seconds to compile it.
    flops: XLA's cost analysis of it (None where not reported).
    temp_bytes: XLA's temporary buffers (None where not reported).
    matmuls: the program's matrix products (:func:`matmuls_of`), when asked for.
  """

  executable: Any
  compile_s: float
  flops: float | None
  temp_bytes: int | None
  matmuls: list[tuple[Matmul, int]] | None = None


def cost(compiled_or_lowered) -> dict[str, Any]:
  """XLA's cost analysis as one dict (older jax returned one per program)."""
  c = compiled_or_lowered.cost_analysis()
  if isinstance(c, (list, tuple)):
    c = c[0] if c else {}
  return dict(c or {})


def compile_epoch(train_epoch, state, x, y, matmuls: bool = False) -> Compiled:
  """Compiles ``train_epoch`` for ``state`` and data ``x, y``; reports its cost.

  With ``matmuls``, also lists the program's matrix products (outside the timing).
  """
  start = time.perf_counter()
  lowered = train_epoch.lower(state, x, y)
  executable = lowered.compile()
  compile_s = time.perf_counter() - start
  found = None
  if matmuls:
    text = lowered.as_text()
    # Convolutions (conv_impl xla) are not matrix products this module can
    # time alone: a ceiling from the dense layers' products would be no bound.
    found = None if "stablehlo.convolution" in text else matmuls_of(text)
  flops = cost(executable).get("flops")
  try:
    temp = int(executable.memory_analysis().temp_size_in_bytes)
  except Exception:  # noqa: BLE001 - not every backend reports it
    temp = None
  return Compiled(executable, compile_s, None if flops is None else float(flops), temp, found)


# ---------------------------------------------------------------------------
# A program's matrix products, timed alone: a ceiling on its share of the matmul rate.

_DOT = re.compile(
  r"stablehlo\.dot_general\s+%[^,\s]+,\s*%[^,\s]+,(?P<attrs>[^:]*):\s*"
  r"\((?P<lhs>tensor<[^>]*>),\s*(?P<rhs>tensor<[^>]*>)\)"
)
_DIMS = r"{} = \[([0-9, ]*)\] x \[([0-9, ]*)\]"
_DTYPES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16", "f64": "float64"}


@dataclasses.dataclass(frozen=True)
class Matmul:
  """One ``dot_general`` of a program: operand shapes, dtype and dimension numbers."""

  lhs: tuple[int, ...]
  rhs: tuple[int, ...]
  dtype: str
  contracting: tuple[tuple[int, ...], tuple[int, ...]]
  batch: tuple[tuple[int, ...], tuple[int, ...]]

  @property
  def flops(self) -> int:
    """Multiply-adds x 2: every lhs element meets each free rhs column once."""
    bound = set(self.contracting[1]) | set(self.batch[1])
    free = [d for i, d in enumerate(self.rhs) if i not in bound]
    return 2 * math.prod(self.lhs) * math.prod(free)


def _tensor(text: str) -> tuple[tuple[int, ...], str]:
  *dims, dtype = text[len("tensor<") : -1].split("x")
  return tuple(int(d) for d in dims), _DTYPES.get(dtype, dtype)


def _dims(attrs: str, name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
  m = re.search(_DIMS.format(name), attrs)
  if not m:
    return (), ()
  return tuple(
    tuple(int(v) for v in group.split(",") if v.strip()) for group in (m.group(1), m.group(2))
  )


def matmuls_of(stablehlo: str) -> list[tuple[Matmul, int]]:
  """The matrix products written in a lowered program's StableHLO text, with counts.

  A product inside a loop body is written (and counted) once: one count is
  one execution per trip of every loop around it.
  """
  found: dict[Matmul, int] = {}
  for m in _DOT.finditer(stablehlo):
    (lhs, dtype), (rhs, _) = _tensor(m.group("lhs")), _tensor(m.group("rhs"))
    attrs = m.group("attrs")
    mm = Matmul(lhs, rhs, dtype, _dims(attrs, "contracting_dims"), _dims(attrs, "batching_dims"))
    found[mm] = found.get(mm, 0) + 1
  return list(found.items())


def time_matmuls(
  matmuls: Sequence[tuple[Matmul, int]], reps: int, square: int = 2048, runs: int = 3
) -> dict[str, Any]:
  """The products alone, each as often as counted, in one program: best of ``reps``.

  What a program made of nothing but these products would take: its time
  bounds from below that of any program doing them, at the rate XLA reaches
  on these shapes. A ``square`` x ``square`` matmul of the same dtype takes
  turns with it, so that ``fraction_of_matmul`` compares two rates measured
  under the same load. Each turn runs the products once untimed and then
  ``runs`` times back to back, timed: warm, as the epoch's loop runs them
  (right after the square matmul their first call finds cold caches, 2.2x
  slower at 8x8).
  """
  import jax  # pylint: disable=g-import-not-at-top

  # One pair of operands per execution: identical products would be merged.
  each = [m for m, n in matmuls for _ in range(n)]
  keys = iter(jax.random.split(jax.random.key(0), 2 * len(each) + 2))
  operands = [
    (jax.random.normal(next(keys), m.lhs, m.dtype), jax.random.normal(next(keys), m.rhs, m.dtype))
    for m in each
  ]
  dims = [(m.contracting, m.batch) for m in each]
  dtype = each[0].dtype
  big = [jax.random.normal(next(keys), (square, square), dtype) for _ in range(2)]

  @jax.jit
  def products(ops):
    return [jax.lax.dot_general(a, b, d) for (a, b), d in zip(ops, dims)]

  dot = jax.jit(jax.numpy.dot)
  jax.block_until_ready((products(operands), dot(*big)))

  def warm():
    jax.block_until_ready(products(operands))
    start = time.perf_counter()
    for _ in range(runs):
      out = products(operands)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / runs

  best, best_square = math.inf, math.inf
  for _ in range(reps):
    best_square = min(best_square, seconds(lambda: dot(*big)))
    best = min(best, warm())
  flops = float(sum(m.flops * n for m, n in matmuls))
  return {
    "count": len(each),
    "flops": flops,
    "best_s": best,
    "flops_per_s": flops / best,
    "square": square,
    "square_flops_per_s": 2.0 * square**3 / best_square,
    "fraction_of_matmul": flops / best / (2.0 * square**3 / best_square),
  }


# ---------------------------------------------------------------------------
# Timing.


def seconds(call: Callable[[], Any]) -> float:
  """Wall seconds of ``call()`` until everything it returns is ready on the device."""
  import jax  # pylint: disable=g-import-not-at-top

  start = time.perf_counter()
  jax.block_until_ready(call())
  return time.perf_counter() - start


def repetitions(first_s: float, opts: Options) -> int:
  """How many timed calls after a first one that took ``first_s`` seconds."""
  first_s = max(first_s, 1e-6)
  return max(
    math.ceil(opts.min_time / first_s),
    min(opts.min_reps, max(1, math.floor(opts.max_time / first_s))),
  )


def time_calls(call: Callable[[], Any], work: float, opts: Options) -> dict[str, Any]:
  """Times ``call`` (one unit of ``work`` member-steps each) for at least ``opts.min_time``.

  Returns:
    ``member_steps_per_s`` (from the median call), ``best_member_steps_per_s``
    (the fastest call), ``call_s`` (all timed calls) and ``first_call_s``.
  """
  first = seconds(call)
  # A long first call is a fair sample (no compile: executables are ready);
  # a short one may carry one-off allocation costs.
  times = [first] if first >= 5.0 else []
  reps = repetitions(first, opts)
  while len(times) < reps:
    times.append(seconds(call))
  return {
    "member_steps_per_s": work / statistics.median(times),
    "best_member_steps_per_s": work / min(times),
    "call_s": times,
    "first_call_s": first,
  }


def in_turn(calls: Mapping[str, Callable[[], Any]], reps: int) -> dict[str, list[float]]:
  """Times every call ``reps`` times, taking turns (a drifting load touches each alike)."""
  times: dict[str, list[float]] = {k: [] for k in calls}
  for _ in range(reps):
    for name, call in calls.items():
      times[name].append(seconds(call))
  return times


def matmul_rate(size: int, reps: int, dtype: str = "float32") -> dict[str, Any]:
  """The machine's matmul rate in ``dtype`` through XLA (best of ``reps``)."""
  import jax  # pylint: disable=g-import-not-at-top

  ka, kb = jax.random.split(jax.random.key(0))
  a = jax.random.normal(ka, (size, size), dtype)
  b = jax.random.normal(kb, (size, size), dtype)
  f = jax.jit(jax.numpy.dot)
  jax.block_until_ready(f(a, b))
  best = min(in_turn({"matmul": lambda: f(a, b)}, reps)["matmul"])
  return {
    "size": size,
    "reps": reps,
    "dtype": dtype,
    "best_s": best,
    "flops_per_s": 2.0 * size**3 / best,
  }


# ---------------------------------------------------------------------------
# Processes: configs, compile events, memory, children.


def load_config(path: str, overrides: Sequence[str] = ()):
  """``get_config()`` of a config file, with ``FIELD=VALUE`` overrides applied."""
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


def union_seconds(spans: Sequence[tuple[float, float]]) -> float:
  """The length of the union of ``(start, end)`` intervals: time covered by any of them."""
  total, reach = 0.0, float("-inf")
  for start, end in sorted(spans):
    if end > reach:
      total += end - max(start, reach)
      reach = end
  return total


def compile_events() -> dict[str, float]:
  """A dict that sums JAX's compile-related durations and counts cache hits from now on.

  ``compile_wall_s`` is the wall time during which JAX traced, lowered or
  compiled anything: the union of those events' spans. Unlike the sums it
  counts programs compiled at the same time (in threads) once, and unlike
  a difference of epoch times it holds no training.
  """
  import jax  # pylint: disable=g-import-not-at-top

  sums = {
    "trace_s": 0.0,
    "lower_s": 0.0,
    "backend_compile_s": 0.0,
    "cache_hits": 0,
    "cache_retrieval_s": 0.0,
    "compile_wall_s": 0.0,
  }
  names = {
    "/jax/core/compile/jaxpr_trace_duration": "trace_s",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
    "/jax/core/compile/backend_compile_duration": "backend_compile_s",
    "/jax/compilation_cache/cache_retrieval_time_sec": "cache_retrieval_s",
  }
  # Tracing, lowering and compiling: the events whose spans make compile_wall_s.
  span_events = {e for e, k in names.items() if k != "cache_retrieval_s"}
  spans: list[tuple[float, float]] = []

  def on_span(event, start, end, **kw):
    del kw
    if event in span_events:
      spans.append((start, end))
      sums["compile_wall_s"] = union_seconds(spans)

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
  jax.monitoring.register_event_time_span_listener(on_span)
  return sums


def rss() -> dict[str, int]:
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


def reset_peak_rss() -> bool:
  """Resets this process's peak RSS (Linux ``clear_refs``); False where unsupported."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
  except OSError:
    return False
  return True


def device_peak() -> int | None:
  """The first device's peak memory in use, where the backend reports it."""
  import jax  # pylint: disable=g-import-not-at-top

  stats = jax.devices()[0].memory_stats() or {}
  v = stats.get("peak_bytes_in_use")
  return int(v) if v is not None else None


def whole_process(
  cmd: Sequence[str], timeout: float = 3600, env: Mapping[str, str] | None = None
) -> tuple[float, subprocess.CompletedProcess]:
  """Runs a command from the repository root; returns (wall seconds, the completed process).

  The wall time is the whole process's: interpreter start, imports, data,
  compiles and the end included, what a user waits for.
  """
  start = time.perf_counter()
  r = subprocess.run(
    list(cmd),
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=timeout,
    env=dict(os.environ, PYTHONUNBUFFERED="1", **dict(env or {})),
    check=False,
  )
  return time.perf_counter() - start, r


def run_child(
  kind: str,
  opts: Options,
  extra: Sequence[str] = (),
  timeout: float = 900,
  env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
  """Runs ``python -m experiments.benchmark --child=KIND`` with ``opts``; returns its JSON.

  Args:
    kind: the child part.
    opts: every option, passed on as flags (:func:`to_argv`).
    extra: more flags (``--child_population=P``, ...).
    timeout: seconds.
    env: additions to (or replacements in) this process's environment.
  """
  cmd = [sys.executable, "-m", "experiments.benchmark", f"--child={kind}", *to_argv(opts), *extra]
  start = time.perf_counter()
  r = subprocess.run(
    cmd,
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=timeout,
    env=dict(os.environ, PYTHONUNBUFFERED="1", **dict(env or {})),
    check=False,
  )
  wall = time.perf_counter() - start
  lines = [l for l in r.stdout.splitlines() if l.startswith(CHILD_MARK)]
  if r.returncode != 0 or not lines:
    raise RuntimeError(
      f"benchmark child {kind!r} failed (exit {r.returncode}):\n" + r.stderr[-3000:]
    )
  out = json.loads(lines[-1][len(CHILD_MARK) :])
  out["process_wall_s"] = wall
  return out

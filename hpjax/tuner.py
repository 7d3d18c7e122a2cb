"""Tuning runs: :func:`tune` for Python users, :func:`run` for config files.

Both build an :class:`Experiment` (what to train: data, members drawn from
the search space, model, loss, metric, controller, budget) and hand it to
:func:`execute`, which owns the workdir:

* ``config.json``: the resolved config (for :func:`tune`, a description of
  the call); a relaunch on the same workdir resumes only under an equal one;
* ``metrics.jsonl``, ``lineage.jsonl``, ``tensorboard/``: the writers
  (:mod:`hpjax.writers`);
* ``checkpoints/``: the population and the loop's counters after every epoch
  (:mod:`hpjax.checkpoint`); the newest complete one is resumed from;
* ``summary.json``, ``best/`` (the best member's model, its hyperparameter
  schedule and a config that retrains it), ``report.json`` and ``plots/``.

The epoch loop itself is :func:`hpjax.loop.train`.

Example (:func:`tune`)::

  class CNN(nnx.Module):
    def __init__(self, width, *, rngs):   # structural hyperparameters
      self.conv = hpjax.nn.Conv(1, width, 3, rngs=rngs)
      self.out = nnx.Linear(width * 196, 10, rngs=rngs)
    def __call__(self, x, hp):            # traced ones
      x = hpjax.nn.activation(self.conv(x), hp["activation"])
      return self.out(hpjax.nn.max_pool(x).reshape(x.shape[0], -1))

  results = hpjax.tune(CNN, (x, y), {
      "learning_rate": hpjax.Float(1e-4, 1e-1, log=True),
      "activation": hpjax.Choice(["relu", "tanh"]),
      "width": hpjax.Choice([16, 32], structural=True)},
      population=16, epochs=10, controller=hpjax.PBT())
  results.best.hparams, results.best_model(), results.dataframe()
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import json
import math
import os
import tempfile
from typing import Any

import numpy as np

from hpjax import checkpoint
from hpjax import config as config_lib
from hpjax import distributed
from hpjax import engine
from hpjax import fitness as fitness_lib
from hpjax import hparams as hp_lib
from hpjax import lineage
from hpjax import loop
from hpjax import losses as losses_lib
from hpjax import optim
from hpjax import space as space_lib
from hpjax import timing
from hpjax import writers as writers_lib
from hpjax.controllers import Controller
from hpjax.controllers import Halving
from hpjax.controllers import lr_range
from hpjax.controllers import PBT
from hpjax.controllers import PBTHalving
from hpjax.controllers import Sweep
from hpjax.data import Dataset
from hpjax.data import dataset_from_arrays
from hpjax.data import load_dataset
from hpjax.data import Stream
from hpjax.loop import Interrupted  # noqa: F401 - re-exported: hpjax.cli.tune catches it
from hpjax.population import Population


@dataclasses.dataclass
class Experiment:
  """Everything one run needs.

  Attributes:
    data: the dataset.
    members: the initial members' hyperparameters (dicts).
    space: the search space (name -> dimension).
    controller: PBT, halving or a plain sweep.
    fitness: the ranked validation metric (the metric's name or ``loss``).
    mode: its direction.
    epochs: epochs to train.
    seed: the run's seed.
    config: what ``config.json`` records; a resume requires an equal one.
    model, loss, metric, val_loss: see :class:`hpjax.Population` (None: built in).
    schedule: the learning-rate schedule shape, in epochs.
    candidates: compiled values of traced choices (default: the space's).
    eval_batch_size, shard, shared_order: see :class:`hpjax.Population`.
    checkpoint_every, checkpoint_keep: checkpoint cadence and retention.
    tensorboard, report, progress: what the run shows and leaves.
    lr_range_test: analyse the run as a learning-rate range test.
    hparam_schedule: per epoch, the hyperparameters of a replayed schedule.
    writers: more sinks for the run's results (:class:`hpjax.writers.Writer`),
      besides the workdir's files and the console.
  """

  data: Dataset
  members: list
  space: dict
  controller: Controller
  fitness: str
  mode: str
  epochs: int
  seed: int
  config: dict
  model: Callable | None = None
  loss: Callable | None = None
  metric: Any = None
  val_loss: Callable | None = None
  schedule: optim.EpochSchedule = optim.EpochSchedule()
  candidates: dict | None = None
  eval_batch_size: int = 256
  shard: bool = True
  shared_order: bool = False
  checkpoint_every: int = 1
  checkpoint_keep: int = 3
  tensorboard: bool = True
  report: bool = True
  progress: bool | None = None
  lr_range_test: bool = False
  hparam_schedule: list | None = None
  writers: tuple = ()


# ---------------------------------------------------------------------------
# Building an experiment.


def draw_members(
  space: Mapping[str, Any],
  n: int,
  seed: int,
  init: str = "random",
  base: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
  """The initial members: ``n`` draws from ``space`` over ``base`` values.

  Args:
    space: name -> dimension.
    n: the population size.
    seed: seeds ``random`` and ``quasi_random`` draws.
    init: ``random``, ``grid`` (the full factorial; ``n`` must equal its
      size) or ``quasi_random`` (scrambled Sobol).
    base: values every member starts from (the space's draws override them).

  Raises:
    ValueError: a bad ``init``, or a structural dimension with more values
      than members.
  """
  space_lib.check_structural_fits(space, n)
  if init == "random":
    draws = space_lib.sample_random(space, n, seed)
  elif init == "grid":
    draws = space_lib.sample_grid(space, n)
  elif init == "quasi_random":
    draws = space_lib.sample_quasi_random(space, n, seed)
  else:
    raise config_lib.error(
      "init", f"unknown value {init!r}; allowed: " + ", ".join(config_lib.INITS)
    )
  return [{**dict(base or {}), **d} for d in draws]


def _data_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
  """How a config's ``data`` section loads and splits its source (:func:`_dataset`'s options)."""
  d = cfg["data"]
  return dict(
    data_dir=d["data_dir"] or None,
    image_size=d["image_size"] or None,
    val_fraction=d["val_fraction"],
    test_fraction=d["test_fraction"],
    max_train=d["max_train"] or None,
    num_classes=d["num_classes"] or None,
    task=d["task"],
  )


def _controller_section(section: Mapping[str, Any], fitness: str, mode: str) -> Controller:
  """The controller a config's ``controller`` section names.

  A ``mode`` there must agree with the fitness's direction (it is derived
  from the fitness; the field is accepted only for older configs).
  """
  c = dict(section)
  name = c.pop("name", "none")
  fitness_lib.resolve_mode(c.pop("mode", None), mode, fitness, "config.controller.mode")
  if name == "none":
    if c:
      raise config_lib.error("controller", f"unknown fields {sorted(c)} for a sweep (name none)")
    return Sweep()
  if name == "pbt_halving":
    unknown = set(c) - {"pbt", "halving"}
    if unknown:
      raise config_lib.error(
        "controller", f"unknown fields {sorted(unknown)}; allowed: name, pbt, halving"
      )
    parts = {
      key: _controller_section({**dict(c.get(key) or {}), "name": key}, fitness, mode)
      for key in ("pbt", "halving")
    }
    return PBTHalving(**parts).validate()
  cls = PBT if name == "pbt" else Halving
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = set(c) - fields
  if unknown:
    raise config_lib.error(
      "controller", f"unknown fields {sorted(unknown)}; allowed: name, " + ", ".join(sorted(fields))
    )
  try:
    return cls(**c).validate()
  except (TypeError, ValueError) as e:
    raise config_lib.error("controller", str(e)) from None


def controller_from_config(cfg: Mapping[str, Any], fitness: str, mode: str) -> Controller:
  """The controller a config's ``controller`` section names (see :func:`_controller_section`)."""
  return _controller_section(cfg["controller"], fitness, mode)


def epoch_schedule(cfg: Mapping[str, Any]) -> optim.EpochSchedule:
  """The run's learning-rate schedule shape, in epochs.

  A cosine decays over ``schedule.decay_epochs``; 0 (the default) means
  ``config.epochs``, which ties every step's rate to the run's length.
  """
  s = cfg["schedule"]
  schedule = optim.EpochSchedule(
    s["kind"],
    float(s["warmup_epochs"]),
    float(s["decay_epochs"]) or float(cfg["epochs"]),
    float(s["alpha"]),
  )
  if (
    schedule.kind in ("cosine", "warmup_cosine")
    and not float(s["decay_epochs"])
    and schedule.total_epochs <= schedule.warmup_epochs
  ):
    raise config_lib.error(
      "epochs",
      f"a {schedule.kind} schedule decays after its warm-up "
      f"(schedule.warmup_epochs={s['warmup_epochs']:g}), so it needs more "
      f"epochs than that, got {cfg['epochs']}",
    )
  try:
    return schedule.validate()
  except ValueError as e:
    raise ValueError(f"config.{e}") from None


def _imported(value: str, field: str, check: Callable[[Any], bool], what: str) -> Any:
  """The object an import string of config field ``field`` names, if ``check`` accepts it."""
  obj = config_lib.import_object(value, field)
  if not check(obj):
    raise config_lib.error(field, f"{value!r} is {config_lib.describe(obj)}, not {what}")
  return obj


def _is_metrics(obj: Any) -> bool:
  items = obj if isinstance(obj, (list, tuple)) else [obj]
  return bool(items) and all(isinstance(m, fitness_lib.Metric) for m in items)


def _config_model(cfg: Mapping[str, Any]) -> tuple[Callable | None, dict[str, Any]]:
  """The model factory ``model.factory`` names (None: built in) and its structural values.

  With a factory, ``config.model``'s other fields are its constructor
  arguments. A built-in field (``family``, ``depth``, ...) still at its
  default is left out unless the factory's signature names it: a config made
  from the defaults (or a resumed ``config.json`` filled by ``from_json.py``)
  works unchanged. Any other field the factory does not take is an error.
  """
  section = {k: v for k, v in cfg["model"].items() if k != "factory"}
  if not cfg["model"]["factory"]:
    return None, section
  value = cfg["model"]["factory"]
  factory = _imported(
    value, "model.factory", callable, "an nnx.Module class or a function returning one"
  )
  # The names the engine will pass it (None: it takes **kwargs).
  accepted = engine._accepted(factory)  # pylint: disable=protected-access
  out = {}
  for name, v in section.items():
    named = accepted is not None and name in accepted
    default = hp_lib.BUILTIN[name].default if name in hp_lib.MODEL_STRUCTURAL else None
    if (
      name in hp_lib.MODEL_STRUCTURAL
      and not named
      and v == default
      and isinstance(v, bool) == isinstance(default, bool)
    ):
      continue
    if accepted is not None and not named:
      takes = ", ".join(sorted(accepted - {"self", "rngs", "input_shape", "num_outputs"}))
      raise config_lib.error(
        f"model.{name}",
        f"{value} takes no argument {name!r} (it takes: {takes or 'none'}); "
        "with model.factory, config.model holds the factory's structural arguments only",
      )
    out[name] = v
  return factory, out


def from_config(config: Any) -> Experiment:
  """Validates a launcher config completely and builds its :class:`Experiment`.

  The config's import strings (``model.factory``, ``data.source``, ``loss``,
  ``metric``) are imported here, from this config only (a workdir's
  ``config.json`` is only compared with it); the experiment is then built by
  the same code as :func:`tune`'s.

  Every error (a typo, a value out of range, a bad import string, a fitness
  the run does not report, a bad space or controller) is one line naming
  the field, raised before anything is compiled or written.
  """
  cfg = config_lib.validate(config)
  model, structural = _config_model(cfg)
  loss = cfg["loss"] or None
  if config_lib.is_import_string(loss):
    loss = _imported(loss, "loss", callable, "a function (outputs, y, hp) -> [B] losses")
  metric = cfg["metric"] or None
  if config_lib.is_import_string(metric):
    metric = _imported(
      metric,
      "metric",
      _is_metrics,
      "an hpjax.Metric (or a list of them); wrap a function: hpjax.Metric('name', fn, 'max')",
    )
  source = cfg["data"]["source"]
  if config_lib.is_import_string(source):
    source = _imported(source, "data.source", callable, "a function of no arguments")
  return _experiment(
    model=model,
    data=source,
    space=cfg["space"],
    population=int(cfg["population"]),
    epochs=int(cfg["epochs"]),
    controller=cfg["controller"],
    metric=metric,
    fitness=cfg["fitness"] or None,
    loss=loss,
    val_loss=None,
    members=None,
    seed=int(cfg["seed"]),
    init=cfg["init"],
    batch_size=int(cfg["batch_size"]),
    schedule=epoch_schedule(cfg),
    eval_batch_size=int(cfg["eval_batch_size"]),
    checkpoint_every=int(cfg["checkpoint"]["every"]),
    checkpoint_keep=int(cfg["checkpoint"]["keep"]),
    tensorboard=cfg["tensorboard"],
    report=cfg["report"],
    progress=cfg["progress"],
    shard=cfg["shard"],
    writers=(),
    data_options=_data_options(cfg),
    structural=structural,
    hparam_schedule=cfg["hparam_schedule"],
    lr_range_test=cfg["lr_range_test"],
    shared_order=cfg["shared_order"],
    config=cfg,
  )


def _check_replay(
  schedule: Any, epochs: int, controller: Controller, population: int, space: Mapping[str, Any]
) -> list[dict[str, Any]]:
  """A replayed schedule: one fresh model trained on given per-epoch hyperparameters.

  The space may only declare a user's own names (their kind, and whether
  they are structural); the schedule gives every value.
  """
  sched = lineage.check_schedule(schedule, epochs)
  if not isinstance(controller, Sweep):
    raise config_lib.error("controller.name", "must be 'none' when replaying an hparam_schedule")
  if population != 1:
    raise config_lib.error(
      "population", f"must be 1 when replaying an hparam_schedule, got {population}"
    )
  # batch_size may stay: the sizes the original run compiled (see _replay_compiled).
  builtin = [name for name in space if name in hp_lib.BUILTIN and name != "batch_size"]
  if builtin:
    raise config_lib.error(
      "space",
      "must be empty when replaying an hparam_schedule (the "
      "schedule gives every hyperparameter; only your model's own names "
      f"and batch_size's compiled sizes may be declared), got {builtin[0]!r}",
    )
  for k, hp in enumerate(sched):
    for name, value in hp.items():
      try:
        hp_lib.lookup(name, space).check(value)
      except ValueError as e:
        raise config_lib.error(f"hparam_schedule[{k}]", str(e)) from None
  return sched


def run(config: Any, workdir: str, *, log: Callable[[str], None] = print) -> dict[str, Any]:
  """Trains a population as a launcher config describes; writes the workdir.

  Args:
    config: an ``ml_collections.ConfigDict`` or a plain dict
      (:mod:`hpjax.config` lists the fields).
    workdir: output directory (created; relaunching resumes).
    log: where progress lines go.

  Returns:
    The summary dict also written to ``summary.json``.
  """
  with timing.Phases() as phases:
    with phases.phase("config_and_data"):
      exp = from_config(config)
    return execute(exp, workdir, log=log, phases=phases).summary


# ---------------------------------------------------------------------------
# Running an experiment.


@dataclasses.dataclass
class Outcome:
  """What :func:`execute` leaves besides the workdir's files.

  Attributes:
    summary: the dict written to ``summary.json``.
    population: the trained population (for the best model, predictions).
    workdir: the run's directory.
  """

  summary: dict
  population: Population
  workdir: str


def build_population(exp: Experiment, **changes: Any) -> Population:
  """The population an experiment trains (before any checkpoint is restored).

  Args:
    exp: the experiment.
    **changes: :class:`hpjax.Population` keyword arguments replacing the
      experiment's (e.g. ``batch_mode="structural"``, as the benchmark's
      compile part compares).
  """
  kw = {name: getattr(exp, name) for name in _POPULATION_FIELDS}
  kw.update(mesh="auto" if exp.shard else None, member_block=member_block(exp))
  # A run evaluates the validation split after every epoch: its programs and
  # the training epoch's compile side by side while the population is built.
  kw.update(compile_ahead=("val",))
  return Population(exp.members, exp.data, **{**kw, **changes})


# The fields of an Experiment that are Population arguments of the same name.
_POPULATION_FIELDS = (
  "model",
  "loss",
  "metric",
  "val_loss",
  "space",
  "candidates",
  "seed",
  "schedule",
  "eval_batch_size",
  "shared_order",
)


def member_block(exp: Experiment) -> int | None:
  """Blocks that every size the controller leaves is made of (one compiled epoch for all).

  Successive halving's 32 -> 16 -> 8 members: blocks of 8, so the cut
  populations reuse the first epoch's programs. ``None`` when the size
  never changes or the sizes share no factor.
  """
  sizes = exp.controller.population_sizes(len(exp.members), exp.epochs)
  block = math.gcd(*sizes)
  return block if len(set(sizes)) > 1 and block > 1 else None


def _read_json(path: str) -> Any:
  """A workdir's JSON file, or None when absent; a damaged one is an error naming it."""
  if not os.path.lexists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(
      f"{path}: cannot be read as JSON ({getattr(e, 'strerror', None) or e}); "
      "the workdir is damaged: restore the file or use a new --workdir"
    ) from None


def check_workdir(workdir: str, config: Mapping[str, Any]) -> None:
  """Refuses to resume ``workdir`` under a config that would change its numbers.

  Only the fields of :data:`hpjax.config.RESUME_FREE` may differ. ``epochs``
  may change only when nothing already trained depends on it: a cosine
  schedule whose length is the run's (``schedule.decay_epochs`` 0) would give
  every step another learning rate. Checkpoints without their
  ``config.json`` are refused too: nothing says what they were trained with.
  """
  old = _read_json(os.path.join(workdir, "config.json"))
  if old is None:
    ckpts = os.path.join(workdir, "checkpoints")
    if os.path.isdir(ckpts) and os.listdir(ckpts):
      raise ValueError(
        f"--workdir: {workdir!r} holds checkpoints but no config.json, so "
        "nothing says what they were trained with; restore config.json or use "
        "a new --workdir"
      )
    return
  if isinstance(old, dict) and "api" not in old and "api" not in config:
    old = config_lib.with_new_fields(old)  # a launcher run of an older hpjax
  diffs = config_lib.diff(old, config)
  if diffs:
    raise ValueError(
      f"--workdir: {workdir!r} holds a run with another config ("
      + ", ".join(diffs[:8])
      + (" ..." if len(diffs) > 8 else "")
      + " differ); use a new --workdir, or relaunch with the same config "
      "(only epochs may grow)"
    )
  old_epochs, epochs = int(old.get("epochs", 0)), int(config["epochs"])
  s = config.get("schedule") or {}
  if (
    old_epochs != epochs
    and s.get("kind") in ("cosine", "warmup_cosine")
    and not s.get("decay_epochs")
  ):
    raise config_lib.error(
      "epochs",
      f"{workdir!r} was started with epochs={old_epochs} and a {s.get('kind')} "
      "learning-rate schedule over them (schedule.decay_epochs 0), so running it for "
      f"{epochs} would change the rate of every step; use a new --workdir (set "
      "schedule.decay_epochs to make a run extendable)",
    )


def _make_workdir(workdir: str) -> None:
  """Creates ``workdir`` (or checks it) so that nothing fails once a run starts writing.

  Raises:
    ValueError: one line naming the directory or file and why it cannot be
      written: a path that is not a directory, a directory that cannot be
      created or written, or a run's log that is not a writable file.
  """
  if os.path.lexists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"--workdir: {workdir!r} exists and is not a directory")
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise ValueError(f"--workdir: cannot create {workdir!r}: {e.strerror}") from None
  if not os.access(workdir, os.W_OK):
    raise ValueError(f"--workdir: {workdir!r} is not writable")
  for name in ("config.json", "metrics.jsonl", "lineage.jsonl"):
    path = os.path.join(workdir, name)
    if not os.path.lexists(path):
      continue
    try:
      with open(path, "r" if name == "config.json" else "r+"):  # nothing truncated
        pass
    except OSError as e:
      raise ValueError(
        f"{path}: cannot be {'read' if name == 'config.json' else 'written'} "
        f"({e.strerror}); fix it or use a new --workdir"
      ) from None


# What a run ranks by, written before its first epoch: a report on a run
# without summary.json yet (still going, or killed) reads it, since
# config.json holds the launcher's raw fitness ("": the first metric) and no
# direction, and a user's metric may even reuse a built-in name. The name is
# hpjax.report.load.RUN_FILE's (the report does not import the tuner).
RUN_FILE = "run.json"


def write_run_file(workdir: str, exp: Experiment) -> None:
  """Writes ``WORKDIR/run.json``: the resolved fitness, its mode, and every metric's mode.

  Written at every start (a resume of a workdir from an older hpjax gains
  it); the same values each time, since a resume requires an equal config.
  """
  doc = {
    "fitness": exp.fitness,
    "mode": exp.mode,
    "metrics": {
      **{m.name: m.mode for m in fitness_lib.as_metrics(exp.metric, exp.data.task)},
      "loss": "min",
    },
  }
  path = os.path.join(workdir, RUN_FILE)
  with open(path + ".tmp", "w") as f:
    json.dump(doc, f, indent=2)
  os.replace(path + ".tmp", path)  # a reader never sees half a file


def _start(
  exp: Experiment,
  pop: Population,
  ckpt: checkpoint.Checkpointer,
  workdir: str,
  main: bool,
  log: Callable[[str], None],
) -> loop.Progress:
  """Restores the newest checkpoint into ``pop`` (a resume), or starts the files afresh."""
  metrics, lineage_path = (os.path.join(workdir, n) for n in ("metrics.jsonl", "lineage.jsonl"))
  if ckpt.latest_step() is None:
    progress = loop.Progress()
    if main:
      for path in (metrics, lineage_path):
        open(path, "w").close()
      with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(exp.config, f, indent=2, sort_keys=True, default=str)
    # A range test measures how far each rate brings the loss down from
    # where every member starts: the validation loss before any training.
    if exp.lr_range_test:
      progress.initial_val_loss = pop.evaluate("val")["loss"].tolist()
    return progress
  # Halving may have compacted the population: shape it as the checkpoint
  # was, then restore every state, key and counter.
  shaped = {}

  def templates(extra):
    shaped["groups"], shaped["members"], shaped["ids"] = pop.compacted(extra["ids"])
    return pop.checkpoint_templates(shaped["groups"])

  _, states, extra = ckpt.restore(templates)
  pop.groups, pop.members = shaped["groups"], shaped["members"]
  pop.ids = np.asarray(extra["ids"], np.int64)
  pop.size = len(pop.members)
  pop.load_checkpoint_states(states)  # on any device count
  progress = loop.Progress.from_extra(extra)
  _check_length(exp, progress)
  if main:
    # Both logs are read and checked before either is rewritten: a damaged
    # one leaves the workdir as it was. A checkpoint taken before its epoch's
    # decision (the last epoch of a run since extended) keeps none of that
    # decision's events: the relaunch makes it again.
    last_event = progress.epoch if progress.decided else progress.epoch - 1
    kept = [
      (metrics, writers_lib.resumable_lines(metrics, progress.epoch)),
      (lineage_path, writers_lib.resumable_lines(lineage_path, last_event)),
    ]
    for path, lines in kept:
      writers_lib.resume_jsonl(path, progress.epoch, lines)
  log(f"resuming from the checkpoint of epoch {progress.epoch} in {workdir}")
  return progress


def _check_length(exp: Experiment, progress: loop.Progress) -> None:
  """Refuses a relaunch whose ``epochs`` would end the run before its checkpoint's state.

  A run of ``epochs`` epochs makes no decision after its last one; a
  checkpoint of a longer run holds the decision made after that epoch (or
  more epochs). Ending there would report and export a population no run of
  that length has. Ending at the checkpoint of a finished run, or later, is
  a run of that length.

  Raises:
    ValueError: one line naming ``config.epochs``, before anything is written.
  """
  trained, decided = progress.epoch, progress.decided
  acted = decided and exp.controller.acts_at(trained)
  if exp.epochs < trained or (exp.epochs == trained and acted):
    raise config_lib.error(
      "epochs",
      f"{exp.epochs} ends the run before its checkpoint: it has {trained} epochs trained"
      + (" and the decision after the last one made" if acted else "")
      + f", which a run of {exp.epochs} epochs would not have; relaunch with epochs > "
      f"{trained} to continue it, or use a new --workdir",
    )


def _writers(
  exp: Experiment, workdir: str, start_epoch: int, log: Callable[[str], None]
) -> list[writers_lib.Writer]:
  """The run's sinks (process 0 only)."""
  out = [
    writers_lib.MetricsFile(os.path.join(workdir, "metrics.jsonl")),
    writers_lib.LineageFile(os.path.join(workdir, "lineage.jsonl")),
    writers_lib.Console(
      epochs=exp.epochs,
      start_epoch=start_epoch,
      interval=exp.controller.interval,
      shown=[k for k in exp.space],
      log=log,
      progress=exp.progress,
    ),
  ]
  if exp.tensorboard:
    out.append(writers_lib.TensorBoard(os.path.join(workdir, "tensorboard"), start_epoch))
  return out + list(exp.writers)


def execute(
  exp: Experiment,
  workdir: str,
  *,
  log: Callable[[str], None] = print,
  phases: timing.Phases | None = None,
) -> Outcome:
  """Trains ``exp`` in ``workdir`` (resuming it when it holds a checkpoint).

  Several processes (:mod:`hpjax.distributed`) all run this in step; only
  process 0 prints and writes logs and reports. ``summary.json['timings']``
  says where the run's seconds went (``phases``: a :class:`hpjax.timing.Phases`
  already counting, e.g. since the data was loaded; default: a new one).

  Raises:
    ValueError: an incompatible or unusable workdir (before anything is written).
    hpjax.loop.Interrupted: SIGINT/SIGTERM stopped the run after a checkpoint.
  """
  owned = phases is None
  phases = phases or timing.Phases().__enter__()
  try:
    return _execute(exp, workdir, log, phases)
  finally:
    if owned:
      phases.__exit__(None, None, None)


def _execute(
  exp: Experiment, workdir: str, log: Callable[[str], None], phases: timing.Phases
) -> Outcome:
  main = distributed.is_main_process()
  if not main:
    log = lambda text: None
  log(exp.data.summary())
  with phases.phase("build"):
    pop = build_population(exp)
  if exp.hparam_schedule is not None:
    check_replay_fits(pop, exp.hparam_schedule)
  log(
    f"population: {pop.size} members in {len(pop.groups)} compiled group(s)"
    + (f", split over {pop.mesh.size} devices" if pop.mesh is not None else "")
  )
  check_workdir(workdir, exp.config)
  distributed.barrier("hpjax: workdir checked")  # before process 0 writes to it
  _make_workdir(workdir)
  with (
    checkpoint.Checkpointer(
      os.path.join(workdir, "checkpoints"),
      keep=exp.checkpoint_keep,
      every=exp.checkpoint_every,
      best_mode=exp.mode,
    ) as ckpt,
    loop.StopOnSignal() as stop,
  ):
    with phases.phase("start"):
      progress = _start(exp, pop, ckpt, workdir, main, log)
      if main:
        write_run_file(workdir, exp)
    start_epoch = progress.epoch
    if start_epoch >= exp.epochs:
      log(
        f"the run in {workdir} already trained {start_epoch} epochs (epochs={exp.epochs}); "
        "raise epochs to extend it"
      )
    sinks = _writers(exp, workdir, start_epoch, log) if main else []
    run_ = loop.Run(
      pop=pop,
      exp=exp,
      writers=sinks,
      checkpointer=ckpt,
      stop=stop,
      progress=progress,
      phases=phases,
    )
    try:
      loop.train(run_)
      with phases.phase("final"):
        val = pop.evaluate("val")
        if start_epoch < exp.epochs:
          hparams = pop.hparams()
          for w in sinks:
            w.finish([int(i) for i in pop.ids], hparams, val)
    finally:
      with phases.phase("close"):
        for w in sinks:
          w.close()
  with phases.phase("summary_and_export"):
    summary = _summary(exp, pop, val, progress, workdir, main, log)
  with phases.phase("report"):
    _report(exp, workdir, main, log)
  summary["timings"] = phases.summary()
  if main:  # the timings include the report, written after it
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2, default=writers_lib._jsonable)  # pylint: disable=protected-access
  return Outcome(summary, pop, workdir)


def check_replay_fits(pop: Population, sched: Sequence[Mapping[str, Any]]) -> None:
  """Refuses a replayed schedule that ``pop`` cannot follow, before the run trains or writes.

  Each epoch's values must be ones :meth:`Population.set_member_hparams`
  takes when the loop applies them: a structural value unchanged, a traced
  one among what is compiled in (candidates, optimizer families, micro-batch
  size, dropout's masks).

  Raises:
    ValueError: one line naming ``config.hparam_schedule[k]`` and the value.
  """
  traced = set(optim.HPARAMS) | set(pop.traced)
  member = dict(pop.members[0])
  for k, hp in enumerate(sched):
    where = f"hparam_schedule[{k}]"
    for name, value in hp.items():
      if name not in traced and name in member and member[name] != value:
        raise config_lib.error(
          where, f"{name}: structural, so a replay cannot change it ({member[name]!r} -> {value!r})"
        )
    member.update(hp)
    if member.get("dropout", 0) != 0 and not pop.dropout:
      raise config_lib.error(
        where, f"dropout: {member['dropout']!r} needs dropout compiled in, and this replay has none"
      )
    try:
      pop.resolve(member)
    except ValueError as e:
      raise config_lib.error(where, str(e)) from None


def _summary(
  exp: Experiment,
  pop: Population,
  val: Mapping[str, np.ndarray],
  progress: loop.Progress,
  workdir: str,
  main: bool,
  log: Callable[[str], None],
) -> dict[str, Any]:
  """Ranks the final population, evaluates the best on the test split, exports it."""
  test = pop.evaluate("test")
  ranking = fitness_lib.rank(val[exp.fitness], exp.mode)
  best = int(ranking[0])
  hps = pop.hparams()
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  wall = max(progress.elapsed, 1e-9)
  summary = {
    "best_member": int(pop.ids[best]),
    "hyperparameters": hps[best],
    "val": {k: float(v[best]) for k, v in val.items()},
    "test": {k: float(v[best]) for k, v in test.items()},
    "fitness": exp.fitness,
    "mode": exp.mode,
    "members": len(exp.members),
    "members_at_end": pop.size,
    "member_epochs": sum(1 for _ in open(metrics_path)) if main else None,
    "epochs": max(progress.epoch, exp.epochs),
    "wall_time_s": wall,
    "member_steps_per_s": progress.member_steps / wall,
    "ranking": [int(pop.ids[i]) for i in ranking],
    "ranking_positions": [int(i) for i in ranking],
  }
  if exp.lr_range_test:
    summary["lr_range"] = _lr_range(metrics_path, progress.initial_val_loss, pop, log)
  summary["export"] = export_best(workdir, exp, pop, best, summary, log)
  if main:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2, default=writers_lib._jsonable)  # pylint: disable=protected-access
  return summary


def _report(exp: Experiment, workdir: str, main: bool, log: Callable[[str], None]) -> None:
  """The ranking table, and the plots unless turned off; never costs the user the run."""
  if not main:
    return
  from hpjax import report  # pylint: disable=g-import-not-at-top

  try:
    log("\n" + report.format_table(report.summarize(report.load_run(workdir)), top=5))
    if exp.report:
      plots = report.build_report(workdir)["plots"]
      log(
        f"plots: {len(plots)} PNG files in {os.path.join(workdir, 'plots')} "
        f"(rebuild any time: hpjax-report {workdir})"
      )
  except Exception as e:  # noqa: BLE001
    # A plot must never cost the user the run it reports on.
    log(f"report not written: {type(e).__name__}: {e}")


def export_best(
  workdir: str,
  exp: Experiment,
  pop: Population,
  position: int,
  summary: Mapping[str, Any],
  log: Callable[[str], None],
) -> dict[str, str]:
  """Exports the best member to ``WORKDIR/best/``.

  * ``model/``: its parameters and model state (orbax) and ``model.json``
    (hyperparameters, metrics, input normalisation), read back with
    :func:`hpjax.checkpoint.load_model`;
  * ``schedule.json``: the hyperparameters its weights were trained with,
    epoch by epoch, traced back through PBT's copies (:mod:`hpjax.lineage`);
  * ``config.json`` (launcher runs, a user's model named by its import
    string included): a config that retrains one fresh model on that
    schedule.

  Returns:
    ``{"model": ..., "schedule": ..., "config": ..., "retrain": command}``.
  """
  out_dir = os.path.join(workdir, "best")
  os.makedirs(out_dir, exist_ok=True)
  group = next(g for g in pop.groups if position in g.members)
  j = group.members.index(position)
  state = pop.checkpoint_states([group])[0]  # host copies on a mesh (every process calls)
  params, model_state = engine.member_tree((state.params, state.model_state), j)
  spec = group.fns.spec
  # A traced choice's candidates: the exported model gets each choice as
  # training gave it (a TracedChoice among them), so .is_ / == / select work.
  choices = {"optimizer": list(optim.FAMILIES), **{n: list(c) for n, c in spec.traced if c}}
  meta = {**_model_meta(exp, summary, spec.structural), "choices": choices}
  result = {
    "model": checkpoint.save_model(os.path.join(out_dir, "model"), params, model_state, meta)
  }
  if not distributed.is_main_process():
    return result  # the rest reads and writes process 0's logs
  try:
    doc = lineage.export_schedule(
      workdir,
      summary["best_member"],
      os.path.join(out_dir, "schedule.json"),
      last_epoch=summary["epochs"],
      fitness=summary["fitness"],
    )
  except ValueError as e:  # e.g. logs of a run started by an older hpjax
    log(f"best member's schedule not exported: {e}")
    return result
  result["schedule"] = os.path.join(out_dir, "schedule.json")
  if exp.config.get("api") == "python":
    return result  # hpjax.tune's objects: no launcher config names them
  config_path = _write_retrain_config(exp.config, doc, os.path.join(out_dir, "config.json"))
  result.update(
    config=config_path,
    retrain=(
      "python -m experiments.tune --config=experiments/configs/from_json.py:"
      f"{config_path} --workdir=WORKDIR"
    ),
  )
  return result


def _model_meta(
  exp: Experiment, summary: Mapping[str, Any], structural: Mapping[str, Any]
) -> dict[str, Any]:
  """What ``best/model/model.json`` holds beside the weights (:func:`checkpoint.load_model`)."""
  data = exp.data
  return {
    "member": summary["best_member"],
    "epochs": summary["epochs"],
    "hyperparameters": summary["hyperparameters"],
    "val": summary["val"],
    "test": summary["test"],
    "task": data.task,
    "input_shape": list(data.input_shape),
    "num_outputs": data.num_classes if data.task == "classification" else 1,
    "mean": np.ravel(data.mean).tolist(),
    "std": np.ravel(data.std).tolist(),
    # Regression targets were standardized with these: a prediction p is
    # p * y_std + y_mean in the targets' units (Results.predict does it).
    "y_mean": float(data.y_mean),
    "y_std": float(data.y_std),
    "structural": dict(structural),
    "data": exp.config.get("data", {}),
  }


def _write_retrain_config(
  config: Mapping[str, Any], doc: Mapping[str, Any], config_path: str
) -> str:
  """Writes a launcher config that retrains one fresh model on the exported schedule ``doc``."""
  retrain = json.loads(json.dumps(config, default=str))
  # A user's own names stay declared (their kind, whether structural); the
  # schedule gives every value. The batch sizes stay too: the replay then
  # steps through micro-batches of the original's smallest size, to the
  # original's numbers even where the schedule never uses that size.
  space = {
    k: v
    for k, v in (retrain.get("space") or {}).items()
    if k not in hp_lib.BUILTIN or k == "batch_size"
  }
  retrain.update(
    population=1,
    init="random",
    space=space,
    controller={"name": "none"},
    lr_range_test=False,
    epochs=doc["epochs"],
    hparam_schedule=[{"epoch": e["epoch"], "hparams": e["hparams"]} for e in doc["schedule"]],
  )
  with open(config_path, "w") as f:
    json.dump(retrain, f, indent=2, sort_keys=True)
  return config_path


def _lr_range(
  metrics_path: str,
  initial_loss: Sequence[float] | None,
  pop: Population,
  log: Callable[[str], None],
) -> dict[str, Any]:
  """Analyses a learning-rate range test from the validation-loss curves.

  Each curve starts at the member's loss before training, so a rate that
  blows the loss up is flagged as diverged even if it later recovers a bit.
  """
  curves = {int(i): [float(initial_loss[k])] for k, i in enumerate(pop.ids)}
  for row in lineage.read_jsonl(metrics_path):
    curves[row["member"]].append(row["val_loss"])
  rates = np.array([h["learning_rate"] for h in pop.hparams()])
  losses = np.array([curves[int(i)] for i in pop.ids], dtype=np.float64)
  result = lr_range.analyse(rates, losses)
  text = lr_range.describe(result)
  log(f"learning-rate range test: {text}")
  return {
    "rates": result.rates.tolist(),
    "final_losses": result.losses.tolist(),
    "slopes": result.slopes.tolist(),
    "diverged": result.diverged.tolist(),
    "best_rate": float(result.best_rate),
    "suggested_range": [float(v) for v in result.suggested_range],
    "description": text,
  }


# ---------------------------------------------------------------------------
# The Python entry point.


def _dataset(data: Any, seed: int, *, field: str = "data", **options: Any) -> Dataset | Stream:
  """A :class:`Dataset` from what :func:`tune`'s ``data`` (or ``config.data.source``) gives.

  A :class:`hpjax.data.Stream` (training data larger than the device) is used
  as it is.

  Args:
    data: a source name, a Dataset, ``(x, y[, x_test, y_test])``, a dict of
      those arrays (``x_val``/``y_val`` too), or a function of no arguments
      returning arrays, a dict or a Dataset.
    seed: seeds the splits.
    field: how messages name ``data``.
    **options: :func:`hpjax.data.load_dataset`'s loading and splitting
      options (``data_dir`` only for a source name); a Dataset or Stream is
      used as it is, and an option set for it is an error.
  """
  name = "arrays"
  if callable(data) and not isinstance(data, (Dataset, Stream)):
    name = f"{getattr(data, '__module__', '?')}:{getattr(data, '__qualname__', data)}"
    try:
      data = data()
    except Exception as e:  # noqa: BLE001
      # The user's own function failed: what, and where, on one line.
      raise ValueError(f"{field}: {name!r} raised {config_lib.exception_line(e)}") from None
    if not isinstance(data, (Dataset, Stream, Mapping, tuple, list)):
      raise ValueError(
        f"{field}: {name!r} returned {config_lib.describe(data)}; it must return "
        "(x, y), (x, y, x_test, y_test), a dict of arrays, an hpjax.Dataset or an "
        "hpjax.data.Stream"
      )
  if isinstance(data, (Dataset, Stream)):
    _check_unused_options(data, field, options)
    return data
  if isinstance(data, str):
    return load_dataset(data, seed=seed, **options)
  options.pop("data_dir", None)
  if isinstance(data, Mapping):
    unknown = set(data) - {"x_train", "y_train", "x_val", "y_val", "x_test", "y_test"}
    if unknown:
      raise ValueError(
        f"{field}: unknown keys {sorted(unknown)}; allowed: x_train, y_train, "
        "x_val, y_val, x_test, y_test"
      )
    return dataset_from_arrays(name, **dict(data), seed=seed, **options)
  if isinstance(data, (tuple, list)) and len(data) in (2, 4):
    return dataset_from_arrays(name, *data, seed=seed, **options)
  raise ValueError(
    f"{field}: a source name ('digits', 'mnist', ...), an hpjax.Dataset, an "
    f"hpjax.data.Stream, (x, y), (x, y, x_test, y_test), a dict of arrays or a "
    f"function returning one; got "
    + (
      f"a {type(data).__name__} of {len(data)} items"
      if isinstance(data, (tuple, list))
      else type(data).__name__
    )
  )


def _check_unused_options(data: Dataset | Stream, field: str, options: Mapping[str, Any]) -> None:
  """Refuses a loading option set for data that is used as it is (a Dataset or Stream).

  Resizing, splitting or capping applies to a source name or to arrays; a
  Dataset or Stream a function returns is trained on as it is, so a set
  option would silently do nothing.
  """
  unset = _data_options(config_lib.defaults())  # each option as a config leaves it
  for name, value in options.items():
    if name == "data_dir" or value == unset.get(name, value):
      continue
    if name == "task" and value == data.task:
      continue
    section = field.rsplit(".", 1)[0] if "." in field else "data"
    kind = type(data).__name__
    raise ValueError(
      f"{section}.{name}: {value!r} does not apply to the {kind} {field} returns (it is"
      f" trained on as it is); leave {section}.{name} at its default or return arrays"
    )


def _digest(data: Dataset | Stream) -> str:
  """A fingerprint of a dataset's arrays: a resume on other data is refused."""
  if isinstance(data, Stream):
    return data.fingerprint()
  import hashlib  # pylint: disable=g-import-not-at-top

  h = hashlib.sha256()
  for split in ("train", "val", "test"):
    for a in (getattr(data, f"x_{split}"), getattr(data, f"y_{split}")):
      h.update(np.ascontiguousarray(np.asarray(a)).tobytes())
  return h.hexdigest()[:32]


def _qualname(obj: Any) -> str | None:
  """How config.json names a user's function or class (compared on resume)."""
  if obj is None:
    return None
  if isinstance(obj, fitness_lib.Metric):
    return f"{obj.name} ({obj.mode}): {_qualname(obj.fn)}"
  if isinstance(obj, tuple):
    return ", ".join(_qualname(o) for o in obj)
  name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
  return f"{getattr(obj, '__module__', '?')}.{name}"


def _controller(controller: Any, fitness: str, mode: str) -> Controller:
  """A controller from :func:`tune`'s argument, or from a config's ``controller`` section."""
  if isinstance(controller, Mapping):
    return _controller_section(controller, fitness, mode)
  if controller is None or controller == "none":
    return Sweep()
  if controller in ("pbt", "halving", "pbt_halving"):
    return {"pbt": PBT, "halving": Halving, "pbt_halving": PBTHalving}[controller]()
  if not isinstance(controller, Controller):
    raise ValueError(
      f"controller: an hpjax.PBT(), hpjax.Halving(), hpjax.PBTHalving(), "
      f"hpjax.Sweep() or one of 'pbt', 'halving', 'pbt_halving', 'none'; got "
      f"{controller!r}"
    )
  return controller.validate()


def tune(
  model: Callable | None = None,
  data: Any = "digits",
  space: Mapping[str, Any] | None = None,
  *,
  population: int = 16,
  epochs: int = 10,
  controller: Controller | str | None = None,
  metric: Any = None,
  fitness: str | None = None,
  loss: Callable | None = None,
  val_loss: Callable | None = None,
  members: list | None = None,
  seed: int = 0,
  init: str = "random",
  batch_size: int | None = None,
  schedule: optim.EpochSchedule | str = "constant",
  workdir: str | None = None,
  eval_batch_size: int = 256,
  checkpoint_every: int = 1,
  checkpoint_keep: int = 3,
  tensorboard: bool = False,
  report: bool = False,
  progress: bool | None = None,
  shard: bool = True,
  writers: Sequence[writers_lib.Writer] = (),
  log: Callable[[str], None] = print,
):
  """Tunes the hyperparameters of ``model`` on ``data`` by training a population at once.

  Args:
    model: an ``nnx.Module`` class or factory, called with the member's structural
      hyperparameters (and ``rngs``; ``input_shape`` / ``num_outputs`` when it takes them),
      then as ``model(x, hp)`` with the traced ones (or ``model(x)``). Default: built-in families.
    data: a source name (``'digits'``, ``'mnist'``, ...), an :class:`hpjax.Dataset`,
      ``(x, y)``, ``(x, y, x_test, y_test)``, a dict of those arrays (validation
      split seeded and stratified), a function of no arguments returning one of
      these (but a name), or an :class:`hpjax.data.Stream` for training data
      larger than the device (every member trains on its batches, in its order).
    space: name -> :class:`hpjax.Float` / ``Int`` / ``Choice`` / ``Fixed``:
      built-in names (``learning_rate``, ``optimizer``, ``activation``,
      ``batch_size``, ...) or your own, traced unless ``structural=True``.
    population: members trained at once.
    epochs: epochs each member trains (halving's survivors).
    controller: :class:`hpjax.PBT`, ``Halving``, ``Sweep`` (default) or their names.
    metric: ``'accuracy'`` / ``'mse'`` (the classification / regression default), an
      :class:`hpjax.Metric` (one value per example) or a list of them:
      all are logged, the first is the default fitness.
    fitness: a metric's name (default: the first) or ``'loss'`` (validation loss).
    loss: a built-in loss name (``'cross_entropy'``, ``'mse'``, ``'huber'``) for
      every member, or your ``(outputs, y, hp) -> [B]`` per-example training loss
      (default: the built-in one chosen per member by ``hp['loss']``, searchable).
    val_loss: ``(outputs, y) -> [B]`` validation loss, one objective for all
      members (default: cross-entropy, or squared error for regression).
    members: explicit initial members (dicts) instead of ``population`` draws.
    seed: everything random derives from it.
    init: ``random``, ``grid`` or ``quasi_random`` draws from the space.
    batch_size: the batch size of members whose space does not set one
      (default 32; a Stream's: its batches are every member's).
    schedule: ``'constant'``, ``'cosine'`` (over ``epochs``) or an :class:`hpjax.EpochSchedule`.
    workdir: where logs, checkpoints and the best model go (default: a new
      temporary directory); relaunching on it resumes.
    eval_batch_size, checkpoint_every, checkpoint_keep, tensorboard,
      report, progress, shard: as the launcher's config fields.
    writers: more sinks (:class:`hpjax.writers.Writer`) for every epoch's
      results and the controller's changes.
    log: where progress lines go.

  Returns:
    :class:`hpjax.Results` (the module docstring has an example).
  """
  from hpjax.results import Results  # pylint: disable=g-import-not-at-top

  args = {k: v for k, v in locals().items() if k not in ("workdir", "log", "Results")}
  with timing.Phases() as phases:
    with phases.phase("config_and_data"):
      exp = _experiment(**args)
    workdir = workdir or tempfile.mkdtemp(prefix="hpjax-")
    outcome = execute(exp, workdir, log=log, phases=phases)
  return Results(workdir, outcome.summary, outcome.population, model=model)


def _experiment(
  *,
  data,
  space,
  population,
  epochs,
  controller,
  metric,
  fitness,
  loss,
  members,
  seed,
  init,
  batch_size,
  schedule,
  data_options=None,
  structural=None,
  hparam_schedule=None,
  config=None,
  **settings,
) -> Experiment:
  """An :class:`Experiment`, every argument checked: what :func:`tune` and :func:`from_config` build.

  Args:
    data, space, ..., schedule: as :func:`tune`'s (``controller`` may also be
      a config's ``controller`` section, ``schedule`` an EpochSchedule).
    data_options: how ``data`` is loaded and split (``config.data``).
    structural: the model's structural values every member starts from
      (``config.model``); a user's own name among them that the space does
      not declare becomes a structural constant of the space.
    hparam_schedule: a replayed schedule (``config.hparam_schedule``).
    config: the launcher's validated config, recorded in ``config.json``
      (None: a description of this call is recorded). It also names the
      fields in messages (``config.fitness`` rather than ``fitness``).
    **settings: the :class:`Experiment` fields taken as given: ``model``,
      ``val_loss``, ``eval_batch_size``, ``checkpoint_every``,
      ``checkpoint_keep``, ``tensorboard``, ``report``, ``progress``,
      ``shard``, ``writers`` (as :func:`tune`'s), ``lr_range_test``,
      ``shared_order`` (as the launcher's config fields).
  """
  prefix = "config." if config is not None else ""
  space = _search_space(space)
  _check_counts(population, epochs, batch_size, settings["eval_batch_size"])
  structural = dict(structural or {})
  space.update(_user_constants(structural, space))
  data = _dataset(
    data, seed, field=f"{prefix}data.source" if prefix else "data", **(data_options or {})
  )
  if batch_size is None:
    batch_size = data.batch_size if isinstance(data, Stream) else 32
  metric, fitness, mode = _ranking(metric, fitness, data.task, prefix)
  controller = _controller(controller, fitness, mode)
  schedule, schedule_config = _schedule(schedule, epochs)
  base = {**structural, "batch_size": batch_size}
  if isinstance(loss, str):  # a built-in loss for every member
    base["loss"], loss = _builtin_loss(loss, data.task, prefix), None
  members, candidates, sched = _initial_members(
    members, base, space, population, seed, init, epochs, controller, hparam_schedule, data
  )
  _check_range_test(settings.get("lr_range_test"), members, controller, prefix)
  exp = Experiment(
    data=data,
    members=members,
    space=dict(space),
    controller=controller,
    fitness=fitness,
    mode=mode,
    epochs=epochs,
    seed=seed,
    config={} if config is None else config,
    loss=loss,
    metric=metric,
    schedule=schedule,
    candidates=candidates,
    hparam_schedule=sched,
    **{**settings, "writers": tuple(settings["writers"])},
  )
  if config is None:
    exp.config = _call_description(exp, init, schedule_config)
  return exp


def _check_range_test(
  on: bool, members: Sequence[Mapping[str, Any]], controller: Any, prefix: str
) -> None:
  """Refuses, before training, a learning-rate range test (``on``) its analysis could not read.

  The analysis reads one loss curve per learning rate, each member's own
  from its start: every member must train to the end unchanged (a sweep,
  controller ``none``: PBT copies members, halving prunes them) and at its
  own rate.
  """
  if not on:
    return
  if controller.name != "none":
    raise ValueError(
      f"{prefix}lr_range_test: needs controller 'none', a sweep (one loss curve per "
      f"rate, each member trained to the end unchanged), got {controller.name!r}"
    )
  rates = [m.get("learning_rate") for m in members]
  seen = {r for r in rates if rates.count(r) > 1}
  if seen:
    raise ValueError(
      f"{prefix}lr_range_test: needs every member at its own learning rate (one loss "
      f"curve per rate), got {sorted(seen, key=str)[0]!r} for several members; let the "
      "space vary learning_rate only"
    )


def _search_space(space: Mapping[str, Any] | None) -> dict[str, Any]:
  """:func:`tune`'s space (dimensions) or a config's (dicts), checked."""
  if space and all(isinstance(v, Mapping) for v in space.values()):
    return space_lib.from_config(space)
  return space_lib.validate(space or {})


def _check_counts(population: Any, epochs: Any, batch_size: Any, eval_batch_size: Any) -> None:
  """Each count is an integer >= 1 (``batch_size`` may be None: the default)."""
  for name, value in (
    ("population", population),
    ("epochs", epochs),
    ("batch_size", batch_size),
    ("eval_batch_size", eval_batch_size),
  ):
    if (name != "batch_size" or value is not None) and (
      isinstance(value, bool) or not isinstance(value, int) or value < 1
    ):
      raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")


def _user_constants(structural: Mapping[str, Any], space: Mapping[str, Any]) -> dict[str, Any]:
  """A user's structural values the space does not declare, as constants of the space.

  A user's structural constant is declared like any of the user's names.
  """
  return {
    name: space_lib.Fixed(value, structural=True)
    for name, value in structural.items()
    if name not in hp_lib.BUILTIN and name not in space
  }


def _builtin_loss(loss: str, task: str, prefix: str) -> str:
  """A built-in loss name for every member, checked against the task."""
  try:
    losses_lib.check_losses([loss], task)
  except ValueError as e:
    raise ValueError(f"{prefix}{e}") from None
  return loss


def _ranking(metric: Any, fitness: str | None, task: str, prefix: str) -> tuple[list, str, str]:
  """The run's metrics, the fitness that ranks members (default: the first metric), its mode."""
  metric = fitness_lib.as_metrics(metric, task)
  fitness = fitness or metric[0].name
  # The built-in metric alone: the message names the task ("... for regression").
  mode = fitness_lib.check(
    fitness,
    task if len(metric) == 1 and metric[0] is fitness_lib.TASK_METRIC[task] else metric,
    f"{prefix}fitness",
  )
  return metric, fitness, mode


def _schedule(
  schedule: optim.EpochSchedule | str, epochs: int
) -> tuple[optim.EpochSchedule, dict[str, Any]]:
  """The learning-rate schedule of :func:`tune`'s argument, and what config.json records of it."""
  if not isinstance(schedule, str):
    return schedule, {
      "kind": schedule.kind,
      "warmup_epochs": schedule.warmup_epochs,
      "alpha": schedule.alpha,
      "decay_epochs": schedule.total_epochs,
    }
  if schedule not in optim.SCHEDULES:
    raise ValueError(
      f"schedule: unknown value {schedule!r}; allowed: "
      + ", ".join(optim.SCHEDULES)
      + ", or an hpjax.EpochSchedule"
    )
  # A decay over the run's length (decay_epochs 0): the run cannot be extended.
  recorded = {"kind": schedule, "warmup_epochs": 0.0, "alpha": 0.0, "decay_epochs": 0.0}
  return optim.EpochSchedule(schedule, 0.0, float(epochs)), recorded


def _initial_members(
  members: list | None,
  base: Mapping[str, Any],
  space: dict[str, Any],
  population: int,
  seed: int,
  init: str,
  epochs: int,
  controller: Controller,
  hparam_schedule: Any,
  data: Dataset | Stream,
) -> tuple[list[dict], dict | None, list | None]:
  """The members a run starts from, the traced choices to compile, the replayed schedule.

  ``base`` (structural values, batch size, a built-in loss) is every
  member's starting point: under a replayed schedule, its first epoch's
  values; otherwise ``members`` given, or ``population`` drawn from ``space``.
  A replay's ``space`` gains ``dropout`` when the schedule ever sets a rate
  (its masks are compiled in only then).
  """
  if not hparam_schedule:
    if members is None:
      return draw_members(space, population, seed, init, base), None, None
    return [{**base, **dict(m)} for m in members], None, None
  sched = _check_replay(hparam_schedule, epochs, controller, population, space)
  first = {**base, **sched[0]}
  candidates, dims = _replay_compiled(first, sched, space)
  _check_replay_changes(
    first, sched, space, data, candidates["batch_size"] or [first["batch_size"]]
  )
  space.update(dims)
  return [first], candidates, sched


def _check_replay_changes(
  first: Mapping[str, Any],
  sched: Sequence[Mapping[str, Any]],
  space: Mapping[str, Any],
  data: Dataset | Stream,
  sizes: Sequence[int],
) -> None:
  """Refuses, before anything trains, a change along a replayed schedule that cannot be made.

  A structural value (a user's included) fixes the model's shape. The
  compiled batch ``sizes`` train as micro-batches of the smallest (one
  program, as in the run the schedule comes from) when each is a multiple of
  it; otherwise a member's batch size is structural and may not change. Every
  size must fit the training split.
  """
  smallest = min(sizes)
  fixed = any(size % smallest for size in sizes)
  for k, hp in enumerate(sched):
    for name, value in hp.items():
      if hp_lib.is_structural(name, space) and name in first and value != first[name]:
        raise config_lib.error(
          f"hparam_schedule[{k}]",
          f"{name}: structural, so a replay cannot change it ({first[name]!r} -> {value!r})",
        )
    if "batch_size" not in hp:
      continue
    size = hp["batch_size"]
    if fixed and size != first["batch_size"]:
      bad = next(v for v in sizes if v % smallest)
      raise config_lib.error(
        f"hparam_schedule[{k}]",
        f"batch_size: {bad} is not a multiple of {smallest}, the smallest batch size, so "
        f"the replay cannot change {first['batch_size']} to {size} (it changes sizes as "
        "micro-batches of the smallest)",
      )
    try:
      data.check_batch_size(size)
    except ValueError as e:
      raise config_lib.error(f"hparam_schedule[{k}]", f"batch_size: {e}") from None


def _replay_compiled(
  first: Mapping[str, Any], sched: Sequence[Mapping[str, Any]], space: Mapping[str, Any]
) -> tuple[dict[str, tuple], dict[str, Any]]:
  """What a replay compiles so that every value its schedule switches to is a traced one.

  Returns the candidates of the built-in choices and of the batch size (the
  schedule's sizes and those of the space's ``batch_size``, the original
  run's; two sizes or more: traced, stepping through micro-batches of the
  smallest, as the original run did), and the space's ``dropout`` dimension
  when a rate is ever set (the population compiles dropout's masks only
  then). A user's choices keep their space's candidates, the original run's.
  """
  epochs = [first, *sched]
  candidates = {
    name: tuple(dict.fromkeys(hp[name] for hp in epochs if name in hp))
    for name in ("activation", "loss", "optimizer", "batch_size")
    if name in first
  }
  dim = space.get("batch_size")
  listed = (
    getattr(dim, "values", None)
    or ((dim.value,) if hasattr(dim, "value") else None)
    or (range(dim.lo, dim.hi + 1) if hasattr(dim, "lo") else ())
  )
  candidates["batch_size"] = tuple(dict.fromkeys([*candidates.get("batch_size", ()), *listed]))
  rates = tuple(dict.fromkeys(hp["dropout"] for hp in epochs if "dropout" in hp))
  dims = {"dropout": space_lib.Choice(rates)} if any(r != 0 for r in rates) else {}
  return candidates, dims


def _call_description(exp: Experiment, init: str, schedule: dict[str, Any]) -> dict[str, Any]:
  """What ``config.json`` records of a :func:`tune` call (its objects by name)."""
  data = exp.data
  config = {
    "api": "python",
    "model": _qualname(exp.model),
    "loss": _qualname(exp.loss),
    "metric": _qualname(exp.metric),
    "val_loss": _qualname(exp.val_loss),
    "data": {
      "name": data.name,
      "task": data.task,
      "train": data.num_train,
      "val": data.num_val,
      "test": data.num_test,
      "input_shape": list(data.input_shape),
      "digest": _digest(data),
    },
    "space": space_lib.to_config(exp.space),
    "members": exp.members,
    "population": len(exp.members),
    "epochs": exp.epochs,
    "seed": exp.seed,
    "init": init,
    "fitness": exp.fitness,
    "mode": exp.mode,
    "controller": exp.controller.settings(),
    "schedule": schedule,
    "eval_batch_size": exp.eval_batch_size,
    "shard": exp.shard,
    "report": exp.report,
    "progress": exp.progress,
    "tensorboard": exp.tensorboard,
    "checkpoint": {"every": exp.checkpoint_every, "keep": exp.checkpoint_keep},
  }
  return json.loads(json.dumps(config, default=str))

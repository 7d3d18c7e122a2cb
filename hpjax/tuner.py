"""The tuning loop: build a population from a config, train it, log, summarise.

``run(config, workdir)`` is what ``experiments/tune.py`` calls. A config is an
``ml_collections.ConfigDict`` (see ``experiments/configs/``):

* ``seed``, ``population``, ``epochs``, ``batch_size``, ``eval_batch_size``;
* ``data``: ``source``, ``data_dir``, ``image_size``, ``val_fraction``,
  ``test_fraction``, ``max_train``;
* ``model``: the default structural model (:class:`hpjax.ModelConfig` fields);
* ``schedule``: ``kind``, ``warmup_epochs``, ``alpha``, ``decay_epochs`` (the
  length of a cosine decay; 0: ``epochs``, and then the run cannot be extended);
* ``space``: hyperparameter name -> dimension (:mod:`hpjax.space`);
* ``init``: how the initial members are drawn from the space: ``random``
  (default), ``grid`` (full factorial; ``population`` must equal its size) or
  ``quasi_random`` (scrambled Sobol), seeded by ``seed``;
* ``fitness``: the validation metric ranked (``accuracy`` or ``loss`` for
  classification, ``mse`` or ``loss`` for regression); its direction
  (:mod:`hpjax.fitness`) is the controller's, and a ``controller.mode`` that
  contradicts it is an error;
* ``controller``: ``name`` (``none`` for a plain sweep, ``pbt`` or
  ``halving``) and the controller's settings
  (:class:`hpjax.controllers.pbt.PBTConfig` /
  :class:`hpjax.controllers.halving.HalvingConfig` fields);
* ``tensorboard`` (default true): TensorBoard event files per member;
* ``report`` (default true): plots and ``report.json`` at the end
  (:mod:`hpjax.report`; ``hpjax-report WORKDIR`` rebuilds them any time);
* ``shared_order`` (default false): every member of a group sees the same
  minibatches (see :class:`hpjax.population.GroupSpec`);
* ``progress``: progress bars (default: only when stdout is a terminal);
* ``hparam_schedule``: replay a per-epoch schedule on one model
  (:mod:`hpjax.lineage`; ``population`` 1, no space, no controller);
* ``lr_range_test``: when true, the members' train-loss curves are analysed
  as a learning-rate range test (``summary.json['lr_range']``);
* ``shard`` (default true): split the population over all devices when there
  are several (:mod:`hpjax.distributed`); a relaunch may change it, and with
  several processes only process 0 prints and writes the workdir's files.

The workdir receives ``config.json`` (the resolved config), ``metrics.jsonl``
(one line per member per epoch: train/validation metrics and the
hyperparameters that member trained with that epoch, and ``wall_s``, the
run's seconds so far, resumes included), ``lineage.jsonl`` (every PBT exploit and
explore) and ``summary.json`` (the best member).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from hpjax import checkpoint
from hpjax import distributed
from hpjax import fitness as fitness_lib
from hpjax import lineage
from hpjax import optim
from hpjax.controllers import halving
from hpjax.controllers import lr_range
from hpjax.controllers import pbt
from hpjax import space as space_lib
from hpjax.data import load_dataset
from hpjax.models import ACTIVATIONS, ModelConfig
from hpjax.monitor import Monitor, generation_table
from hpjax.population import Member, Population, exploit_key

_MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))
_MEMBER_FIELDS = tuple(f.name for f in dataclasses.fields(Member))


def _plain(cfg: Any) -> Any:
  """ConfigDict / mapping -> plain dict (recursively)."""
  if hasattr(cfg, "to_dict"):
    return cfg.to_dict()
  if isinstance(cfg, Mapping):
    return {k: _plain(v) for k, v in cfg.items()}
  return cfg


def config_error(field: str, message: str) -> ValueError:
  """A one-line configuration error naming the field."""
  return ValueError(f"config.{field}: {message}")


def build_members(cfg: Mapping[str, Any], task: str) -> tuple[list[Member], dict]:
  """Draws the initial members from the config's search space.

  Args:
    cfg: the plain config dict.
    task: ``classification`` or ``regression`` (default loss).

  Returns:
    ``(members, space)``.
  """
  space = space_lib.from_config(cfg.get("space", {}))
  n = int(cfg["population"])
  if n < 1:
    raise config_error("population", f"must be >= 1, got {n}")
  base_model = dict(cfg.get("model", {}))
  unknown = set(base_model) - set(_MODEL_FIELDS)
  if unknown:
    raise config_error("model", f"unknown fields {sorted(unknown)}; allowed: {', '.join(_MODEL_FIELDS)}")
  default_loss = "cross_entropy" if task == "classification" else "mse"
  space_lib.check_structural_fits(space, n)
  init = cfg.get("init", "random")
  if init == "random":
    draws = space_lib.sample_random(space, n, int(cfg["seed"]))
  elif init == "grid":
    draws = space_lib.sample_grid(space, n)
  elif init == "quasi_random":
    draws = space_lib.sample_quasi_random(space, n, int(cfg["seed"]))
  else:
    raise config_error("init", f"unknown value {init!r}; allowed: random, grid, quasi_random")
  members = []
  for draw in draws:
    model = {**base_model, **{k: v for k, v in draw.items() if k in _MODEL_FIELDS}}
    fields = {k: v for k, v in draw.items() if k in _MEMBER_FIELDS and k != "model"}
    fields.setdefault("batch_size", int(cfg["batch_size"]))
    fields.setdefault("loss", default_loss)
    members.append(Member(model=ModelConfig(**model).validate(), **fields).validate())
  return members, space


def config_dataset(cfg: Mapping[str, Any]):
  """The dataset a plain config dict describes (``data`` fields, split by ``seed``)."""
  d = cfg["data"]
  return load_dataset(d["source"], data_dir=d.get("data_dir") or None,
                      image_size=d.get("image_size") or None,
                      val_fraction=d.get("val_fraction", 0.1),
                      test_fraction=d.get("test_fraction", 0.2),
                      seed=int(cfg["seed"]), max_train=d.get("max_train") or None)


def member_from_hparams(hp: Mapping[str, Any], cfg: Mapping[str, Any], task: str) -> Member:
  """A :class:`Member` from a hyperparameter dict (a metrics row's / schedule entry's)."""
  model = {**dict(cfg.get("model", {})), **dict(hp.get("model") or {})}
  fields = {k: v for k, v in hp.items() if k in _MEMBER_FIELDS and k != "model"}
  fields.setdefault("batch_size", int(cfg["batch_size"]))
  fields.setdefault("loss", "cross_entropy" if task == "classification" else "mse")
  try:
    return Member(model=ModelConfig(**model).validate(), **fields).validate()
  except (TypeError, ValueError) as e:
    raise config_error("hparam_schedule", str(e)) from None


def run(config: Any, workdir: str, *, log: Callable[[str], None] = print) -> dict[str, Any]:
  """Trains a population as configured and writes the workdir files.

  Args:
    config: ``ml_collections.ConfigDict`` or a plain dict.
    workdir: output directory (created).
    log: where progress lines go.

  Returns:
    The summary dict also written to ``summary.json``.
  """
  cfg = _plain(config)
  # Several processes (hpjax.distributed) all run this loop in step; only
  # process 0 prints and writes logs and reports.
  main = distributed.is_main_process()
  if not main:
    log = lambda text: None
  # Everything is validated before the workdir is touched.
  space_lib.from_config(cfg.get("space", {}))
  data = config_dataset(cfg)
  log(data.summary())
  epochs = int(cfg["epochs"])
  if epochs < 1:
    raise config_error("epochs", f"must be >= 1, got {epochs}")
  schedule_hps = None
  if cfg.get("hparam_schedule"):
    # Replay: one fresh model trained on a given per-epoch schedule (e.g. the
    # best PBT member's, exported to WORKDIR/best/schedule.json).
    schedule_hps = lineage.check_schedule(cfg["hparam_schedule"], epochs)
    if (cfg.get("controller") or {}).get("name", "none") != "none":
      raise config_error("controller.name", "must be 'none' when replaying an hparam_schedule")
    if int(cfg["population"]) != 1:
      raise config_error("population", "must be 1 when replaying an hparam_schedule, got "
                         f"{cfg['population']}")
    if cfg.get("space"):
      raise config_error("space", "must be empty when replaying an hparam_schedule (the "
                         "schedule gives every hyperparameter)")
    for hp in schedule_hps:
      member_from_hparams(hp, cfg, data.task)  # validates every epoch's entry up front
  metric = "accuracy" if data.task == "classification" else "mse"
  fitness_name = cfg.get("fitness", metric)
  mode = fitness_lib.check(fitness_name, data.task)
  members, space = build_members(cfg, data.task)
  controller = _controller(cfg, fitness_name)
  if schedule_hps is not None:
    members = [member_from_hparams(schedule_hps[0], cfg, data.task)]
  schedule = _epoch_schedule(cfg)
  if schedule.kind not in optim.SCHEDULES:
    raise config_error("schedule.kind", f"unknown value {schedule.kind!r}; allowed: "
                       + ", ".join(optim.SCHEDULES))
  used_activations = {m.activation for m in members}
  used_losses = [m.loss for m in members]
  if schedule_hps is not None:
    used_activations |= {h["activation"] for h in schedule_hps if "activation" in h}
    used_losses += [h["loss"] for h in schedule_hps if h.get("loss")]
  activations = space_lib.candidates(space, "activation", sorted(
      used_activations, key=list(ACTIVATIONS).index))
  losses = space_lib.candidates(space, "loss", list(dict.fromkeys(used_losses)))
  pop = Population(members, data, seed=int(cfg["seed"]), activations=activations, losses=losses,
                   schedule=schedule, eval_batch_size=int(cfg.get("eval_batch_size", 256)),
                   mesh="auto" if cfg.get("shard", True) else None,
                   shared_order=bool(cfg.get("shared_order", False)))
  log(f"population: {pop.size} members in {len(pop.groups)} compiled group(s)"
      + (f", split over {pop.mesh.size} devices" if pop.mesh is not None else ""))

  old_config = _read_config(workdir)
  if old_config is not None:
    _check_compatible(old_config, cfg, workdir)
  distributed.barrier("hpjax: workdir checked")  # before process 0 writes to it
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise ValueError(f"--workdir: cannot create {workdir!r}: {e.strerror}") from None
  if not os.access(workdir, os.W_OK):
    raise ValueError(f"--workdir: {workdir!r} is not writable")

  metrics_path = os.path.join(workdir, "metrics.jsonl")
  lineage_path = os.path.join(workdir, "lineage.jsonl")
  ck = cfg.get("checkpoint", {}) or {}
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), keep=int(ck.get("keep", 3)),
                                 every=int(ck.get("every", 1)),
                                 best_mode=mode)
  with ckpt, _StopOnSignal() as stop:
    start_epoch, generation, member_steps, elapsed = 0, 0, 0, 0.0
    ids = np.arange(pop.size)  # current position -> original member id
    initial_val = None
    resumed_decided = True  # whether the resumed epoch's controller decision was made
    if ckpt.latest_step() is not None:
      # Resume: rebuild the population's shape (halving may have compacted it),
      # then restore every state, key and counter from the newest good checkpoint.
      shaped = {}

      def templates(extra):
        shaped["groups"], shaped["members"] = pop.compacted(extra["ids"])
        return pop.checkpoint_templates(shaped["groups"])

      _, states, extra = ckpt.restore(templates)
      pop.groups, pop.members = shaped["groups"], shaped["members"]
      pop.size = len(pop.members)
      pop.load_checkpoint_states(states)  # on any device count
      start_epoch, generation = int(extra["epoch"]), int(extra["generation"])
      resumed_decided = bool(extra.get("decided", True))
      member_steps, elapsed = int(extra["member_steps"]), float(extra["elapsed"])
      ids = np.asarray(extra["ids"], np.int64)
      if extra.get("initial_val_loss") is not None:
        initial_val = {"loss": np.asarray(extra["initial_val_loss"], np.float64)}
      if main:
        _truncate_jsonl(metrics_path, start_epoch)
        _truncate_jsonl(lineage_path, start_epoch)
      log(f"resuming from the checkpoint of epoch {start_epoch} in {workdir}")
    else:
      if main:
        for path in (metrics_path, lineage_path):
          open(path, "w").close()
        with open(os.path.join(workdir, "config.json"), "w") as f:
          json.dump(cfg, f, indent=2, sort_keys=True)
      # A range test measures how far each rate brings the loss down from
      # where every member starts: the validation loss before any training.
      if cfg.get("lr_range_test"):
        initial_val = pop.evaluate("val")
    if start_epoch >= epochs:
      log(f"the run in {workdir} already trained {start_epoch} epochs (config.epochs={epochs}); "
          "raise --config.epochs to extend it")
    start = time.perf_counter() - elapsed
    interval = controller.interval if isinstance(controller, pbt.PBTConfig) else 1
    monitor = Monitor(workdir, epochs=epochs, start_epoch=start_epoch, interval=interval,
                      shown=[k for k in space if k != "model"], log=log,
                      progress=cfg.get("progress"), tensorboard=bool(cfg.get("tensorboard", True)),
                      enabled=main)
    with (monitor, open(metrics_path if main else os.devnull, "a") as mf,
          open(lineage_path if main else os.devnull, "a") as lf):
      is_pbt = isinstance(controller, pbt.PBTConfig)
      is_halving = isinstance(controller, halving.HalvingConfig)

      def acts_at(epoch):
        """Whether the controller acts after ``epoch`` in a run longer than ``epoch``."""
        if is_pbt:
          return pbt.should_decide(epoch, controller)
        return is_halving and halving.is_rung(epoch, controller, epoch + 1)

      def decide(epoch, fit, hps):
        """The controller's decision after ``epoch``; returns (note, kept positions or None)."""
        nonlocal generation, ids
        if is_pbt:
          generation += 1
          rng = np.random.default_rng([int(cfg["seed"]), generation])
          plan = pbt.exploit_explore(fit, hps, space, pop.group_ids(), controller, rng,
                                     generation)
          seed = int(cfg["seed"])
          pop.set_member_hparams(plan.hparams, donors=plan.donors, new_keys={
              int(i): exploit_key(seed, int(ids[i]), generation) for i in plan.replaced})
          for event in plan.events:
            lf.write(json.dumps({"epoch": epoch, **event}, default=_jsonable) + "\n")
          lf.flush()
          return f"replaced {len(plan.events)}", None
        result = halving.cut(fit, controller, epoch, pop.group_ids())
        for rec in result.records:
          lf.write(json.dumps({"epoch": epoch, "event": "pruned", **rec,
                               "member": int(ids[rec["member"]])}, default=_jsonable) + "\n")
        lf.flush()
        pop.compact(result.keep)
        ids = ids[result.keep]
        return f"pruned {len(result.pruned)}, {pop.size} left", result.keep

      if 0 < start_epoch < epochs and not resumed_decided:
        # The run being extended stopped at its then-last epoch, where no
        # decision is made; make it now, as an uninterrupted run would have.
        note, _ = decide(start_epoch, pop.evaluate("val")[fitness_name], pop.hparams())
        log(f"controller after epoch {start_epoch}: {note}")
      for epoch in range(start_epoch + 1, epochs + 1):
        if schedule_hps is not None and epoch > 1 and schedule_hps[epoch - 1] != schedule_hps[epoch - 2]:
          pop.set_member_hparams([schedule_hps[epoch - 1]])
        t0 = time.perf_counter()
        train = pop.train_epoch()
        val = pop.evaluate("val")
        dt = time.perf_counter() - t0
        steps = sum(data.num_train // m.batch_size for m in pop.members)
        member_steps += steps
        epoch_hps = pop.hparams()  # what each member trained with this epoch
        for i in range(pop.size):
          row = {"epoch": epoch, "member": int(ids[i]),
                 **{k: float(v[i]) for k, v in train.items()},
                 **{f"val_{k}": float(v[i]) for k, v in val.items()},
                 "hparams": epoch_hps[i], "wall_s": time.perf_counter() - start}
          mf.write(json.dumps(row, default=_jsonable) + "\n")
        mf.flush()
        fit = val[fitness_name]
        best_pos = fitness_lib.best(fit, mode)
        shown_ids = [int(i) for i in ids]  # before a cut renumbers them
        note = ""
        # No decision after the last epoch: nothing would train on it (a
        # relaunch that extends the run makes it first, see above).
        decided = not (epoch == epochs and acts_at(epoch))
        if epoch < epochs and acts_at(epoch):
          note, _ = decide(epoch, fit, epoch_hps)
        table = generation_table(
            epoch=epoch, epochs=epochs,
            generation=generation if isinstance(controller, pbt.PBTConfig) else None,
            fitness_name=fitness_name, fitness=np.asarray(fit, np.float64), mode=mode,
            best_member=shown_ids[best_pos], best_hparams=epoch_hps[best_pos],
            shown=monitor.shown, seconds=dt, member_steps=steps, note=note)
        monitor.epoch_end(epoch, shown_ids, train, val, epoch_hps, table,
                          best={f"best {fitness_name}": round(float(fit[best_pos]), 4)})
        stop_now = distributed.any_process(stop.requested)  # all processes stop together
        final = epoch == epochs or stop_now
        if ckpt.should_save(epoch) or final:
          extra = {"epoch": epoch, "generation": generation, "ids": ids.tolist(),
                   "member_steps": member_steps, "elapsed": time.perf_counter() - start,
                   "decided": decided,
                   "initial_val_loss": (None if initial_val is None
                                        else np.asarray(initial_val["loss"]).tolist())}
          ckpt.save(epoch, pop.checkpoint_states(), extra,
                    metric=float(fit[best_pos]), force=final)
        if stop_now and epoch < epochs:
          ckpt.wait()
          raise Interrupted(f"stopped by {stop.signal_name or 'a signal to another process'} "
                            f"after epoch {epoch}/{epochs}; the "
                            f"checkpoint is saved: relaunch the same command to resume",
                            stop.signum or signal.SIGTERM)
      monitor.close_bars()
      val = pop.evaluate("val")
      if start_epoch < epochs:
        monitor.finish([int(i) for i in ids], pop.hparams(),
                       {f"val_{k}": v for k, v in val.items()})

  wall = time.perf_counter() - start
  last_epoch = max(start_epoch, epochs)
  test = pop.evaluate("test")
  fit = val[fitness_name]
  ranking = fitness_lib.rank(fit, mode)
  best = int(ranking[0])
  hps = pop.hparams()
  summary = {
      "best_member": int(ids[best]),
      "hyperparameters": hps[best],
      "val": {k: float(v[best]) for k, v in val.items()},
      "test": {k: float(v[best]) for k, v in test.items()},
      "fitness": fitness_name,
      "members": len(members),
      "members_at_end": pop.size,
      "member_epochs": sum(1 for _ in open(metrics_path)),
      "epochs": last_epoch,
      "wall_time_s": wall,
      "member_steps_per_s": member_steps / wall,
      "ranking": [int(ids[i]) for i in ranking],
      "ranking_positions": [int(i) for i in ranking],
  }
  if cfg.get("lr_range_test"):
    summary["lr_range"] = _lr_range(metrics_path, initial_val["loss"], pop, ids, log)
  summary["export"] = export_best(workdir, cfg, pop, data, best, int(ids[best]), last_epoch,
                                  summary, log)
  if main:
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
  log(format_summary(summary, val, hps, metric))
  if main and cfg.get("report", True):
    try:
      from hpjax import report  # pylint: disable=g-import-not-at-top
      plots = report.build_report(workdir)["plots"]
      log(f"plots: {len(plots)} PNG files in {os.path.join(workdir, 'plots')} "
          f"(rebuild any time: hpjax-report {workdir})")
    except Exception as e:  # pylint: disable=broad-except
      # A plot must never cost the user the run it reports on.
      log(f"report not written: {type(e).__name__}: {e}")
  return summary


def export_best(workdir: str, cfg: Mapping[str, Any], pop: Population, data, position: int,
                member: int, last_epoch: int, summary: Mapping[str, Any],
                log: Callable[[str], None]) -> dict[str, str]:
  """Exports the best member to ``WORKDIR/best/``.

  * ``model/``: its parameters and batch statistics (orbax) and
    ``model.json`` (hyperparameters, metrics, input normalisation), read back
    with :func:`hpjax.checkpoint.load_model`;
  * ``schedule.json``: the hyperparameters its weights were trained with,
    epoch by epoch, traced back through PBT's copies (:mod:`hpjax.lineage`);
  * ``config.json``: a config that retrains one fresh model on that schedule
    (constant hyperparameters for a sweep or halving run).

  Returns:
    ``{"model": ..., "schedule": ..., "config": ..., "retrain": command}``.
  """
  out_dir = os.path.join(workdir, "best")
  os.makedirs(out_dir, exist_ok=True)
  group = next(g for g in pop.groups if position in g.members)
  j = group.members.index(position)
  state = pop.checkpoint_states([group])[0]  # host copies on a mesh (every process calls)
  params = jax.tree.map(lambda a: np.asarray(a[j]), state.params)
  stats = jax.tree.map(lambda a: np.asarray(a[j]), state.batch_stats)
  meta = {"member": member, "epochs": last_epoch, "hyperparameters": summary["hyperparameters"],
          "val": summary["val"], "test": summary["test"], "task": data.task,
          "input_shape": list(data.input_shape),
          "num_outputs": data.num_classes if data.task == "classification" else 1,
          "mean": np.ravel(data.mean).tolist(), "std": np.ravel(data.std).tolist(),
          "data": cfg.get("data", {})}
  model_dir = checkpoint.save_model(os.path.join(out_dir, "model"), params, stats, meta)
  result = {"model": model_dir}
  if not distributed.is_main_process():
    return result  # the rest reads and writes process 0's logs
  try:
    doc = lineage.export_schedule(workdir, member, os.path.join(out_dir, "schedule.json"),
                                  last_epoch=last_epoch, fitness=summary["fitness"])
  except ValueError as e:  # e.g. logs of a run started by an older hpjax
    log(f"best member's schedule not exported: {e}")
    return result
  retrain = json.loads(json.dumps(cfg))
  retrain.update(population=1, init="random", space={}, controller={"name": "none"},
                 lr_range_test=False, epochs=doc["epochs"],
                 hparam_schedule=[{"epoch": e["epoch"], "hparams": e["hparams"]}
                                  for e in doc["schedule"]])
  config_path = os.path.join(out_dir, "config.json")
  with open(config_path, "w") as f:
    json.dump(retrain, f, indent=2, sort_keys=True)
  result.update(schedule=os.path.join(out_dir, "schedule.json"), config=config_path,
                retrain=("python -m experiments.tune --config=experiments/configs/from_json.py:"
                         f"{config_path} --workdir=WORKDIR"))
  return result


# Fields a relaunch may change without making the workdir incompatible: the
# length of the run, how it is checkpointed and split over devices, and what
# it shows (plots, progress bars, TensorBoard files); none changes a number.
_RESUME_FREE = ("epochs", "checkpoint.every", "checkpoint.keep", "shard", "report", "progress",
                "tensorboard")


class Interrupted(Exception):
  """SIGINT/SIGTERM stopped the run at a safe point, after a checkpoint.

  Attributes:
    exit_code: 128 + the signal number, the shell's convention.
  """

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.exit_code = 128 + int(signum)


class _StopOnSignal:
  """Turns SIGINT/SIGTERM into a request to stop after the current epoch.

  A second signal of the same kind while stopping falls back to the default
  behaviour (KeyboardInterrupt / termination), so a stuck run can still be
  killed; the newest complete checkpoint stays usable either way.
  """

  def __init__(self):
    self.requested = False
    self.signum = 0
    self.signal_name = ""
    self._old = {}

  def _handle(self, signum, frame):
    del frame
    if self.requested:
      signal.signal(signum, self._old.get(signum, signal.SIG_DFL))
      signal.raise_signal(signum)
      return
    self.requested = True
    self.signum = signum
    self.signal_name = signal.Signals(signum).name
    print(f"{self.signal_name}: finishing the current epoch, then saving a checkpoint", flush=True)

  def __enter__(self):
    import threading  # pylint: disable=g-import-not-at-top
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT, signal.SIGTERM):
        self._old[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)
    return False


def _epoch_schedule(cfg: Mapping[str, Any]) -> optim.EpochSchedule:
  """The run's learning-rate schedule shape, in epochs.

  A cosine decays over ``schedule.decay_epochs``; 0 (the default) means
  ``config.epochs``, which ties every step's rate to the run's length.
  """
  s = cfg.get("schedule", {}) or {}
  decay = float(s.get("decay_epochs", 0.0) or 0.0)
  if decay < 0:
    raise config_error("schedule.decay_epochs", f"must be >= 0 (0: config.epochs), got {decay}")
  return optim.EpochSchedule(s.get("kind", "constant"), float(s.get("warmup_epochs", 0.0)),
                             decay or float(cfg["epochs"]), float(s.get("alpha", 0.0)))


def _check_compatible(old: Mapping[str, Any], new: Mapping[str, Any], workdir: str) -> None:
  """Refuses to resume ``workdir`` (written with ``old``) under a config that changes numbers.

  Only the fields of :data:`_RESUME_FREE` may differ. ``epochs`` may change
  only when nothing already trained depends on it: a cosine schedule whose
  length is the run's (``schedule.decay_epochs`` 0) would give every step
  another learning rate.
  """
  diffs = checkpoint.diff_configs(old, new, ignore=_RESUME_FREE)
  if diffs:
    raise ValueError(f"--workdir: {workdir!r} holds a run with another config ("
                     + ", ".join(diffs[:8]) + (" ..." if len(diffs) > 8 else "")
                     + " differ); use a new --workdir, or relaunch with the same config "
                     "(only epochs may grow)")
  old_epochs, epochs = int(old.get("epochs", 0)), int(new["epochs"])
  s = new.get("schedule", {}) or {}
  if (old_epochs != epochs and s.get("kind") in ("cosine", "warmup_cosine")
      and not s.get("decay_epochs")):
    raise config_error("epochs", f"{workdir!r} was started with epochs={old_epochs} and a "
                       f"{s.get('kind')} learning-rate schedule over them (schedule.decay_epochs "
                       f"0), so running it for {epochs} would change the rate of every step; "
                       "use a new --workdir (set schedule.decay_epochs to make a run extendable)")


def _read_config(workdir: str) -> dict | None:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _truncate_jsonl(path: str, last_epoch: int) -> None:
  """Drops log lines of epochs after the checkpoint being resumed from."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    rows = [l for l in f if l.strip() and json.loads(l).get("epoch", 0) <= last_epoch]
  with open(path, "w") as f:
    f.writelines(rows)


def _controller(cfg: Mapping[str, Any], fitness_name: str):
  """The controller config of a run (PBTConfig / HalvingConfig), or None for a sweep.

  The controller ranks in the fitness metric's direction; a ``mode`` in the
  config must agree with it.
  """
  c = dict(cfg.get("controller", {}) or {})
  name = c.pop("name", "none")
  if name == "none":
    return None
  if name not in ("pbt", "halving"):
    raise config_error("controller.name", f"unknown value {name!r}; allowed: none, pbt, halving")
  cls = pbt.PBTConfig if name == "pbt" else halving.HalvingConfig
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = set(c) - fields
  if unknown:
    raise config_error("controller", f"unknown fields {sorted(unknown)}; allowed: name, "
                       + ", ".join(sorted(fields)))
  if "perturbation_factors" in c:
    c["perturbation_factors"] = tuple(c["perturbation_factors"])
  c["mode"] = fitness_lib.resolve_mode(c.get("mode"), fitness_name, "config.controller.mode")
  try:
    return cls(**c).validate()
  except ValueError as e:
    raise config_error("controller", str(e)) from None


def _lr_range(metrics_path: str, initial_loss: np.ndarray, pop: Population, ids: np.ndarray,
              log: Callable[[str], None]) -> dict[str, Any]:
  """Analyses a learning-rate range test from the validation-loss curves.

  Each curve starts at the member's loss before training, so a rate that
  blows the loss up is flagged as diverged even if it later recovers a bit.
  """
  curves: dict[int, list[float]] = {int(i): [float(initial_loss[k])] for k, i in enumerate(ids)}
  with open(metrics_path) as f:
    for line in f:
      row = json.loads(line)
      curves[row["member"]].append(row["val_loss"])
  rates = np.array([h["learning_rate"] for h in pop.hparams()])
  losses = np.array([curves[int(i)] for i in ids], dtype=np.float64)
  result = lr_range.analyse(rates, losses)
  text = lr_range.describe(result)
  log(f"learning-rate range test: {text}")
  return {"rates": result.rates.tolist(), "final_losses": result.losses.tolist(),
          "slopes": result.slopes.tolist(), "diverged": result.diverged.tolist(),
          "best_rate": float(result.best_rate),
          "suggested_range": [float(v) for v in result.suggested_range], "description": text}


def _jsonable(v):
  if isinstance(v, np.generic):
    return v.item()
  if isinstance(v, np.ndarray):
    return v.tolist()
  return str(v)


def format_summary(summary: Mapping[str, Any], val: Mapping[str, np.ndarray],
                   hps: list[dict[str, Any]], metric: str, top: int = 5) -> str:
  """A plain-text table of the best members and the winner's test metrics."""
  cols = ("learning_rate", "optimizer", "activation", "batch_size")
  lines = [f"\n{'rank':>4} {'member':>6} {'val ' + metric:>12} " + " ".join(f"{c:>13}" for c in cols)]
  ranked = zip(summary["ranking_positions"][:top], summary["ranking"][:top])
  for r, (i, member) in enumerate(ranked, 1):
    h = hps[i]
    vals = [f"{h['learning_rate']:.3g}", h["optimizer"], h["activation"], str(h["batch_size"])]
    v = val[metric][i]
    lines.append(f"{r:>4} {member:>6} {v:>12.4f} " + " ".join(f"{x:>13}" for x in vals))
  t = summary["test"]
  lines.append(f"\nbest member {summary['best_member']}: test "
               + ", ".join(f"{k} {v:.4f}" for k, v in t.items())
               + f"; {summary['member_epochs']} member-epochs in {summary['wall_time_s']:.1f} s "
               f"({summary['member_steps_per_s']:.0f} member-steps/s)")
  return "\n".join(lines)

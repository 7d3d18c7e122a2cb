"""The run loop: train an epoch, let the controller act, write, checkpoint.

:func:`train` is the whole loop of a run between its start (fresh or resumed)
and its last epoch. It knows nothing of which controller it drives
(:mod:`hpjax.controllers.base`) or where results go (:mod:`hpjax.writers`).
Its host-side counters (:class:`Progress`) are saved with every checkpoint,
so a resumed run continues exactly where the checkpoint left it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import contextlib
import dataclasses
import signal
import time
from typing import Any, TYPE_CHECKING

import numpy as np

from hpjax import distributed
from hpjax import engine
from hpjax import hparams as hp_lib
from hpjax.controllers.base import Decision
from hpjax.controllers.base import View
from hpjax.population import Population
from hpjax.writers import EpochRecord
from hpjax.writers import Writer

if TYPE_CHECKING:
  from hpjax.tuner import Experiment


@dataclasses.dataclass
class Progress:
  """A run's host-side counters: what a checkpoint holds besides the population.

  Attributes:
    epoch: epochs trained.
    generation: controller decisions made so far.
    member_steps: member-steps trained so far.
    elapsed: wall seconds so far (resumes included).
    decided: whether the controller's decision after ``epoch`` was made (it is
      not after a run's last epoch; an extension makes it first).
    initial_val_loss: validation loss before any training (learning-rate
      range tests), or None.
  """

  epoch: int = 0
  generation: int = 0
  member_steps: int = 0
  elapsed: float = 0.0
  decided: bool = True
  initial_val_loss: list | None = None

  def extra(self, ids: Sequence[int]) -> dict[str, Any]:
    """The checkpoint's ``extra`` dict."""
    return {**dataclasses.asdict(self), "ids": [int(i) for i in ids]}

  @classmethod
  def from_extra(cls, extra: Mapping[str, Any]) -> "Progress":
    return cls(
      epoch=int(extra["epoch"]),
      generation=int(extra["generation"]),
      member_steps=int(extra["member_steps"]),
      elapsed=float(extra["elapsed"]),
      decided=bool(extra.get("decided", True)),
      initial_val_loss=extra.get("initial_val_loss"),
    )


class Interrupted(Exception):
  """SIGINT/SIGTERM stopped the run at a safe point, after a checkpoint.

  Attributes:
    exit_code: 128 + the signal number, the shell's convention.
  """

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.exit_code = 128 + int(signum)


@dataclasses.dataclass
class Run:
  """Everything the loop drives.

  Attributes:
    pop: the population (already restored when resuming).
    exp: the experiment: its controller (decides between epochs), fitness
      (the ranked validation metric) and mode (its direction), the epoch it
      trains to, seed (the controller's and clones' randomness), search space
      and replayed hyperparameter schedule.
    writers: where results go.
    checkpointer: :class:`hpjax.checkpoint.Checkpointer`.
    stop: an object whose ``requested`` turns true on SIGINT/SIGTERM.
    progress: the counters, restored when resuming.
    phases: where the loop's seconds go (:class:`hpjax.timing.Phases`), or None.
  """

  pop: Population
  exp: Experiment
  writers: Sequence[Writer]
  checkpointer: Any
  stop: Any
  progress: Progress
  phases: Any = None

  def phase(self, name: str):
    """Accounts a block of the loop to ``name`` (nothing when not timed)."""
    return self.phases.phase(name) if self.phases is not None else contextlib.nullcontext()


def decide(run: Run, epoch: int, fitness: np.ndarray, hparams: Sequence[Mapping[str, Any]]) -> str:
  """Asks the controller, applies its decision, writes its events; returns its note."""
  pop, p = run.pop, run.progress
  p.generation += 1
  view = View(
    epoch=epoch,
    generation=p.generation,
    seed=run.exp.seed,
    fitness=np.asarray(fitness, np.float64),
    mode=run.exp.mode,
    hparams=hparams,
    groups=pop.group_ids(),
    space=run.exp.space,
    structural=pop.structural_names(),
    max_epochs=run.exp.epochs,
  )
  decision: Decision = run.exp.controller.decide(view)
  ids = pop.ids
  events = [
    {k: (int(ids[v]) if k in ("target", "donor", "member") else v) for k, v in e.items()}
    for e in decision.events
  ]
  # The lineage says what trains: a controller's float64 value is set (and
  # trains) as the float32 the population stores (hparams.stored).
  for e in events:
    if isinstance(e.get("new_hparams"), Mapping):
      e["new_hparams"] = {
        k: hp_lib.stored(k, v, run.exp.space) for k, v in e["new_hparams"].items()
      }
  if decision.donors is not None or decision.hparams is not None:
    hps = decision.hparams if decision.hparams is not None else hparams
    pop.set_member_hparams(
      hps,
      donors=decision.donors,
      new_keys={
        int(i): engine.exploit_key(run.exp.seed, int(ids[i]), p.generation)
        for i in decision.replaced
      },
    )
  if decision.keep is not None:
    pop.compact(decision.keep)
  for w in run.writers:
    w.events(epoch, events)
  return decision.note


def train(run: Run) -> None:
  """Trains from ``run.progress.epoch`` to ``run.exp.epochs``, checkpointing as configured.

  Raises:
    Interrupted: a signal asked the run to stop; the checkpoint is saved.
  """
  pop, p, ckpt = run.pop, run.progress, run.checkpointer
  start = time.perf_counter() - p.elapsed
  if 0 < p.epoch < run.exp.epochs and not p.decided and run.exp.controller.acts_at(p.epoch):
    # The run being extended stopped at its then-last epoch, where no
    # decision is made; make it now, as an uninterrupted run would have.
    with run.phase("controller"):
      decide(run, p.epoch, pop.evaluate("val")[run.exp.fitness], pop.hparams())
  for epoch in range(p.epoch + 1, run.exp.epochs + 1):
    sched = run.exp.hparam_schedule
    if sched is not None and epoch > 1 and sched[epoch - 1] != sched[epoch - 2]:
      pop.set_member_hparams([sched[epoch - 1]])
    t0 = time.perf_counter()
    with run.phase("train"):
      train_metrics = pop.train_epoch()
    with run.phase("evaluate"):
      val = pop.evaluate("val")
    seconds = time.perf_counter() - t0
    steps = pop.steps_per_epoch()
    p.member_steps += steps
    with run.phase("hparams"):
      hparams = pop.hparams()  # what each position trained with this epoch
    ids = [int(i) for i in pop.ids]  # before a decision renumbers them
    fit = val[run.exp.fitness]
    acts = run.exp.controller.acts_at(epoch)
    # No decision after the last epoch: nothing would train on it.
    with run.phase("controller"):
      note = decide(run, epoch, fit, hparams) if acts and epoch < run.exp.epochs else ""
    p.epoch, p.decided = epoch, not (acts and epoch == run.exp.epochs)
    record = EpochRecord(
      epoch=epoch,
      epochs=run.exp.epochs,
      ids=ids,
      train=train_metrics,
      val=val,
      hparams=hparams,
      fitness_name=run.exp.fitness,
      mode=run.exp.mode,
      generation=p.generation if run.exp.controller.counts_generations else None,
      seconds=seconds,
      member_steps=steps,
      wall_s=time.perf_counter() - start,
      note=note,
    )
    with run.phase("write"):
      for w in run.writers:
        w.epoch(record)
    stop_now = distributed.any_process(run.stop.requested)  # all processes stop together
    final = epoch == run.exp.epochs or stop_now
    if ckpt.should_save(epoch) or final:
      p.elapsed = time.perf_counter() - start
      with run.phase("checkpoint"):
        ckpt.save(
          epoch,
          pop.checkpoint_states(),
          p.extra(pop.ids),
          metric=float(fit[record.best_position]),
          force=final,
        )
    if stop_now and epoch < run.exp.epochs:
      ckpt.wait()
      raise Interrupted(
        f"stopped by {run.stop.signal_name or 'a signal to another process'} "
        f"after epoch {epoch}/{run.exp.epochs}; the checkpoint is saved: relaunch "
        "the same command to resume",
        run.stop.signum or signal.SIGTERM,
      )
  p.elapsed = time.perf_counter() - start


class StopOnSignal:
  """Turns SIGINT/SIGTERM into a request to stop after the current epoch.

  A second signal of the same kind while stopping falls back to the default
  behaviour (KeyboardInterrupt / termination), so a stuck run can still be
  killed; the newest complete checkpoint stays usable either way.
  """

  def __init__(self, log: Callable[[str], None] = print):
    self.requested = False
    self.signum = 0
    self.signal_name = ""
    self._old = {}
    self._log = log

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

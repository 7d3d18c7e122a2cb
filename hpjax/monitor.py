"""What a user sees while a population trains: progress bars, a table per generation, TensorBoard.

:class:`Monitor` is driven by the tuner once per epoch, on the host, after the
epoch's metrics are back (nothing here runs inside an epoch):

* progress with ETA (tqdm): over generations and, when a generation spans
  several epochs (PBT ``interval > 1``), over the epochs of the current one;
  quiet when stdout is not a terminal (the per-generation table still prints);
* a short table each generation: best / median / worst fitness, the current
  best member's searched hyperparameters, member-steps/s, members replaced;
* TensorBoard event files, one run per member under
  ``WORKDIR/tensorboard/member_NNN``: ``train/*`` and ``val/*`` metrics and
  ``hparams/*`` for every numeric hyperparameter, per epoch; at the end, the
  HParams dashboard entry of every member (its final hyperparameters and
  metrics). ``tensorboard --logdir WORKDIR/tensorboard`` shows them.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from hpjax import fitness as fitness_lib

# Hyperparameters shown in the table when the search space is empty.
_DEFAULT_SHOWN = ("learning_rate", "optimizer", "activation", "batch_size")


def _fmt(v: Any) -> str:
  if isinstance(v, float):
    return f"{v:.3g}"
  return str(v)


def describe_hparams(hp: Mapping[str, Any], names: Sequence[str]) -> str:
  """``name value`` pairs of the hyperparameters ``names`` (model fields included)."""
  out = []
  for n in names:
    if n in hp:
      out.append(f"{n} {_fmt(hp[n])}")
    elif isinstance(hp.get("model"), Mapping) and n in hp["model"]:
      out.append(f"{n} {_fmt(hp['model'][n])}")
  return "  ".join(out)


def generation_table(*, epoch: int, epochs: int, generation: int | None, fitness_name: str,
                     fitness: np.ndarray, mode: str, best_member: int,
                     best_hparams: Mapping[str, Any], shown: Sequence[str], seconds: float,
                     member_steps: int, note: str = "") -> str:
  """The few lines printed after each generation (or epoch, without PBT)."""
  finite = fitness[np.isfinite(fitness)]
  if finite.size:
    order = fitness_lib.rank(finite, mode)
    best, worst = finite[order[0]], finite[order[-1]]
    stats = f"best {best:.4f}  median {np.median(finite):.4f}  worst {worst:.4f}"
  else:
    stats = "no finite value"
  diverged = int(fitness.size - finite.size)
  head = f"epoch {epoch:3d}/{epochs}"
  if generation is not None:
    head += f"  generation {generation}"
  rate = member_steps / seconds if seconds > 0 else float("nan")
  head += f"  {seconds:.1f} s  {rate:.0f} member-steps/s"
  if note:
    head += f"  {note}"
  lines = [head, f"  val {fitness_name}: {stats}" + (f"  ({diverged} diverged)" if diverged else ""),
           f"  best member {best_member}: {describe_hparams(best_hparams, shown)}"]
  return "\n".join(lines)


class Monitor:
  """Progress bars, per-generation tables and TensorBoard logs of one run.

  Args:
    workdir: the run's workdir (TensorBoard files go to ``tensorboard/``).
    epochs: epochs the run trains to.
    start_epoch: epochs already done (a resumed run).
    interval: epochs per generation (PBT), 1 otherwise.
    shown: hyperparameter names for the table (the search space's).
    log: where the tables go (``print`` by default; routed through tqdm
      while a bar is shown so the two do not tear).
    progress: True/False, or None for "only on a terminal".
    tensorboard: write TensorBoard event files.
    enabled: False on processes other than 0 of a multi-process run
      (nothing is written or printed).
  """

  def __init__(self, workdir: str, *, epochs: int, start_epoch: int = 0, interval: int = 1,
               shown: Sequence[str] = (), log: Callable[[str], None] | None = None,
               progress: bool | None = None, tensorboard: bool = True, enabled: bool = True):
    self.workdir = workdir
    self.epochs, self.interval = int(epochs), max(1, int(interval))
    self.shown = tuple(shown) or _DEFAULT_SHOWN
    self.enabled = enabled
    self._log = log or print
    self._writers: dict[int, Any] = {}
    self._tb_dir = os.path.join(workdir, "tensorboard") if (tensorboard and enabled) else None
    self._purge = start_epoch + 1 if start_epoch else None
    if progress is None:
      progress = sys.stdout.isatty()
    self._bars = []
    if progress and enabled and start_epoch < epochs:
      from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
      self._tqdm = tqdm
      gens = math.ceil(self.epochs / self.interval)
      done_gens = start_epoch // self.interval
      self._gen_bar = tqdm(total=gens, initial=done_gens, position=0, leave=True,
                           desc="generations" if self.interval > 1 else "epochs", unit="gen"
                           if self.interval > 1 else "epoch", dynamic_ncols=True)
      self._bars.append(self._gen_bar)
      self._epoch_bar = None
      if self.interval > 1:
        self._epoch_bar = tqdm(total=self.interval, initial=start_epoch % self.interval,
                               position=1, leave=False, desc="epochs of this generation",
                               unit="epoch", dynamic_ncols=True)
        self._bars.append(self._epoch_bar)

  def print(self, text: str) -> None:
    """Prints above the bars (or plainly without them)."""
    if not self.enabled:
      return
    if self._bars:
      for line in text.splitlines():
        self._tqdm.write(line)
    else:
      self._log(text)

  def _writer(self, member: int):
    w = self._writers.get(member)
    if w is None:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      w = SummaryWriter(os.path.join(self._tb_dir, f"member_{member:03d}"),
                        purge_step=self._purge, flush_secs=30)
      self._writers[member] = w
    return w

  def epoch_end(self, epoch: int, ids: Sequence[int], train: Mapping[str, np.ndarray],
                val: Mapping[str, np.ndarray], hparams: Sequence[Mapping[str, Any]],
                fitness_line: str | None = None, best: Mapping[str, float] | None = None) -> None:
    """Logs one epoch: TensorBoard scalars per member, bars advanced.

    Args:
      epoch: the epoch just trained (1-based; the TensorBoard step).
      ids: original member id of each current position.
      train / val: per-position metric arrays.
      hparams: per-position hyperparameters the epoch trained with.
      fitness_line: the table to print (None: nothing printed).
      best: ``{"fitness": value}`` shown on the generation bar.
    """
    if not self.enabled:
      return
    if self._tb_dir is not None:
      for i, member in enumerate(ids):
        w = self._writer(int(member))
        for k, v in train.items():
          w.add_scalar(f"train/{k.removeprefix('train_')}", float(v[i]), epoch)
        for k, v in val.items():
          w.add_scalar(f"val/{k}", float(v[i]), epoch)
        for k, v in hparams[i].items():
          if isinstance(v, (int, float)) and not isinstance(v, bool):
            w.add_scalar(f"hparams/{k}", float(v), epoch)
    if fitness_line:
      self.print(fitness_line)
    if self._bars:
      if self._epoch_bar is not None:
        self._epoch_bar.update(1)
      if epoch % self.interval == 0 or epoch == self.epochs:
        self._gen_bar.update(1)
        if self._epoch_bar is not None:
          self._epoch_bar.reset()
      if best:
        self._gen_bar.set_postfix(best, refresh=True)

  def finish(self, ids: Sequence[int], hparams: Sequence[Mapping[str, Any]],
             metrics: Mapping[str, np.ndarray]) -> None:
    """Writes the HParams dashboard entries and closes the files and bars."""
    self.close_bars()
    if not self.enabled or self._tb_dir is None:
      self._close_writers()
      return
    for i, member in enumerate(ids):
      w = self._writer(int(member))
      flat: dict[str, Any] = {}
      for k, v in hparams[i].items():
        if isinstance(v, Mapping):
          flat.update({f"model.{mk}": mv for mk, mv in v.items()
                       if isinstance(mv, (bool, int, float, str))})
        elif isinstance(v, (bool, int, float, str)):
          flat[k] = v
      values = {f"hparam/{k}": float(v[i]) for k, v in metrics.items()}
      w.add_hparams(flat, values, name="hparams")
    self._close_writers()

  def close_bars(self) -> None:
    for b in reversed(self._bars):
      b.close()
    self._bars = []

  def _close_writers(self) -> None:
    for w in self._writers.values():
      w.close()
    self._writers = {}

  def close(self) -> None:
    """Closes everything without the final HParams entries (an interrupted run)."""
    self.close_bars()
    self._close_writers()

  def __enter__(self) -> "Monitor":
    return self

  def __exit__(self, *exc) -> bool:
    self.close()
    return False

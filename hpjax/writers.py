"""Where a run's results go: writers behind one interface.

The run loop hands every writer the same calls, and never knows which it
holds; a new sink is a new :class:`Writer` added to the list:

* :meth:`Writer.epoch` once per epoch with an :class:`EpochRecord` (what each
  member trained with, its train and validation metrics, the controller's
  note);
* :meth:`Writer.events` with a controller's changes (who copied whom, who was
  pruned);
* :meth:`Writer.finish` at the end of a run that reached its last epoch;
* :meth:`Writer.close` always.

Built in: :class:`MetricsFile` (``metrics.jsonl``), :class:`LineageFile`
(``lineage.jsonl``), :class:`TensorBoard` (per-member event files and the
HParams dashboard) and :class:`Console` (progress bars and a short table per
generation). A resumed run opens the files with :func:`resume_jsonl`, which
drops what was written after the checkpoint it resumes from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import contextlib
import dataclasses
import json
import math
import os
import sys
from typing import Any

import numpy as np

from hpjax import fitness as fitness_lib

# Hyperparameters the console table shows when the search space names none.
_DEFAULT_SHOWN = ("learning_rate", "optimizer", "activation", "batch_size")


@dataclasses.dataclass(frozen=True, eq=False)
class EpochRecord:
  """One epoch of a run, as every writer receives it.

  Attributes:
    epoch: the epoch just trained (1-based).
    epochs: the epoch the run trains to.
    ids: the member id of each position.
    train: per-position train metrics (``train_loss``, ``train_<metric>``).
    val: per-position validation metrics (``loss``, ``<metric>``).
    hparams: per position, the hyperparameters it trained with this epoch.
    fitness_name: the ranked validation metric.
    mode: its direction.
    generation: decisions made so far (PBT), or None.
    seconds: wall seconds of this epoch's training and validation.
    member_steps: member-steps trained this epoch.
    wall_s: the run's seconds so far, resumes included.
    note: the controller's words about its decision after this epoch.
  """

  epoch: int
  epochs: int
  ids: Sequence[int]
  train: Mapping[str, np.ndarray]
  val: Mapping[str, np.ndarray]
  hparams: Sequence[Mapping[str, Any]]
  fitness_name: str
  mode: str
  generation: int | None
  seconds: float
  member_steps: int
  wall_s: float
  note: str = ""

  @property
  def fitness(self) -> np.ndarray:
    return np.asarray(self.val[self.fitness_name], np.float64)

  @property
  def best_position(self) -> int:
    return fitness_lib.best(self.fitness, self.mode)


class Writer:
  """A sink of a run's results (every method is optional)."""

  def epoch(self, record: EpochRecord) -> None:
    """One epoch's results."""

  def events(self, epoch: int, events: Sequence[Mapping[str, Any]]) -> None:
    """A controller's changes after ``epoch`` (member ids, not positions)."""

  def finish(
    self, ids: Sequence[int], hparams: Sequence[Mapping[str, Any]], val: Mapping[str, np.ndarray]
  ) -> None:
    """The end of a run that trained to its last epoch: final hyperparameters and metrics."""

  def close(self) -> None:
    """Releases files and bars (also after an interrupted run)."""


def _jsonable(v):
  if isinstance(v, np.generic):
    return v.item()
  if isinstance(v, np.ndarray):
    return v.tolist()
  return str(v)


def dumps(row: Mapping[str, Any]) -> str:
  """One JSON line of a run's files (numpy values as plain numbers)."""
  return json.dumps(row, default=_jsonable)


def resumable_lines(path: str, last_epoch: int) -> list[str] | None:
  """The lines of a run's JSON-lines file that a resume at ``last_epoch`` keeps.

  Rows of later epochs (those of a run cut short) are dropped, and so is a
  torn last line (a writer killed mid-line): it is beyond the last checkpoint
  anyway. Nothing is written.

  Returns:
    The kept lines (each ending in a newline), or None when ``path`` is absent.

  Raises:
    ValueError: a bad line before the last one, naming the file and line, or
      a file that cannot be read and rewritten (naming it and why).
  """
  if not os.path.lexists(path):
    return None
  try:
    with open(path, "r+") as f:  # readable and writable, nothing truncated
      lines = f.readlines()
  except (OSError, UnicodeDecodeError) as e:
    why = getattr(e, "strerror", None) or f"not UTF-8 text: {e}"
    raise ValueError(f"{path}: cannot be read and rewritten to resume ({why})") from None
  rows = []
  for n, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
      epoch = int(row.get("epoch", 0))
    except (ValueError, TypeError, AttributeError):
      if n == len(lines):
        break  # torn by a kill during the write
      raise ValueError(
        f"{path}: line {n} is not a JSON record of an epoch; the run's log "
        "is damaged (restore it, or use a new --workdir)"
      ) from None
    if epoch <= last_epoch:
      rows.append(line if line.endswith("\n") else line + "\n")
  return rows


def resume_jsonl(path: str, last_epoch: int, lines: list[str] | None = None) -> None:
  """Drops the rows of epochs after ``last_epoch`` (see :func:`resumable_lines`).

  Args:
    path: the file (nothing happens when it is absent).
    last_epoch: the epoch of the checkpoint resumed from.
    lines: what :func:`resumable_lines` returned for it, when already read.

  Raises:
    ValueError: as :func:`resumable_lines`, or a file that cannot be
      rewritten (naming it and why).
  """
  if lines is None:
    lines = resumable_lines(path, last_epoch)
  if lines is None:
    return
  # A new file put in place in one step: a write that fails (a full disk, a
  # kill) leaves the old log whole, for the next relaunch to read again.
  tmp = path + ".resume.tmp"
  try:
    with open(tmp, "w") as f:
      f.writelines(lines)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except OSError as e:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise ValueError(f"{path}: cannot be rewritten to resume ({e.strerror})") from None


class _JsonLines(Writer):
  """An append-only JSON-lines file; a failed write names the file."""

  def __init__(self, path: str):
    self.path = path
    self._f = open(path, "a")

  def _write(self, rows: Sequence[Mapping[str, Any]]) -> None:
    try:
      self._f.write("".join(dumps(row) + "\n" for row in rows))
      self._f.flush()
    except OSError as e:  # e.g. a full disk: the error of a write names no file
      raise OSError(e.errno, e.strerror, self.path) from e

  def close(self) -> None:
    try:
      self._f.close()
    except OSError:
      pass  # what could not be flushed was reported by the write that failed


class MetricsFile(_JsonLines):
  """``metrics.jsonl``: per member per epoch, its metrics and the hyperparameters it trained with."""

  def epoch(self, record: EpochRecord) -> None:
    rows = []
    for i, member in enumerate(record.ids):
      rows.append(
        {
          "epoch": record.epoch,
          "member": int(member),
          **{k: float(v[i]) for k, v in record.train.items()},
          **{f"val_{k}": float(v[i]) for k, v in record.val.items()},
          "hparams": record.hparams[i],
          "wall_s": record.wall_s,
        }
      )
    self._write(rows)


class LineageFile(_JsonLines):
  """``lineage.jsonl``: every copy (PBT's exploit and explore) and every pruning."""

  def events(self, epoch: int, events: Sequence[Mapping[str, Any]]) -> None:
    if events:
      self._write([{"epoch": epoch, **event} for event in events])


def summary_writer_class():
  """tensorboardX's ``SummaryWriter``, imported without importing PyTorch.

  tensorboardX imports ``torch`` at import time when it is installed, only
  to accept torch tensors; hpjax writes Python floats. That import took
  1.2 s of a run on the 2-core CPU (docs/benchmarks.md). Unless ``torch``
  is already imported (then it costs nothing), ``import torch`` is made to
  fail while tensorboardX loads, and ``torch`` is importable again
  afterwards.
  """
  if "torch" in sys.modules or "tensorboardX" in sys.modules:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

    return SummaryWriter
  sys.modules["torch"] = None  # type: ignore[assignment]  # import torch -> ImportError
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  finally:
    del sys.modules["torch"]
  return SummaryWriter


class TensorBoard(Writer):
  """TensorBoard event files per member: ``train/*``, ``val/*``, ``hparams/*`` and the HParams entry.

  Args:
    directory: ``WORKDIR/tensorboard``; each member writes ``member_NNN/``.
    start_epoch: epochs already done (a resumed run purges later steps).
  """

  def __init__(self, directory: str, start_epoch: int = 0):
    self._dir = directory
    self._purge = start_epoch + 1 if start_epoch else None
    self._writers: dict[int, Any] = {}

  def _writer(self, member: int):
    w = self._writers.get(member)
    if w is None:
      w = summary_writer_class()(
        os.path.join(self._dir, f"member_{member:03d}"), purge_step=self._purge, flush_secs=30
      )
      self._writers[member] = w
    return w

  def epoch(self, record: EpochRecord) -> None:
    for i, member in enumerate(record.ids):
      w = self._writer(int(member))
      for k, v in record.train.items():
        w.add_scalar(f"train/{k.removeprefix('train_')}", float(v[i]), record.epoch)
      for k, v in record.val.items():
        w.add_scalar(f"val/{k}", float(v[i]), record.epoch)
      for k, v in record.hparams[i].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
          w.add_scalar(f"hparams/{k}", float(v), record.epoch)

  def finish(self, ids, hparams, val) -> None:
    for i, member in enumerate(ids):
      flat = {k: v for k, v in hparams[i].items() if isinstance(v, (bool, int, float, str))}
      values = {f"hparam/val_{k}": float(v[i]) for k, v in val.items()}
      self._writer(int(member)).add_hparams(flat, values, name="hparams")

  def close(self) -> None:
    for w in self._writers.values():
      w.close()
    self._writers = {}


def _fmt(v: Any) -> str:
  if isinstance(v, float):
    return f"{v:.3g}"
  return str(v)


def describe_hparams(hp: Mapping[str, Any], names: Sequence[str]) -> str:
  """``name value`` pairs of ``names`` found in ``hp``."""
  return "  ".join(f"{k} {_fmt(hp[k])}" for k in names if k in hp)


def generation_table(record: EpochRecord, shown: Sequence[str]) -> str:
  """The few lines printed after each generation (or epoch, without PBT)."""
  fitness = record.fitness
  finite = fitness[np.isfinite(fitness)]
  if finite.size:
    order = fitness_lib.rank(finite, record.mode)
    best, worst = finite[order[0]], finite[order[-1]]
    stats = f"best {best:.4f}  median {np.median(finite):.4f}  worst {worst:.4f}"
  else:
    stats = "no finite value"
  diverged = int(fitness.size - finite.size)
  head = f"epoch {record.epoch:3d}/{record.epochs}"
  if record.generation is not None:
    head += f"  generation {record.generation}"
  rate = record.member_steps / record.seconds if record.seconds > 0 else float("nan")
  head += f"  {record.seconds:.1f} s  {rate:.0f} member-steps/s"
  if record.note:
    head += f"  {record.note}"
  b = record.best_position
  lines = [
    head,
    f"  val {record.fitness_name}: {stats}" + (f"  ({diverged} diverged)" if diverged else ""),
    f"  best member {record.ids[b]}: {describe_hparams(record.hparams[b], shown)}",
  ]
  return "\n".join(lines)


class Console(Writer):
  """Progress bars with ETA and a short table per generation.

  Args:
    epochs: epochs the run trains to.
    start_epoch: epochs already done (a resumed run).
    interval: epochs per generation (PBT), 1 otherwise.
    shown: hyperparameter names for the table (the search space's).
    log: where the tables go (routed through tqdm while a bar is shown).
    progress: True/False, or None for "only on a terminal".
  """

  def __init__(
    self,
    *,
    epochs: int,
    start_epoch: int = 0,
    interval: int = 1,
    shown: Sequence[str] = (),
    log: Callable[[str], None] = print,
    progress: bool | None = None,
  ):
    self.epochs, self.interval = int(epochs), max(1, int(interval))
    self.shown = tuple(shown) or _DEFAULT_SHOWN
    self._log = log
    if progress is None:
      progress = sys.stdout.isatty()
    self._bars = []
    self._epoch_bar = None
    if progress and start_epoch < epochs:
      from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top

      self._tqdm = tqdm
      per_gen = self.interval > 1
      self._gen_bar = tqdm(
        total=math.ceil(self.epochs / self.interval),
        initial=start_epoch // self.interval,
        position=0,
        leave=True,
        desc="generations" if per_gen else "epochs",
        unit="gen" if per_gen else "epoch",
        dynamic_ncols=True,
      )
      self._bars.append(self._gen_bar)
      if per_gen:
        self._epoch_bar = tqdm(
          total=self.interval,
          initial=start_epoch % self.interval,
          position=1,
          leave=False,
          desc="epochs of this generation",
          unit="epoch",
          dynamic_ncols=True,
        )
        self._bars.append(self._epoch_bar)

  def print(self, text: str) -> None:
    """Prints above the bars (or plainly without them)."""
    if self._bars:
      for line in text.splitlines():
        self._tqdm.write(line)
    else:
      self._log(text)

  def epoch(self, record: EpochRecord) -> None:
    self.print(generation_table(record, self.shown))
    if not self._bars:
      return
    if self._epoch_bar is not None:
      self._epoch_bar.update(1)
    if record.epoch % self.interval == 0 or record.epoch == self.epochs:
      self._gen_bar.update(1)
      if self._epoch_bar is not None:
        self._epoch_bar.reset()
    best = record.fitness[record.best_position]
    self._gen_bar.set_postfix({f"best {record.fitness_name}": round(float(best), 4)}, refresh=True)

  def close(self) -> None:
    for b in reversed(self._bars):
      b.close()
    self._bars = []

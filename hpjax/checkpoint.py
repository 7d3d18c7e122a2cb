"""Checkpoints of whole populations, written with orbax's ``CheckpointManager``.

This is the only module of hpjax that imports orbax. A checkpoint is one step
directory ``DIR/<step>`` holding three orbax items, committed together:

* ``states``: every group's :class:`hpjax.population.PopulationState` as a
  dict ``{'group_0': {leaf_name: array}, ...}`` (``StandardSave``). Leaves
  are named by their pytree path (``params.Dense_0.kernel``,
  ``opt_state.inner_state.0.mu.Dense_0.kernel`` ...) and the restored pytree
  takes its structure from the caller's templates, so NamedTuples, empty
  optimizer states and flax dataclasses never have to pass through orbax.
* ``extra``: the caller's JSON-serialisable dict (controller state, counters,
  history, numpy RNG state ...) (``JsonSave``).
* ``manifest``: per group the leaf names, shapes, dtypes and a BLAKE2b digest
  of the bytes, plus the tracked metric (``JsonSave``). The digest lets
  :meth:`Checkpointer.restore` tell a damaged checkpoint from a good one even
  where the storage layer would silently read a missing chunk as zeros.

Atomicity: orbax writes a step into a temporary directory and renames it into
place only once every item is committed, and it lists only committed steps.
A process killed mid-save (even ``kill -9``) therefore leaves the previous
checkpoints intact; the stale temporary directory is removed the next time a
:class:`Checkpointer` opens the directory.

Saves are asynchronous. :meth:`Checkpointer.save` first copies every leaf to
host memory (a fresh numpy copy) and only then hands the copies to orbax, so
the caller may donate or overwrite its device buffers as soon as ``save``
returns. Orbax 0.12 also finishes its own device-to-host transfer before
``save`` returns, but on CPU that "transfer" is a zero-copy view of the
device buffer, held until the background write ends; while it is held JAX
silently skips the caller's buffer donation (an extra copy per epoch). Our
copy keeps donation working and does not depend on orbax's internals.

Failures: a save that cannot be written (read-only directory, full disk,
file-size limit) raises one :class:`CheckpointError` naming the file, from
:meth:`Checkpointer.save` or, for the asynchronous part, from the next
:meth:`Checkpointer.save` / :meth:`Checkpointer.wait` / :meth:`Checkpointer.close`;
the checkpoints saved before are untouched, no orbax thread is left waiting,
and orbax's own tracebacks of the failure are held back (logged at DEBUG).

Several processes (:mod:`hpjax.distributed`): every process calls
:meth:`Checkpointer.save` and :meth:`Checkpointer.restore` with the same
arguments, on a directory they share. Arrays split over processes are
gathered to every process first (the manifest digest needs every byte), and
orbax writes host arrays from process 0 only. A checkpoint holds whole host
arrays, so it restores on any number of devices and processes.

Example::

  with Checkpointer(os.path.join(workdir, "checkpoints"), keep=3) as ckpt:
    for gen in range(1, generations + 1):
      ...
      if ckpt.should_save(gen) or gen == generations:
        ckpt.save(gen, [g.state for g in pop.groups], {"generation": gen},
                  metric=best_val, force=True)
  # Later, relaunched:
  step, states, extra = Checkpointer(dir).restore([g.state for g in pop.groups])
"""

from __future__ import annotations

import atexit
from collections.abc import Iterable, Mapping, Sequence
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import sys
import threading
import time
from typing import Any
import weakref

import jax
import numpy as np
import orbax.checkpoint as ocp

logger = logging.getLogger(__name__)

# Bumped when the layout of the ``states`` / ``manifest`` items changes.
FORMAT_VERSION = 1
_STATES, _EXTRA, _MANIFEST = "states", "extra", "manifest"


class CheckpointError(RuntimeError):
  """A checkpoint could not be saved, found or read."""


class _StructureError(CheckpointError):
  """The checkpoint is readable but does not fit the templates."""


# ---------------------------------------------------------------------------
# Flattening states to named host arrays.


def _key_name(entry) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def _named_leaves(tree, group: str) -> tuple[list[str], list[Any]]:
  """Leaf names (dotted pytree paths) and leaves, in pytree order."""
  with_path = jax.tree_util.tree_flatten_with_path(tree)[0]
  names = [".".join(_key_name(k) for k in path) for path, _ in with_path]
  if len(set(names)) != len(names):
    dup = sorted({n for n in names if names.count(n) > 1})[0]
    raise CheckpointError(f"{group}: two leaves share the path name {dup!r}")
  return names, [leaf for _, leaf in with_path]


def _digest(names: Sequence[str], arrays: Sequence[np.ndarray]) -> str:
  h = hashlib.blake2b(digest_size=16)
  for name, a in zip(names, arrays):
    h.update(f"{name}|{a.dtype.str}|{a.shape};".encode())
    # A byte view works for every dtype (bfloat16 has no buffer format).
    h.update(np.ascontiguousarray(a).reshape(-1).view(np.uint8).data)
  return h.hexdigest()


def _json_extra(extra: Any) -> dict[str, Any]:
  """``extra`` as it will come back from the checkpoint (a JSON round trip)."""
  extra = {} if extra is None else extra
  if not isinstance(extra, Mapping):
    raise CheckpointError(f"extra: must be a dict, got {type(extra).__name__}")
  try:
    return json.loads(json.dumps(dict(extra)))
  except (TypeError, ValueError) as e:
    raise CheckpointError(f"extra: not JSON-serialisable ({e})") from e


def _checkpoint_metric(metric: Any) -> float | None:
  """A checkpoint's metric as a float; None when absent or not finite (never the best)."""
  if metric is None:
    return None
  try:
    metric = float(metric)
  except (TypeError, ValueError) as e:
    raise CheckpointError(f"metric: must be a number or None, got {metric!r}") from e
  return metric if math.isfinite(metric) else None


def _host_groups(states: Sequence[Any]) -> tuple[dict[str, dict], list[dict]]:
  """Every group state's leaves in host memory by name, and the manifest's entry of each."""
  groups, manifest_groups = {}, []
  for i, state in enumerate(states):
    name = f"group_{i}"
    names, leaves = _named_leaves(state, name)
    host = _to_host(leaves)
    groups[name] = dict(zip(names, host))
    manifest_groups.append(
      {
        "name": name,
        "leaves": [[n, list(a.shape), a.dtype.name] for n, a in zip(names, host)],
        "digest": _digest(names, host),
      }
    )
  if not groups:
    raise CheckpointError("states: need at least one group state")
  return groups, manifest_groups


def _to_host(leaves: Sequence[Any]) -> list[np.ndarray]:
  # device_get starts all transfers before waiting on any; np.array then
  # makes a copy the caller's later donation cannot touch (see module doc).
  leaves = list(leaves)
  if any(
    isinstance(a, jax.Array) and not (a.is_fully_addressable or a.is_fully_replicated)
    for a in leaves
  ):
    # Split over several processes (every process calls save): each gathers
    # the whole value; orbax writes host arrays from process 0 only.
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    leaves = multihost_utils.process_allgather(leaves, tiled=True)
  return [np.array(a, copy=True) for a in jax.device_get(leaves)]


def _place(arrays: list[np.ndarray], templates: Sequence[Any]) -> list[Any]:
  """Puts restored host arrays where the template leaves are.

  A numpy template leaf stays numpy; a committed ``jax.Array`` (or a
  ``ShapeDtypeStruct`` with a sharding) gets that sharding; an uncommitted
  one, like the outputs of a jitted init, gets an uncommitted array on the
  default device: committed and uncommitted arguments are different cache
  keys for ``jit``, so matching them avoids recompiling the train step.
  """
  out: list[Any] = list(arrays)
  free, pinned, shardings = [], [], []
  for i, leaf in enumerate(templates):
    if isinstance(leaf, np.ndarray):
      continue
    sharding = getattr(leaf, "sharding", None)
    if isinstance(leaf, jax.Array) and not leaf.committed:
      sharding = None
    if sharding is None:
      free.append(i)
    else:
      pinned.append(i)
      shardings.append(sharding)
  # One device_put per kind: the transfers run concurrently.
  if free:
    for i, a in zip(free, jax.device_put([arrays[i] for i in free])):
      out[i] = a
  if pinned:
    for i, a in zip(pinned, jax.device_put([arrays[i] for i in pinned], shardings)):
      out[i] = a
  return out


# ---------------------------------------------------------------------------
# Which steps survive.


class _LatestAndBest:
  """Orbax preservation policy: the latest ``keep`` steps and the best one.

  Orbax's own ``BestN`` ranks by ``best_fn`` metrics that the manager reads
  back from every step when it opens a directory, and a damaged metrics file
  makes that constructor fail. This policy takes the metric from our
  manifest instead and treats an unreadable one as absent.
  """

  def __init__(self, keep: int, keep_best: bool, best_mode: str, metrics: dict[int, float]):
    self.keep = keep
    self.keep_best = keep_best
    self.best_mode = best_mode
    self.metrics = metrics  # step -> finite metric; shared with Checkpointer

  def best_step(self, steps: Iterable[int]) -> int | None:
    best = None
    for s in sorted(steps):
      m = self.metrics.get(s)
      if m is None:
        continue
      # Strict comparison: the earliest step to reach the best value wins.
      if best is None or (
        m > self.metrics[best] if self.best_mode == "max" else m < self.metrics[best]
      ):
        best = s
    return best

  def should_preserve(self, checkpoints, *, context=None) -> list[bool]:
    del context
    steps = [c.step for c in checkpoints]
    kept = set(sorted(steps)[-self.keep :])
    if self.keep_best:
      best = self.best_step(steps)
      if best is not None:
        kept.add(best)
    return [s in kept for s in steps]


# ---------------------------------------------------------------------------
# The checkpointer.


def _check_step(step, name: str = "step") -> int:
  if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
    raise CheckpointError(f"{name}: must be a non-negative integer, got {step!r}")
  return int(step)


# Tensorstore wraps an OS error in a line of context, e.g. 'OUT_OF_RANGE: Error
# writing "group_0.w/0" in OCDBT database at local file "DIR/": Failed
# writing: "DIR/d/0a1b...": Failed to write 2104 bytes to file 19: File too
# large [os_error_code='27']'; cut to the limit, it loses the two parts a
# user needs: which file and what the system said.
_TS_OS_ERROR = re.compile(r"\[os_error_code='?(\d+)'?\]")
_TS_PATH = re.compile(r'"(/[^"]+)"')


def _first_line(exc: BaseException, limit: int = 240) -> str:
  """``Type: first line`` of an error, short enough for a one-line log.

  An OS error reported by tensorstore becomes ``Type: [Errno N] reason:
  'file'``, like Python's own OSError.
  """
  text = str(exc).strip().splitlines()
  text = text[0] if text else ""
  # Tensorstore appends its whole JSON spec to every message.
  text = text.split(" [tensorstore_spec=")[0]
  code, paths = _TS_OS_ERROR.search(text), _TS_PATH.findall(text)
  if code and paths:
    errno_ = int(code.group(1))
    return f"{type(exc).__name__}: [Errno {errno_}] {os.strerror(errno_)}: {paths[-1]!r}"
  if len(text) > limit:
    text = text[:limit] + "..."
  return f"{type(exc).__name__}: {text}".rstrip(": ")


class _ClosedLoopErrors:
  """Drops the stray errors a failed orbax read or write leaves behind.

  Orbax runs all reads (or writes) of an item in one ``asyncio.gather`` on a
  fresh event loop and closes the loop as soon as one fails; the others
  still in flight then complete on tensorstore threads and report
  ``RuntimeError('Event loop is closed')`` through ``sys.unraisablehook``,
  one traceback per array. They carry no information beyond the error we
  report, so while a restore or a save is in flight we drop exactly those
  and pass everything else on. Shared by every user (a count): the hook is
  process-wide.
  """

  def __init__(self):
    self._lock = threading.Lock()
    self._users = 0
    self._previous = None

    def hook(unraisable):
      exc = unraisable.exc_value
      if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
        return
      (self._previous or sys.__unraisablehook__)(unraisable)

    self._hook = hook

  def acquire(self) -> None:
    with self._lock:
      if self._users == 0:
        self._previous = sys.unraisablehook
        sys.unraisablehook = self._hook
      self._users += 1

  def release(self) -> None:
    with self._lock:
      self._users -= 1
      if self._users == 0 and sys.unraisablehook is self._hook:
        sys.unraisablehook = self._previous


_CLOSED_LOOP_ERRORS = _ClosedLoopErrors()
# How long stray callbacks of a failed operation get to arrive while they
# are still dropped (they come within milliseconds of the failure).
_SETTLE_S = 0.1


@contextlib.contextmanager
def _quiet_closed_loop_callbacks():
  """Drops the closed-loop errors of failed reads while restoring."""
  failures: list[int] = []  # the caller appends the steps it failed to read
  _CLOSED_LOOP_ERRORS.acquire()
  try:
    yield failures
  finally:
    if failures:
      time.sleep(_SETTLE_S)  # let the stray local reads finish while we listen
    _CLOSED_LOOP_ERRORS.release()


_ORBAX_DIR = os.path.dirname(os.path.abspath(ocp.__file__)) + os.sep
# What asyncio says of a task or future that failed with nobody awaiting it,
# and the suffix of the directories orbax writes a checkpoint into.
_NEVER_RETRIEVED = ("Task exception was never retrieved", "Future exception was never retrieved")
_ORBAX_TMP = ".orbax-checkpoint-tmp"


class _SaveErrorLog(logging.Filter):
  """Holds back orbax's own reports of a failing save, for one save at a time.

  Orbax logs a failed write once per thread it passes through (the item's
  writer, the metadata writer, the background save thread, the manager's
  wait), each as an ERROR with the full traceback, and the writes still in
  flight add a closed-loop error each (:class:`_ClosedLoopErrors`): about
  470 lines for one file-size limit. The failure reaches the caller as one
  :class:`CheckpointError`, so while a save is in flight (:meth:`hold` to
  :meth:`release`) orbax's ERROR records are held back here. Released after
  a failure, they go to this module's logger at DEBUG, traceback included;
  after a save that did commit (orbax logged an error it then got over),
  each becomes one WARNING line.
  """

  def __init__(self):
    super().__init__()
    self._held: list[logging.LogRecord] = []
    self._holding = False

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno >= logging.ERROR and record.pathname.startswith(_ORBAX_DIR):
      self._held.append(record)
      return False
    return True

  def first(self) -> str | None:
    """The first held error in one line, or None."""
    if not self._held:
      return None
    record = self._held[0]
    if record.exc_info and record.exc_info[1] is not None:
      return _first_line(record.exc_info[1])
    return record.getMessage().strip().splitlines()[0][:240]

  def hold(self) -> None:
    if not self._holding:
      # Orbax logs through absl, whose records all come from this logger.
      logging.getLogger("absl").addFilter(self)
      _CLOSED_LOOP_ERRORS.acquire()
      self._holding = True

  def release(self, failed: bool) -> None:
    if not self._holding:
      return
    if failed:
      time.sleep(_SETTLE_S)  # stray callbacks of the failed writes land now
    logging.getLogger("absl").removeFilter(self)
    _CLOSED_LOOP_ERRORS.release()
    self._holding = False
    held, self._held = self._held, []
    for record in held:
      if failed:
        logger.debug("orbax: %s", record.getMessage(), exc_info=record.exc_info)
      else:
        logger.warning(
          "orbax reported an error during a save that completed: %s",
          record.getMessage().strip().splitlines()[0][:240],
        )


class _AbandonedOrbaxTasks(logging.Filter):
  """Drops asyncio's report of an orbax write whose failure nobody retrieved.

  When one write of a save fails, orbax abandons the item's other writes
  (its tasks, and tensorstore's futures under them); one that failed too is
  reported by asyncio ("Task exception was never retrieved" or "Future
  exception was never retrieved", with a traceback) whenever the garbage
  collector reaches it: during the save, or seconds later at exit. The
  save's failure reaches the caller as one :class:`CheckpointError` (the
  launcher prints one line), so these reports are logged at DEBUG here
  instead. Only reports that name orbax's code or an orbax temporary
  checkpoint directory are affected.
  """

  def filter(self, record: logging.LogRecord) -> bool:
    text = record.getMessage()
    if text.startswith(_NEVER_RETRIEVED) and (_ORBAX_DIR in text or _ORBAX_TMP in text):
      logger.debug("orbax: %s", text.splitlines()[0], exc_info=record.exc_info)
      return False
    return True


logging.getLogger("asyncio").addFilter(_AbandonedOrbaxTasks())


class Checkpointer:
  """Saves and restores whole populations under WORKDIR/checkpoints with orbax's CheckpointManager.

  Keeps the newest ``keep`` checkpoints and, with ``keep_best``, also the one
  with the best ``metric`` passed to :meth:`save`. Use it as a context
  manager, or call :meth:`close`: that waits for the last asynchronous save
  and stops orbax's background threads, so the process can exit.

  Args:
    directory: where step directories are written (created if missing).
    keep: how many of the newest checkpoints to keep (>= 1).
    every: :meth:`should_save` is true every ``every`` steps.
    keep_best: also keep the checkpoint with the best metric.
    best_mode: ``max`` or ``min``: which metric value is best.
  """

  def __init__(
    self,
    directory: str,
    *,
    keep: int = 3,
    every: int = 1,
    keep_best: bool = True,
    best_mode: str = "max",
  ):
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
      raise CheckpointError(f"keep: must be an integer >= 1, got {keep!r}")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
      raise CheckpointError(f"every: must be an integer >= 1, got {every!r}")
    if best_mode not in ("max", "min"):
      raise CheckpointError(f"best_mode: must be 'max' or 'min', got {best_mode!r}")
    self.directory = os.path.abspath(os.fspath(directory))
    self.keep, self.every = keep, every
    self.keep_best, self.best_mode = bool(keep_best), best_mode
    self._metrics: dict[int, float] = {}
    self._policy = _LatestAndBest(keep, self.keep_best, best_mode, self._metrics)
    options = ocp.CheckpointManagerOptions(
      # We decide when to save (should_save) and always pass force=True.
      save_interval_steps=1,
      preservation_policy=self._policy,
      enable_async_checkpointing=True,
      # Orbax's default creates the step directory in a background thread
      # while the item writers, each a non-daemon thread, wait for its
      # "created" signal. A failed creation (read-only directory) never
      # sends it: the writers wait out orbax's fixed 300 s signal timeout,
      # which nothing configures or cancels, and keep the process alive
      # that long. Created here, before save returns, a failure raises
      # from save at once and no thread is started. It costs a few mkdir
      # calls of blocking time per save.
      async_options=ocp.AsyncOptions(create_directories_asynchronously=False),
      # Temporary directories of a save killed mid-way are removed here.
      cleanup_tmp_directories=True,
      create=True,
    )
    try:
      self._mngr = ocp.CheckpointManager(self.directory, options=options)
    except Exception as e:
      raise CheckpointError(
        f"cannot open checkpoint directory {self.directory}: {_first_line(e)}"
      ) from e
    self._closed = False
    self._pending: int | None = None  # step of a save that may still be writing
    self._save_errors = _SaveErrorLog()
    self._last_saved: int | None = None
    if self.keep_best:
      for s in self._mngr.all_steps():
        m = self._read_manifest(s, quiet=True)
        if m is not None and m.get("metric") is not None:
          self._metrics[s] = float(m["metric"])
    # Orbax removes stale temporary directories in the background; wait for
    # it, or a process that exits right away races the removal.
    getattr(self._mngr, "_maybe_await_cleanup_tmp_directory", lambda: None)()
    # If the caller forgets close(), still finish the last save at exit. Not
    # atexit: by then the thread pools orbax writes with are shut down and
    # the save fails; threading's hooks run before that (and before the
    # non-daemon threads are joined). A weak reference: the hook must not
    # keep the object alive.
    ref = weakref.ref(self)

    def _close_at_exit():
      obj = ref()
      if obj is not None:
        obj.close()

    register = getattr(threading, "_register_atexit", atexit.register)
    try:
      register(_close_at_exit)
    except RuntimeError:  # created while the interpreter shuts down
      pass

  # -- context manager --------------------------------------------------------

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def _check_open(self) -> None:
    if self._closed:
      raise CheckpointError(f"checkpointer for {self.directory} is closed")

  # -- steps ------------------------------------------------------------------

  def should_save(self, step: int) -> bool:
    """Whether ``step`` is on the ``every`` schedule.

    Args:
      step: the generation (epoch) counter, >= 1.

    Returns:
      True when ``step`` is a positive multiple of ``every``. For a final step
      off the schedule, call :meth:`save` with ``force=True``.
    """
    step = _check_step(step)
    return step >= 1 and step % self.every == 0

  def latest_step(self) -> int | None:
    """The newest saved step (readable or not), or None when there is none."""
    steps = self.all_steps()
    return steps[-1] if steps else None

  def all_steps(self) -> list[int]:
    """All saved steps, oldest first (including one still being written)."""
    self._check_open()
    return sorted(int(s) for s in self._mngr.all_steps())

  def best_step(self) -> int | None:
    """The kept step with the best metric (None without metrics)."""
    return self._policy.best_step(self.all_steps())

  # -- saving -----------------------------------------------------------------

  def save(
    self,
    step: int,
    states: Sequence[Any],
    extra: Mapping[str, Any] | None = None,
    *,
    metric: float | None = None,
    force: bool = False,
  ) -> bool:
    """Saves the population's group states and ``extra`` as checkpoint ``step``.

    The states are copied to host memory before this returns, so the caller
    may donate them right away; the write to disk continues in the
    background (:meth:`wait`). Saving a step at or below existing steps
    replaces them: after a restore from an older step, the newer ones belong
    to an abandoned run. Saving the step just saved again does nothing.

    Args:
      step: the generation counter (non-negative integer).
      states: one state pytree per group (e.g. ``[g.state for g in pop.groups]``).
      extra: a JSON-serialisable dict restored verbatim (tuples come back as
        lists, keys must be strings).
      metric: the quality of this checkpoint for ``keep_best`` (None or a
        non-finite value: never the best).
      force: save even when :meth:`should_save` is false.

    Returns:
      Whether a checkpoint was written.

    Raises:
      CheckpointError: bad arguments, ``extra`` not JSON, a failed write of
        the previous save, or this save could not start (e.g. its directory
        cannot be created).
    """
    self._check_open()
    step = _check_step(step)
    if not force and not self.should_save(step):
      return False
    if step == self._last_saved:
      return False
    extra = _json_extra(extra)
    metric = _checkpoint_metric(metric)
    groups, manifest_groups = _host_groups(states)
    manifest = {"format": FORMAT_VERSION, "step": step, "metric": metric, "groups": manifest_groups}
    # Waits for the previous save, so that its failure surfaces here.
    self.wait()
    self._drop_steps_from(step)
    if metric is not None:
      self._metrics[step] = metric
    self._write(step, groups, extra, manifest)
    self._pending = step
    self._last_saved = step
    # Steps the policy dropped no longer need their metric.
    kept = set(self._mngr.all_steps())
    for s in [s for s in self._metrics if s not in kept]:
      del self._metrics[s]
    return True

  def _drop_steps_from(self, step: int) -> None:
    """Deletes the saved steps at or after ``step``: they belong to an abandoned run."""
    stale = [s for s in self.all_steps() if s >= step]
    if stale:
      logger.warning(
        "checkpoint: replacing steps %s at or after step %d in %s",
        ", ".join(map(str, stale)),
        step,
        self.directory,
      )
      for s in stale:
        self._mngr.delete(s)
        self._metrics.pop(s, None)

  def _write(self, step: int, groups: dict, extra: dict, manifest: dict) -> None:
    """Starts the asynchronous write of checkpoint ``step`` (:meth:`wait` collects its outcome)."""
    self._save_errors.hold()  # released by wait()
    try:
      self._mngr.save(
        step,
        args=ocp.args.Composite(
          **{
            _STATES: ocp.args.StandardSave(groups),
            _EXTRA: ocp.args.JsonSave(extra),
            _MANIFEST: ocp.args.JsonSave(manifest),
          }
        ),
        force=True,
      )
    except Exception as e:
      self._metrics.pop(step, None)
      self._save_errors.release(failed=True)
      raise CheckpointError(
        f"saving step {step} to {self.directory} failed: {_first_line(e)}"
      ) from e

  def wait(self) -> None:
    """Blocks until the last asynchronous save is on disk.

    Raises:
      CheckpointError: that save failed; the message names the file and the
        problem (orbax's own tracebacks of it go to this module's logger at
        DEBUG).
    """
    if self._closed:
      return
    step, self._pending = self._pending, None
    failed = True
    try:
      try:
        self._mngr.wait_until_finished()
        self._mngr.check_for_errors()
      except Exception as e:
        raise CheckpointError(
          f"saving step {step} to {self.directory} failed: {_first_line(e)}"
        ) from e
      # Orbax skips the commit of a failed write but keeps listing the step.
      if step is not None and not os.path.isdir(os.path.join(self.directory, str(step))):
        self._mngr.reload()
        raise CheckpointError(
          f"saving step {step} to {self.directory} failed: "
          f"{self._save_errors.first() or 'the step was not committed'}"
        )
      failed = False
    finally:
      self._save_errors.release(failed)

  def close(self) -> None:
    """Waits for the last save and closes the orbax manager (idempotent)."""
    if self._closed:
      return
    try:
      self.wait()
    finally:
      self._closed = True
      self._mngr.close()

  # -- restoring --------------------------------------------------------------

  def _read_manifest(self, step: int, quiet: bool = False) -> dict | None:
    try:
      out = self._mngr.restore(
        step, args=ocp.args.Composite(**{_MANIFEST: ocp.args.JsonRestore()})
      )[_MANIFEST]
    except Exception:
      if quiet:
        return None
      raise
    return out if isinstance(out, dict) else None

  def _load(self, step: int, templates):
    """Reads and verifies one step; raises _StructureError or other errors."""
    if callable(templates):
      # The templates depend on what was saved (e.g. a population compacted
      # by successive halving): read the extra dict first.
      extra = self._mngr.restore(step, args=ocp.args.Composite(**{_EXTRA: ocp.args.JsonRestore()}))[
        _EXTRA
      ]
      if not isinstance(extra, dict):
        raise ValueError("extra is not a JSON object")
      templates = list(templates(extra))
    manifest = self._read_manifest(step)
    if manifest is None:
      raise ValueError("manifest is not a JSON object")
    if manifest.get("format") != FORMAT_VERSION:
      raise _StructureError(
        f"checkpoint step {step}: format {manifest.get('format')!r}, "
        f"this hpjax reads format {FORMAT_VERSION}"
      )
    groups = manifest["groups"]
    if len(groups) != len(templates):
      raise _StructureError(
        f"checkpoint step {step}: {len(groups)} groups saved, {len(templates)} templates given"
      )
    plans = []
    for g, template in zip(groups, templates):
      names, leaves = _named_leaves(template, g["name"])
      saved = {n: (tuple(s), d) for n, s, d in g["leaves"]}
      if set(saved) != set(names):
        diff = sorted(set(saved) ^ set(names))
        raise _StructureError(
          f"checkpoint step {step}: {g['name']} leaves differ from the "
          f"template: {', '.join(diff[:3])}"
        )
      for n, leaf in zip(names, leaves):
        want = (tuple(np.shape(leaf)), np.dtype(leaf.dtype).name)
        if saved[n] != want:
          raise _StructureError(
            f"checkpoint step {step}: {g['name']} leaf {n} is "
            f"{saved[n][1]}{list(saved[n][0])}, template "
            f"{want[1]}{list(want[0])}"
          )
      plans.append((g, names, leaves))

    restored = self._mngr.restore(
      step,
      args=ocp.args.Composite(
        **{
          _STATES: ocp.args.StandardRestore(),
          _EXTRA: ocp.args.JsonRestore(),
        }
      ),
    )
    data, extra = restored[_STATES], restored[_EXTRA]
    if not isinstance(extra, dict):
      raise ValueError("extra is not a JSON object")
    out = []
    for (g, names, leaves), template in zip(plans, templates):
      arrays = [np.asarray(data[g["name"]][n]) for n in names]
      # The digest covers names, shapes and dtypes as well as the bytes.
      if _digest(names, arrays) != g["digest"]:
        raise ValueError(f"{g['name']} data does not match its digest")
      placed = _place(arrays, leaves)
      out.append(jax.tree.unflatten(jax.tree.structure(template), placed))
    return out, extra

  def restore(self, templates, step: int | None = None) -> tuple[int, list[Any], dict]:
    """Restores group states and the ``extra`` dict.

    Args:
      templates: one state per group with the saved structure, shapes and
        dtypes (e.g. freshly initialised groups, or ``jax.eval_shape``
        output); each leaf is placed like its template (same sharding and
        committed-ness, so the jitted train step does not recompile; numpy
        leaves stay numpy). May also be a function of the step's ``extra``
        dict returning the templates, for states whose shapes the extra
        dict determines.
      step: the step to restore; None: the newest readable one. A damaged
        newest checkpoint (missing or truncated file, bad digest) is reported
        with a warning and the previous one is tried.

    Returns:
      ``(step, states, extra)``: the states have the templates' pytree
      structure and dtypes and the saved values bit for bit.

    Raises:
      CheckpointError: no checkpoint, no readable one, the requested step is
        missing or damaged, or the checkpoint does not fit the templates.
    """
    self._check_open()
    self.wait()
    if not callable(templates):
      templates = list(templates)
    steps = self.all_steps()
    if not steps:
      raise CheckpointError(f"no checkpoint to restore in {self.directory}")
    if step is not None:
      step = _check_step(step)
      if step not in steps:
        raise CheckpointError(
          f"no checkpoint for step {step} in {self.directory} (steps: {', '.join(map(str, steps))})"
        )
      candidates = [step]
    else:
      candidates = steps[::-1]
    with _quiet_closed_loop_callbacks() as damaged:
      for s in candidates:
        try:
          states, extra = self._load(s, templates)
        except _StructureError:
          raise
        except Exception as e:
          # Orbax / tensorstore / json raise many types for unreadable files.
          problem = _first_line(e)
          damaged.append(s)
          if step is not None:
            raise CheckpointError(
              f"checkpoint step {s} in {self.directory} is unreadable: {problem}"
            ) from e
          logger.warning(
            "checkpoint step %d in %s is unreadable (%s); trying an older one",
            s,
            self.directory,
            problem,
          )
          continue
        self._last_saved = None
        return s, states, extra
    raise CheckpointError(
      f"no readable checkpoint in {self.directory}: steps "
      f"{', '.join(map(str, damaged))} are damaged"
    )


# ---------------------------------------------------------------------------
# Config fingerprints.


def _canonical(value, path: str = "config"):
  """JSON-ready canonical form: dicts, lists, str, bool, int, float, None."""
  if isinstance(value, Mapping):
    out = {}
    for k, v in value.items():
      if not isinstance(k, str):
        raise ValueError(f"{path}: keys must be strings, got {k!r}")
      out[k] = _canonical(v, f"{path}.{k}")
    return out
  if isinstance(value, (list, tuple)):
    return [_canonical(v, f"{path}[{i}]") for i, v in enumerate(value)]
  if isinstance(value, np.ndarray):
    return _canonical(value.tolist(), path)
  if isinstance(value, np.generic):
    value = value.item()
  if value is None or isinstance(value, (str, bool)):
    return value
  if isinstance(value, int):
    return value
  if isinstance(value, float):
    # 1 and 1.0 are the same setting (one config from code, one from JSON).
    return int(value) if value.is_integer() else value
  raise ValueError(f"{path}: not JSON-serialisable ({type(value).__name__})")


def _encode(value) -> str:
  return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _drop(config: Mapping, ignore: Iterable[str], prefix: str = "") -> dict:
  ignore = set(ignore)
  out = {}
  for k, v in config.items():
    path = prefix + k
    if path in ignore:
      continue
    out[k] = _drop(v, ignore, path + ".") if isinstance(v, dict) else v
  return out


def fingerprint(config: Mapping[str, Any], ignore: Iterable[str] = ("epochs",)) -> str:
  """A stable hash of a JSON-able config, to refuse incompatible relaunches.

  Independent of dict key order; ``1`` and ``1.0``, tuples and lists hash
  alike. Two configs have the same fingerprint exactly when
  :func:`diff_configs` finds no difference (with the same ``ignore``).

  Args:
    config: nested dicts of JSON values (numpy scalars and arrays allowed).
    ignore: dotted field paths left out (default: the top-level ``epochs``,
      which a relaunch may extend).

  Returns:
    A 32-character hex digest.

  Raises:
    ValueError: a value or key that JSON cannot hold.
  """
  canon = _drop(_canonical(config), ignore)
  return hashlib.sha256(_encode(canon).encode()).hexdigest()[:32]


def diff_configs(
  old: Mapping[str, Any], new: Mapping[str, Any], ignore: Iterable[str] = ("epochs",)
) -> list[str]:
  """The dotted names of the fields that differ between two configs.

  Nested dicts are compared field by field; any other values (lists
  included) as a whole, after the canonicalisation of :func:`fingerprint`.

  Args:
    old: the config a run was started with.
    new: the config of the relaunch.
    ignore: dotted field paths not compared (default: top-level ``epochs``).

  Returns:
    Sorted dotted paths (e.g. ``['population', 'space.learning_rate.hi']``);
    a field present on one side only counts as differing.
  """
  ignore = set(ignore)
  out: list[str] = []

  def walk(a, b, prefix):
    for k in sorted(set(a) | set(b)):
      path = prefix + k
      if path in ignore:
        continue
      if k not in a or k not in b:
        out.append(path)
      elif isinstance(a[k], dict) and isinstance(b[k], dict):
        walk(a[k], b[k], path + ".")
      elif _encode(a[k]) != _encode(b[k]):
        out.append(path)

  walk(_canonical(old, "old"), _canonical(new, "new"), "")
  return out


def save_model(directory: str, params: Any, batch_stats: Any, meta: Mapping[str, Any]) -> str:
  """Writes one model (parameters, batch statistics, metadata) with orbax.

  The layout is ``DIRECTORY/state`` (an orbax ``StandardCheckpointer`` tree
  of host arrays) and ``DIRECTORY/model.json`` (``meta``: hyperparameters,
  metrics). An existing export in ``DIRECTORY`` is replaced.

  Args:
    directory: the export directory (created).
    params: one member's parameters (no population axis).
    batch_stats: its batch statistics (``{}`` without BatchNorm).
    meta: JSON-serialisable description.

  Returns:
    The absolute directory.
  """
  directory = os.path.abspath(os.fspath(directory))
  os.makedirs(directory, exist_ok=True)
  tree = {
    "params": jax.tree.map(np.asarray, params),
    "batch_stats": jax.tree.map(np.asarray, batch_stats),
  }
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.join(directory, "state"), tree, force=True)
    ckptr.wait_until_finished()
  if jax.process_index() == 0:  # several processes: all save the state, one writes the json
    with open(os.path.join(directory, "model.json"), "w") as f:
      json.dump(meta, f, indent=2, default=lambda v: v.item() if hasattr(v, "item") else str(v))
  return directory


def load_model(directory: str) -> tuple[Any, Any, dict[str, Any]]:
  """Reads what :func:`save_model` wrote: ``(params, batch_stats, meta)``.

  Raises:
    CheckpointError: the directory holds no export, or it cannot be read.
  """
  directory = os.path.abspath(os.fspath(directory))
  meta_path = os.path.join(directory, "model.json")
  if not os.path.exists(meta_path) or not os.path.isdir(os.path.join(directory, "state")):
    raise CheckpointError(f"{directory}: no exported model (expected model.json and state/)")
  try:
    with open(meta_path) as f:
      meta = json.load(f)
    with ocp.StandardCheckpointer() as ckptr:
      tree = ckptr.restore(os.path.join(directory, "state"))
  except Exception as e:
    raise CheckpointError(f"{directory}: cannot read the exported model: {_first_line(e)}") from e
  return tree["params"], tree.get("batch_stats", {}), meta

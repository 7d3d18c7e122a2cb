"""Failed checkpoint saves: one clear line, a prompt non-zero exit, the last good checkpoint intact.

A save can fail because the disk refuses a write: a checkpoint directory
made read-only (``chmod -R a-w``), a file-size limit (``ulimit -f``), a full
disk. Whatever the cause, the run must end within seconds with one
``error:`` line that names the file and the problem, no traceback, exit
status 1, and the checkpoints saved before left as they were, so that a
relaunch resumes from the newest of them.

The faults are injected into real subprocesses (the launcher, or a short
script using :class:`hpjax.checkpoint.Checkpointer`), because the defects
show at process level: threads that keep the process alive, and what
reaches stderr.
"""

import asyncio
import gc
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "experiments", "configs", "digits_sweep.py")
TINY = [
  "--config.population=2",
  "--config.data.max_train=200",
  "--config.model.width=4",
  "--config.model.depth=1",
  "--config.model.dense=16",
  "--config.report=False",
]
# Orbax's own timeouts are 300 s (signals between its threads) and 1200 s (a
# whole background save): a run that fails promptly ends far below this.
PROMPT_S = 60

# Stands in for ``chmod -R a-w WORKDIR/checkpoints`` (see the test docstring):
# os.mkdir of a new path under $HPJAX_TEST_READ_ONLY raises what the kernel
# raises for a directory without write permission; then the launcher runs.
_READ_ONLY_LAUNCHER = textwrap.dedent("""\
    import errno, os, runpy, sys
    read_only = os.path.abspath(os.environ["HPJAX_TEST_READ_ONLY"]) + os.sep
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):
      name = os.fsdecode(path)
      if os.path.abspath(name).startswith(read_only) and not os.path.lexists(name):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), name)
      return real_mkdir(path, *args, **kwargs)

    os.mkdir = mkdir
    sys.argv[0] = "tune"
    runpy.run_module("experiments.tune", run_name="__main__", alter_sys=True)
    """)


def _env(**extra):
  cache = os.environ.get("HPJAX_TEST_CACHE_DIR", os.path.join(ROOT, ".jax_cache"))
  path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
  return dict(
    os.environ,
    HPJAX_CACHE_MIN_SECS="0",
    HPJAX_CACHE_DIR=cache,
    JAX_PLATFORMS="cpu",
    PYTHONPATH=path,
    **extra,
  )


def _with_ulimit_f(kib, argv):
  """``argv`` run as the shell runs it after ``ulimit -f KIB``.

  The shell only sets RLIMIT_FSIZE and leaves SIGXFSZ at its default action
  (kill, core dump); Python sets SIGXFSZ to SIG_IGN at startup, so a write
  past the limit fails with EFBIG ("File too large") instead, as in the
  reported run.
  """
  return ["bash", "-c", f'ulimit -f {int(kib)} && exec "$@"', "bash", *argv]


def _run(argv, env):
  """Runs a child to its end; returns (returncode, stdout, stderr, seconds)."""
  start = time.monotonic()
  try:
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=PROMPT_S)
  except subprocess.TimeoutExpired as e:
    err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
    pytest.fail(
      f"the process was still running after {PROMPT_S} s (a failed save must end "
      f"the run promptly); stderr so far:\n{err[-3000:]}"
    )
  return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start


def _launcher_args(workdir, epochs):
  return [f"--config={CONFIG}", f"--workdir={workdir}", f"--config.epochs={epochs}", *TINY]


def _tree_digest(directory):
  """A digest of every file name and byte under ``directory``."""
  h = hashlib.sha256()
  for root, dirs, files in os.walk(directory):
    dirs.sort()
    for name in sorted(files):
      path = os.path.join(root, name)
      h.update(os.path.relpath(path, directory).encode() + b"\0")
      with open(path, "rb") as f:
        h.update(f.read())
  return h.hexdigest()


def _one_error_line(stderr):
  """The single line on stderr, which must be an ``error:`` line."""
  lines = [l for l in stderr.splitlines() if l.strip()]
  assert "Traceback" not in stderr, stderr[-3000:]
  assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
  return lines[0]


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
  """A finished 2-epoch run: checkpoints 1 and 2; the tests copy it."""
  workdir = tmp_path_factory.mktemp("faults") / "run"
  rc, _, err, _ = _run(
    [sys.executable, "-m", "experiments.tune", *_launcher_args(workdir, 2)], _env()
  )
  assert rc == 0, err[-3000:]
  steps = sorted(p for p in os.listdir(workdir / "checkpoints") if p.isdigit())
  assert steps == ["1", "2"]
  return workdir


def _assert_step_2_intact_and_resumes(workdir, before):
  """Step 2 is byte for byte what it was and the newest; a relaunch resumes from it."""
  ckdir = workdir / "checkpoints"
  assert sorted(p for p in os.listdir(ckdir) if p.isdigit()) == ["1", "2"]
  assert _tree_digest(ckdir / "2") == before
  # The fault gone (chmod u+w, ulimit -f unlimited), the same command
  # resumes from step 2 and finishes.
  rc, out, err, _ = _run(
    [sys.executable, "-m", "experiments.tune", *_launcher_args(workdir, 3)], _env()
  )
  assert rc == 0, err[-3000:]
  assert "resuming from the checkpoint of epoch 2" in out
  assert sorted(p for p in os.listdir(ckdir) if p.isdigit()) == ["1", "2", "3"]


@pytest.mark.xdist_group("checkpoint_faults")
def test_read_only_checkpoint_directory_ends_the_run_promptly(tmp_path, two_epochs):
  """``chmod -R a-w WORKDIR/checkpoints``, then a relaunch that saves step 3.

  Tests run as root, for whom chmod does not stop writes, so the child
  replaces ``os.mkdir`` with one that raises, for any new path under the
  checkpoint directory, the PermissionError (EACCES) the kernel raises
  there for a user without write permission. Creating the step's temporary
  directory is the first write of a save (a read-only directory fails
  nowhere earlier: resuming only reads), and orbax makes it with os.mkdir,
  so the save fails where it does in the reported run.

  The old code printed the error after the epoch, then hung for 300 s:
  orbax created the directory in a background thread, the threads writing
  the items waited for its "created" signal, which a failed creation never
  sends, and as non-daemon threads they kept the process alive until
  orbax's 300 s signal timeout, then printed a TimeoutError traceback each.
  """
  workdir = tmp_path / "run"
  shutil.copytree(two_epochs, workdir)
  ckdir = workdir / "checkpoints"
  before = _tree_digest(ckdir / "2")
  rc, out, err, seconds = _run(
    [sys.executable, "-c", _READ_ONLY_LAUNCHER, *_launcher_args(workdir, 3)],
    _env(HPJAX_TEST_READ_ONLY=str(ckdir)),
  )
  assert "resuming from the checkpoint of epoch 2" in out
  assert rc == 1, err[-3000:]
  line = _one_error_line(err)
  assert "saving step 3" in line and "Permission denied" in line, line
  assert str(ckdir / "3.orbax-checkpoint-tmp") in line, line  # the file it could not create
  assert seconds < PROMPT_S
  _assert_step_2_intact_and_resumes(workdir, before)


@pytest.mark.xdist_group("checkpoint_faults")
def test_file_size_limit_is_one_clear_line(tmp_path, two_epochs):
  """``ulimit -f 8`` (8 KiB) in bash, then a relaunch that saves step 3.

  8 KiB lets the run resume and log epoch 3 but not write step 3's array
  data (about 10 KiB for this population). The compilation cache is off:
  its entries are larger than the limit.

  The old code printed hundreds of lines first (about 470 for a fresh run
  under ``ulimit -f 6``): orbax logged the failure with its traceback from
  each of its threads, and tensorstore's writes still in flight reported
  "Event loop is closed" with a traceback each.
  """
  workdir = tmp_path / "run"
  shutil.copytree(two_epochs, workdir)
  ckdir = workdir / "checkpoints"
  before = _tree_digest(ckdir / "2")
  rc, out, err, seconds = _run(
    _with_ulimit_f(
      8, [sys.executable, "-m", "experiments.tune", *_launcher_args(workdir, 3), "--jax_cache_dir="]
    ),
    _env(),
  )
  assert "resuming from the checkpoint of epoch 2" in out
  assert rc == 1, err[-3000:]
  line = _one_error_line(err)
  assert "saving step 3" in line and "File too large" in line, line
  assert str(ckdir / "3.orbax-checkpoint-tmp") in line, line  # names the file
  assert seconds < PROMPT_S
  _assert_step_2_intact_and_resumes(workdir, before)


# A checkpointer saves step 1, then step 2 fails (FAULT: mkdir or fsize).
_SAVE_SCRIPT = textwrap.dedent("""\
    import errno, os, resource, sys
    import numpy as np
    from hpjax.checkpoint import CheckpointError, Checkpointer
    directory, fault = sys.argv[1], sys.argv[2]
    # Random values: ocdbt compresses, a constant array would fit any limit.
    state = lambda v: [{"w": np.random.default_rng(v).random((64, 64), np.float32)}]
    ck = Checkpointer(directory)
    ck.save(1, state(1), {"gen": 1})
    ck.wait()
    if fault == "mkdir":
      real_mkdir = os.mkdir
      def mkdir(path, *args, **kwargs):
        if os.fsdecode(path).startswith(directory) and not os.path.lexists(path):
          raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
        return real_mkdir(path, *args, **kwargs)
      os.mkdir = mkdir
    else:
      resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))
    try:
      ck.save(2, state(2), {"gen": 2})
      ck.wait()
    except CheckpointError as e:
      print(f"error: {e}", file=sys.stderr)
    ck.close()
    """)


@pytest.mark.parametrize(
  "fault,problem", [("mkdir", "Permission denied"), ("fsize", "File too large")]
)
def test_failed_save_raises_one_error_and_leaves_no_thread(tmp_path, fault, problem):
  """The same faults under a bare Checkpointer: save or wait raises, close ends orbax's threads.

  ``mkdir``: creating the step directory fails (os.mkdir patched as in the
  launcher test). ``fsize``: RLIMIT_FSIZE of 8 KiB set after step 1 (Python
  ignores SIGXFSZ: EFBIG), the array of step 2 is 16 KiB. The old code
  left the threads waiting for the directory running (the process then
  hung for 300 s), and printed orbax's tracebacks for both faults.
  """
  directory = str(tmp_path / "ck")
  rc, _, err, seconds = _run([sys.executable, "-c", _SAVE_SCRIPT, directory, fault], _env())
  assert rc == 0, err[-3000:]
  line = _one_error_line(err)
  assert "saving step 2" in line and problem in line, line
  assert os.path.join(directory, "2.orbax-checkpoint-tmp") in line, line
  # No orbax thread was left waiting to keep the process alive.
  assert seconds < PROMPT_S
  import numpy as np  # pylint: disable=g-import-not-at-top

  from hpjax.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top

  with Checkpointer(directory) as ck:
    assert ck.all_steps() == [1]
    step, (state,), extra = ck.restore([{"w": np.zeros((64, 64), np.float32)}])
  assert step == 1 and extra == {"gen": 1}
  np.testing.assert_array_equal(state["w"], np.random.default_rng(1).random((64, 64), np.float32))


def _abandon_failed_task(filename: str) -> None:
  """A coroutine defined in ``filename`` fails in a task nobody awaits; the task is collected."""
  namespace: dict = {}
  code = "async def write():\n  raise ValueError('File too large')\n"
  exec(compile(code, filename, "exec"), namespace)
  loop = asyncio.new_event_loop()
  try:
    task = loop.create_task(namespace["write"]())
    loop.run_until_complete(asyncio.sleep(0.01))  # it runs and fails; nobody retrieves it
    assert task.done()
  finally:
    loop.close()
  del task
  gc.collect()


def _abandon_failed_future(message: str) -> None:
  """A future fails with ``message`` and nobody retrieves it (a tensorstore write's)."""
  loop = asyncio.new_event_loop()
  try:
    future = loop.create_future()
    future.set_exception(ValueError(message))
  finally:
    loop.close()
  del future
  gc.collect()


def test_asyncio_reports_of_abandoned_orbax_tasks_are_debug_only(caplog, tmp_path):
  # What made the file-size-limit run print a traceback now and then: asyncio
  # reports an abandoned orbax write task whenever the collector reaches it.
  from hpjax import checkpoint  # pylint: disable=g-import-not-at-top

  def reports():
    return [r for r in caplog.records if "never retrieved" in r.getMessage()]

  with caplog.at_level(logging.DEBUG):
    _abandon_failed_task(os.path.join(checkpoint._ORBAX_DIR, "fake_handler.py"))
    assert [r.name for r in reports()] == ["hpjax.checkpoint"]  # at DEBUG, not asyncio's ERROR
    assert reports()[0].levelno == logging.DEBUG
    _abandon_failed_future(f"Failed writing: {tmp_path}/3.orbax-checkpoint-tmp/d/0: File too large")
    assert [(r.name, r.levelno) for r in reports()][1:] == [("hpjax.checkpoint", logging.DEBUG)]
    # Anyone else's task or future: untouched.
    _abandon_failed_task(str(tmp_path / "users_code.py"))
    _abandon_failed_future("a user's error")
    assert [(r.name, r.levelno) for r in reports()][2:] == [("asyncio", logging.ERROR)] * 2

r"""Tune hyperparameters by training a population: the absl launcher.

  hpjax-tune --config=experiments/configs/digits_sweep.py --workdir=runs/x
  python -m experiments.tune --config=experiments/configs/digits_sweep.py --workdir=runs/x

``--config`` is an ml_collections config file (one ``get_config()``; a colon
passes it an argument: ``from_json.py:FILE.json``); any field can be
overridden, e.g. ``--config.population=64 --config.epochs=5``. The config file
is Python, run as your own code; data files never run code (docs/security.md).

Your own code plugs in by import string (``"module.path:name"``, imported
from the current directory, PYTHONPATH or installed packages):
``config.model.factory`` (an NNX module class or factory; its structural
arguments in ``config.model``), ``config.data.source`` (a function of no
arguments returning arrays or an ``hpjax.Dataset``), ``config.loss`` and
``config.metric`` (an ``hpjax.Metric`` or a list); ``experiments/examples/``
is a worked example. Import strings are taken only from the config given
here, never from a workdir's files.

Bad input ends with one ``error:`` line naming the field or file and what is
wrong, exit status 1 and no traceback, before anything is trained or written
(docs/bad_inputs.md lists the cases): a config file that is missing or not
valid Python, a flag or field that does not exist (with the closest name), a
value out of its bounds, an import string that cannot be imported (a missing
module told apart from one that fails while importing), arrays that cannot fit in memory, a workdir that
holds another run or damaged files. An operating-system error during a run
(a file that cannot be written, a full disk) is one line naming the file and
the system's reason (``--verbosity=1`` logs the traceback too).

The workdir is the resume key: relaunching the same command resumes from the
newest complete checkpoint in ``WORKDIR/checkpoints`` (a damaged newest one
is reported and the one before it is used); ``--config.epochs`` may be raised
to extend a finished run, and settings that change no number
(``checkpoint.every``/``keep``, ``shard``, ``report``, ``progress``,
``tensorboard``) may differ; any other change is refused with the differing
fields listed. SIGINT (Ctrl-C) or SIGTERM stops after the current epoch with
a checkpoint saved (exit status 130 / 143); a second signal, or one before
training, stops at once with one line and the same status, the newest
complete checkpoint intact; even ``kill -9`` loses at most the epoch in
flight.

Several devices: the population is split over all of them by default
(``--config.shard=False`` keeps one device). Several processes (hosts) run
the same command with ``--coordinator_address=HOST0:PORT --num_processes=N
--process_id=I`` (or ``HPJAX_COORDINATOR_ADDRESS``, ``HPJAX_NUM_PROCESSES``,
``HPJAX_PROCESS_ID``) and a shared ``--workdir``; only process 0 prints and
writes logs (see ``hpjax/distributed.py``).
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from absl import logging

from hpjax.cli import common

_CONFIG = common.define_config_file("config", "Experiment config file (FILE.py or FILE.py:ARG).")
flags.declare_key_flag("config")  # listed by --help with this module's flags
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for logs, checkpoints and the summary.")
_SEED = flags.DEFINE_integer("seed", None, "Overrides config.seed when given.")
_CACHE = flags.DEFINE_string(
  "jax_cache_dir",
  os.environ.get("HPJAX_CACHE_DIR", os.path.expanduser("~/.cache/hpjax/xla")),
  "Persistent XLA compilation cache (reused across runs); empty to turn it off. "
  "Default: $HPJAX_CACHE_DIR or ~/.cache/hpjax/xla. Programs that compiled in less than "
  "$HPJAX_CACHE_MIN_SECS seconds (default 0: all) are not cached.",
)


def _env_int(name: str, default: int) -> int:
  value = os.environ.get(name, "")
  try:
    return int(value) if value else default
  except ValueError:
    common.error(f"${name}: must be an integer, got {value!r}")
    sys.exit(1)


_COORDINATOR = flags.DEFINE_string(
  "coordinator_address",
  os.environ.get("HPJAX_COORDINATOR_ADDRESS", ""),
  "Multi-process runs: HOST:PORT of process 0 (jax.distributed). "
  "Default: $HPJAX_COORDINATOR_ADDRESS; empty for one process.",
)
_NUM_PROCESSES = flags.DEFINE_integer(
  "num_processes",
  _env_int("HPJAX_NUM_PROCESSES", 1),
  "Multi-process runs: how many processes. Default: $HPJAX_NUM_PROCESSES or 1.",
)
_PROCESS_ID = flags.DEFINE_integer(
  "process_id",
  _env_int("HPJAX_PROCESS_ID", 0),
  "Multi-process runs: this process's index, 0 .. num_processes-1 (0 writes the logs). "
  "Default: $HPJAX_PROCESS_ID or 0.",
)
flags.mark_flags_as_required(["config", "workdir"])

# The workdir of the run in progress and whether this launch created it: what
# a stop or an error says and cleans up.
_RUN = {"workdir": None, "created": False}


def _one_line(e: BaseException) -> str:
  return " ".join(line.strip() for line in str(e).splitlines() if line.strip())


def _failed(message: str) -> int:
  """Prints the error line; removes a workdir this launch created and left empty."""
  common.error(message)
  if _RUN["workdir"] and _RUN["created"]:
    common.remove_if_empty(_RUN["workdir"])
  return 1


def main(argv: list[str]) -> int:
  """Runs one tuning run from the parsed flags; returns the exit status."""
  del argv  # positional arguments are refused by the flags parser
  import jax  # pylint: disable=g-import-not-at-top

  from hpjax import distributed  # pylint: disable=g-import-not-at-top

  try:
    # Before anything touches the JAX backend.
    distributed.initialize(_COORDINATOR.value or None, _NUM_PROCESSES.value, _PROCESS_ID.value)
  except ValueError as e:
    return _failed(_one_line(e))
  if _CACHE.value:
    jax.config.update("jax_compilation_cache_dir", _CACHE.value)
    # Every program is cached, however fast it compiled: a run has a few per
    # structural group, and the sub-second ones (the inits, the exploit
    # gathers) add up to seconds of a warm start (docs/benchmarks.md).
    jax.config.update(
      "jax_persistent_cache_min_compile_time_secs",
      float(os.environ.get("HPJAX_CACHE_MIN_SECS", "0")),
    )
  from hpjax import tuner  # pylint: disable=g-import-not-at-top
  from hpjax.checkpoint import CheckpointError  # pylint: disable=g-import-not-at-top
  from hpjax.data import DataError  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  if _SEED.value is not None:
    with config.unlocked():
      config.seed = _SEED.value
  if not flags.FLAGS["verbosity"].present:
    # Progress goes to stdout; absl's INFO chatter (JAX backend probing and
    # the like) would bury it. --verbosity=0 brings it back.
    logging.set_verbosity(logging.WARNING)
  logging.info("config:\n%s", config)
  workdir = _WORKDIR.value
  _RUN.update(workdir=workdir, created=not os.path.lexists(workdir) and _PROCESS_ID.value == 0)
  # Import strings (config.model.factory, ...) resolve as under `python -m`:
  # from the current directory too, which a console script leaves off sys.path.
  if "" not in sys.path and os.getcwd() not in sys.path:
    sys.path.append(os.getcwd())
  from hpjax import timing  # pylint: disable=g-import-not-at-top

  try:
    with timing.Phases() as phases:
      with phases.phase("config_and_data"):
        # Every field checked; import strings imported; the data loaded.
        exp = tuner.from_config(config)
        tuner.check_workdir(workdir, exp.config)  # before anything is compiled
      tuner.execute(exp, workdir, phases=phases)
  except tuner.Interrupted as e:  # the first signal: the epoch finished, a checkpoint saved
    print(str(e), file=sys.stderr)
    return e.exit_code
  except (ValueError, DataError, CheckpointError) as e:
    return _failed(_one_line(e))
  except Exception as e:
    if common.is_os_fault(e):
      # The system refused a file (permissions, a full disk, a path that is
      # a directory): an error of the environment, named by file and reason.
      logging.debug("the traceback of the error below", exc_info=True)
      return _failed(common.os_error_line(e))
    if common.is_out_of_memory(e):
      logging.debug("the traceback of the error below", exc_info=True)
      what = common.first_line(e)[:200]
      return _failed(
        f"out of memory ({type(e).__name__}{': ' + what if what else ''}); "
        "lower config.population, data.image_size, batch_size or eval_batch_size"
      )
    raise  # a bug: its traceback is what helps
  return 0


def _stopped_line(e: common.Stopped) -> str:
  """What a stop at once says: where, and what is left to resume from."""
  workdir = _RUN["workdir"]
  if workdir is None:
    return f"{e.name}: stopped while starting; nothing was written"
  step = common.newest_checkpoint(workdir)
  if step is not None:
    return (
      f"{e.name}: stopped at once; the checkpoint of epoch {step} in {workdir} is intact: "
      "relaunch the same command to resume"
    )
  if _RUN["created"]:
    common.remove_if_empty(workdir)
  return (
    f"{e.name}: stopped at once, before the first checkpoint was complete; relaunching "
    "the same command starts the run again"
  )


def run() -> None:
  """Console entry point (``hpjax-tune``; ``python -m experiments.tune``)."""
  common.stop_at_once()
  common.show_flags_in_help(__name__)
  try:
    app.run(main, flags_parser=common.flags_parser(max_args=0, config_flag="config"))
  except common.Stopped as e:
    print(_stopped_line(e), file=sys.stderr, flush=True)
    sys.exit(e.code)
  finally:
    common.ignore_signals_while_exiting()


if __name__ == "__main__":
  run()

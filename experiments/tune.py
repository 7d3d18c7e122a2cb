r"""Tune hyperparameters by training a population: the absl launcher.

  python -m experiments.tune --config=experiments/configs/digits_sweep.py --workdir=runs/x
  hpjax-tune --config=experiments/configs/digits_sweep.py --workdir=runs/x   # same, installed

``--config`` is an ml_collections config file (one ``get_config()``); any
field can be overridden, e.g. ``--config.population=64 --config.epochs=5``.
A bad flag or config value ends with one error line and exit status 1, and
never touches an existing workdir.
The config file is Python, run as your own code; data files never run code (docs/security.md).

The workdir is the resume key: relaunching the same command resumes from the
newest complete checkpoint in ``WORKDIR/checkpoints`` (a damaged newest one
is reported and the one before it is used); ``--config.epochs`` may be raised
to extend a finished run, and settings that change no number
(``checkpoint.every``/``keep``, ``shard``, ``report``, ``progress``,
``tensorboard``) may differ; any other change is refused with the differing
fields listed. SIGINT (Ctrl-C) or SIGTERM stops after the current epoch with
a checkpoint saved; a second signal stops at once, and even ``kill -9`` loses
at most the epoch in flight.

Several devices: the population is split over all of them by default
(``--config.shard=False`` keeps one device). Several processes (hosts) run
the same command with ``--coordinator_address=HOST0:PORT --num_processes=N
--process_id=I`` (or ``HPJAX_COORDINATOR_ADDRESS``, ``HPJAX_NUM_PROCESSES``,
``HPJAX_PROCESS_ID``) and a shared ``--workdir``; only process 0 prints and
writes logs (see ``hpjax/distributed.py``).
"""

from __future__ import annotations

import os
import re
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for logs, checkpoints and the summary.")
_SEED = flags.DEFINE_integer("seed", None, "Overrides config.seed when given.")
_CACHE = flags.DEFINE_string(
    "jax_cache_dir", os.environ.get("HPJAX_CACHE_DIR", os.path.expanduser("~/.cache/hpjax/xla")),
    "Persistent XLA compilation cache (reused across runs); empty to turn it off. "
    "Default: $HPJAX_CACHE_DIR or ~/.cache/hpjax/xla. Programs that compiled in less than "
    "$HPJAX_CACHE_MIN_SECS seconds (default 0: all) are not cached.")


def _env_int(name: str, default: int) -> int:
  value = os.environ.get(name, "")
  try:
    return int(value) if value else default
  except ValueError:
    print(f"error: ${name}: must be an integer, got {value!r}", file=sys.stderr)
    sys.exit(1)


_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", os.environ.get("HPJAX_COORDINATOR_ADDRESS", ""),
    "Multi-process runs: HOST:PORT of process 0 (jax.distributed). "
    "Default: $HPJAX_COORDINATOR_ADDRESS; empty for one process.")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", _env_int("HPJAX_NUM_PROCESSES", 1),
    "Multi-process runs: how many processes. Default: $HPJAX_NUM_PROCESSES or 1.")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", _env_int("HPJAX_PROCESS_ID", 0),
    "Multi-process runs: this process's index, 0 .. num_processes-1 (0 writes the logs). "
    "Default: $HPJAX_PROCESS_ID or 0.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  import jax  # pylint: disable=g-import-not-at-top
  from hpjax import distributed  # pylint: disable=g-import-not-at-top
  try:
    # Before anything touches the JAX backend.
    distributed.initialize(_COORDINATOR.value or None, _NUM_PROCESSES.value, _PROCESS_ID.value)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  if _CACHE.value:
    jax.config.update("jax_compilation_cache_dir", _CACHE.value)
    # Every program is cached, however fast it compiled: a run has a few per
    # structural group, and the sub-second ones (the inits, the exploit
    # gathers) add up to seconds of a warm start (docs/benchmarks.md).
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ.get("HPJAX_CACHE_MIN_SECS", "0")))
  from hpjax import tuner  # pylint: disable=g-import-not-at-top
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
  from hpjax.checkpoint import CheckpointError  # pylint: disable=g-import-not-at-top
  try:
    tuner.run(config, _WORKDIR.value)
  except (ValueError, DataError, CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  except tuner.Interrupted as e:
    print(str(e), file=sys.stderr)
    return e.exit_code
  return 0


def run():
  """Console entry point (``hpjax-tune``)."""
  try:
    app.run(main)
  except (AttributeError, KeyError, TypeError) as e:
    # ml_collections reports an override of a field the config does not have
    # (e.g. a typo) with a traceback; turn it into the usual one-line error.
    text = str(e.args[0] if e.args else e)
    field = re.search(r"'([A-Za-z0-9_.]+)", text)
    hint = re.search(r'Did you mean "([^"]+)"', text)
    print("error: --config: no field " + (repr(field.group(1)) if field else "of that name")
          + (f"; did you mean {hint.group(1)!r}?" if hint else ""), file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  run()

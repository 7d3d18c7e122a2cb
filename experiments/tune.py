r"""Tune hyperparameters by training a population (``hpjax-tune`` from a checkout).

  python -m experiments.tune --config=experiments/configs/digits_sweep.py --workdir=runs/x

A thin main: the flags, the checks and the run are :mod:`hpjax.cli.tune`'s
(``--help`` lists them). This module only makes a Ctrl-C during its imports
(JAX alone takes seconds) one line instead of a traceback.
"""

import signal
import sys


def _stopped_while_starting(signum, frame):
  del frame
  print(
    f"{signal.Signals(signum).name}: stopped while starting; nothing was written",
    file=sys.stderr,
    flush=True,
  )
  raise SystemExit(128 + signum)


# Before any heavy import: `import hpjax` imports JAX.
signal.signal(signal.SIGINT, _stopped_while_starting)
signal.signal(signal.SIGTERM, _stopped_while_starting)

# After the handlers; `main` is re-exported (tests and scripts call it).
from hpjax.cli.tune import main  # noqa: E402, F401
from hpjax.cli.tune import run  # noqa: E402

if __name__ == "__main__":
  run()

r"""Report on a tuning run from its workdir (``hpjax-report`` from a checkout).

  python -m experiments.report --workdir=runs/digits_pbt
  python -m experiments.report runs/digits_pbt

A thin main: the flags and the report are :mod:`hpjax.cli.report`'s
(``--help`` lists them). This module only makes a Ctrl-C during its imports
one line instead of a traceback.
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
from hpjax.cli.report import main  # noqa: E402, F401
from hpjax.cli.report import run  # noqa: E402

if __name__ == "__main__":
  run()

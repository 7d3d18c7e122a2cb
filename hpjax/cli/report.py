r"""Report on a tuning run from its workdir: plots, ``report.json`` and a table.

  hpjax-report runs/digits_pbt            # the workdir as argument
  python -m experiments.report --workdir=runs/digits_pbt

Nothing is retrained: everything is rebuilt from the files the tuner wrote
(``config.json``, ``metrics.jsonl``, ``lineage.jsonl``, ``summary.json``), so a
run still going or killed half way can be reported on too (marked partial).
The PNGs go to ``WORKDIR/plots/`` and the summary to ``WORKDIR/report.json``
(see :mod:`hpjax.report` for which plots are drawn when); the table and the
list of plot files are printed. A workdir that cannot be read (missing, a
regular file, damaged files), an unknown flag or a stray argument ends with
one ``error: ...`` line on stderr and exit status 1.
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from absl import logging

from hpjax.cli import common

_WORKDIR = flags.DEFINE_string(
  "workdir", None, "The tuning run's workdir (or give it as the only argument)."
)
_TOP = flags.DEFINE_integer("top", 10, "Ranked members shown in the table.")


def main(argv: list[str]) -> int:
  """Builds the report of one workdir; returns the exit status."""
  args = argv[1:]
  workdir = _WORKDIR.value
  if args:
    if workdir is not None and os.path.abspath(args[0]) != os.path.abspath(workdir):
      common.error(f"two workdirs given: --workdir={workdir} and {args[0]}")
      return 1
    workdir = args[0]
  if not workdir:
    common.error("no workdir: give it as --workdir=DIR or as the only argument")
    return 1
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    common.error(
      f"{workdir}: not a directory; give the run's workdir (the --workdir of hpjax-tune)"
    )
    return 1
  if not flags.FLAGS["verbosity"].present:
    # Keep stdout to the table: absl's INFO chatter (matplotlib's font cache,
    # JAX backend probing) would bury it. --verbosity=0 brings it back.
    logging.set_verbosity(logging.WARNING)
  from hpjax import report  # pylint: disable=g-import-not-at-top

  try:
    result = report.build_report(workdir)
  except report.ReportError as e:
    common.error(str(e))
    return 1
  except OSError as e:
    if not common.is_os_fault(e):
      raise
    common.error(common.os_error_line(e))
    return 1
  lines = [
    report.format_table(result["summary"], top=_TOP.value),
    "",
    f"report: {result['report_json']}",
    "plots:" if result["plots"] else "plots: none",
  ]
  lines += [f"  {path}" for path in result["plots"]]
  try:
    print("\n".join(lines), flush=True)
  except BrokenPipeError:  # e.g. `hpjax-report DIR | head`: not an error
    sys.stdout = open(os.devnull, "w")  # pylint: disable=consider-using-with
  return 0


def run() -> None:
  """Console entry point (``hpjax-report``; ``python -m experiments.report``)."""
  common.stop_at_once()
  common.show_flags_in_help(__name__)
  try:
    app.run(main, flags_parser=common.flags_parser(max_args=1))
  except common.Stopped as e:
    print(f"{e.name}: stopped at once", file=sys.stderr, flush=True)
    sys.exit(e.code)
  finally:
    common.ignore_signals_while_exiting()


if __name__ == "__main__":
  run()

"""The command-line launchers, installed as console scripts.

* ``hpjax-tune`` (:mod:`hpjax.cli.tune`): train a population from a config
  file into a workdir, resuming it when relaunched;
* ``hpjax-report`` (:mod:`hpjax.cli.report`): plots and a table rebuilt from
  a workdir.

``python -m experiments.tune`` / ``python -m experiments.report`` run the same
mains from a checkout. :mod:`hpjax.cli.common` holds what both share: config
files, flag parsing and signals, each failure one ``error:`` line.
"""

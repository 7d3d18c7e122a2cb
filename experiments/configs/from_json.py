r"""A config read from a JSON file: a run's ``config.json`` or an exported retrain config.

The path follows the config file after a colon::

  python -m experiments.tune \
      --config=experiments/configs/from_json.py:runs/digits28_pbt/best/config.json \
      --workdir=runs/digits28_best_retrained

``WORKDIR/best/config.json``, written at the end of every run, trains one
fresh model on the best member's hyperparameter schedule (for PBT, the
hyperparameters its weights were trained with, epoch by epoch). Fields can
still be overridden on the command line (``--config.seed=1``).
"""

import json

import ml_collections


def get_config(path: str = "") -> ml_collections.ConfigDict:
  if not path:
    raise ValueError("--config: give the JSON file after a colon, e.g. "
                     "--config=experiments/configs/from_json.py:WORKDIR/best/config.json")
  try:
    with open(path) as f:
      values = json.load(f)
  except OSError as e:
    raise ValueError(f"--config: cannot read {path!r}: {e.strerror}") from None
  except json.JSONDecodeError as e:
    raise ValueError(f"--config: {path!r} is not valid JSON: {e}") from None
  return ml_collections.ConfigDict(values)

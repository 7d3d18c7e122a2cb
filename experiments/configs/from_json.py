r"""A config read from a JSON file: a run's ``config.json`` or an exported retrain config.

The path follows the config file after a colon::

  python -m experiments.tune \
      --config=experiments/configs/from_json.py:runs/digits28_pbt/best/config.json \
      --workdir=runs/digits28_best_retrained

``WORKDIR/best/config.json``, written at the end of every run, trains one
fresh model on the best member's hyperparameter schedule (for PBT, the
hyperparameters its weights were trained with, epoch by epoch). Fields the
file leaves out take their defaults (:mod:`hpjax.config`), so they can be
overridden on the command line too (``--config.seed=1``). A file that is
missing, not JSON, or not a JSON object of fields is one ``error:`` line
naming it; unknown fields and bad values are named by the launcher's checks.
"""

import json

import ml_collections

from hpjax import config as config_lib

# Sections checked by their own modules: taken from the file as they are.
_OPEN = ("space", "controller", "hparam_schedule")


def _with_defaults(values: dict, defaults: dict) -> dict:
  """``values`` over ``defaults``, group by group; None defaults are left out.

  A ``model`` section naming a factory is taken as it is: its fields are
  that model's arguments, and a built-in default added to them could change it.
  """
  out = {k: v for k, v in defaults.items() if v is not None}
  for key, value in values.items():
    user_model = key == "model" and isinstance(value, dict) and value.get("factory")
    if (
      isinstance(value, dict)
      and isinstance(out.get(key), dict)
      and key not in _OPEN
      and not user_model
    ):
      value = _with_defaults(value, out[key])
    out[key] = value
  return out


def get_config(path: str = "") -> ml_collections.ConfigDict:
  if not path:
    raise ValueError(
      "--config: give the JSON file after a colon, e.g. "
      "--config=experiments/configs/from_json.py:WORKDIR/best/config.json"
    )
  try:
    with open(path) as f:
      values = json.load(f)
  except OSError as e:
    raise ValueError(f"--config: cannot read {path!r}: {e.strerror}") from None
  except UnicodeDecodeError as e:
    raise ValueError(
      f"--config: {path!r} is not valid JSON: not UTF-8 text ({e.reason} at byte {e.start})"
    ) from None
  except json.JSONDecodeError as e:
    raise ValueError(f"--config: {path!r} is not valid JSON: {e}") from None
  if not isinstance(values, dict):
    kind = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(
      type(values), "null"
    )
    raise ValueError(
      f"--config: {path!r} must hold a JSON object of config fields "
      f'({{"population": 8, ...}}), not a JSON {kind}'
    )
  return ml_collections.ConfigDict(_with_defaults(values, config_lib.defaults()))

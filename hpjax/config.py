"""The launcher's config: its fields, their defaults and their checks, in one place.

A config is a nested dict (an ``ml_collections.ConfigDict`` in
``experiments/configs/``, or JSON read by ``from_json.py``). :func:`defaults`
is every field with its default; :func:`validate` checks a whole config
before anything is built or written and fills in missing fields:

* an unknown key anywhere is an error naming it, with the closest known key;
* every value has a type and bounds (a number must be finite; an integer
  field refuses ``2.5``, ``True`` and ``"two"``);
* every error is one line naming the field (``config.data.val_fraction``)
  and what is allowed.

The search space (``space``) and the controller's settings are checked by
their own modules (:mod:`hpjax.space`, :mod:`hpjax.controllers`).
"""

from __future__ import annotations

import copy
import difflib
import math
import numbers
from collections.abc import Mapping
from typing import Any

from hpjax import hparams as hp_lib
from hpjax import optim

CONTROLLERS = ("none", "pbt", "halving")
INITS = ("random", "grid", "quasi_random")
TASKS = ("auto", "classification", "regression")

_DEFAULTS = {
    "seed": 0,
    "population": 16,
    "epochs": 10,
    "batch_size": 32,
    "eval_batch_size": 256,
    "fitness": "",  # "": the task's metric (accuracy, or mse for regression)
    "data": {"source": "digits", "data_dir": "", "image_size": 0, "val_fraction": 0.1,
             "test_fraction": 0.2, "max_train": 0, "num_classes": 0, "task": "auto"},
    "model": {name: hp_lib.BUILTIN[name].default for name in hp_lib.MODEL_STRUCTURAL},
    # decay_epochs: length of a cosine decay; 0 means config.epochs (a run
    # whose schedule follows its length cannot be extended).
    "schedule": {"kind": "constant", "warmup_epochs": 0.0, "alpha": 0.0, "decay_epochs": 0.0},
    "init": "random",
    "space": {},
    "controller": {"name": "none"},
    "lr_range_test": False,
    "checkpoint": {"every": 1, "keep": 3},
    "tensorboard": True,
    "report": True,
    "shared_order": False,
    "shard": True,
    "progress": None,
    "hparam_schedule": None,
}

# Free-form sections: checked by their own modules.
_OPEN = ("space", "controller", "hparam_schedule")

# Fields a relaunch may change without making the workdir incompatible: the
# length of the run, how it is checkpointed and split over devices, and what
# it shows (plots, progress bars, TensorBoard files); none changes a number.
RESUME_FREE = ("epochs", "checkpoint.every", "checkpoint.keep", "shard", "report", "progress",
               "tensorboard")


def defaults() -> dict[str, Any]:
  """Every field of a config with its default (a fresh copy)."""
  return copy.deepcopy(_DEFAULTS)


def error(field: str, message: str) -> ValueError:
  """A one-line configuration error naming the field."""
  return ValueError(f"config.{field}: {message}")


def _is_bool(v: Any) -> bool:
  return isinstance(v, bool)


def _int(cfg: Mapping, field: str, lo: int | None = None) -> int:
  v = _get(cfg, field)
  if _is_bool(v) or not isinstance(v, numbers.Integral):
    if isinstance(v, float) and v.is_integer():
      v = int(v)
    else:
      raise error(field, f"must be an integer{f' >= {lo}' if lo is not None else ''}, got {v!r}")
  if lo is not None and v < lo:
    raise error(field, f"must be >= {lo}, got {v}")
  return int(v)


def _float(cfg: Mapping, field: str, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False, hi_open: bool = False) -> float:
  v = _get(cfg, field)
  if _is_bool(v) or not isinstance(v, numbers.Real):
    raise error(field, f"must be a number, got {v!r}")
  v = float(v)
  text = (f"{'(' if lo_open else '['}{'-inf' if lo is None else f'{lo:g}'}, "
          f"{'inf' if hi is None else f'{hi:g}'}{')' if hi_open or hi is None else ']'}")
  if not math.isfinite(v):
    raise error(field, f"must be a finite number in {text}, got {v}")
  if ((lo is not None and (v < lo or (lo_open and v == lo)))
      or (hi is not None and (v > hi or (hi_open and v == hi)))):
    raise error(field, f"must be in {text}, got {v:g}")
  return v


def _flag(cfg: Mapping, field: str, optional: bool = False) -> bool | None:
  v = _get(cfg, field)
  if optional and v is None:
    return None
  if not _is_bool(v):
    raise error(field, f"must be true or false{' (or null: automatic)' if optional else ''}, "
                f"got {v!r}")
  return v


def _choice(cfg: Mapping, field: str, allowed) -> str:
  v = _get(cfg, field)
  if v not in allowed:
    raise error(field, f"unknown value {v!r}; allowed: {', '.join(map(str, allowed))}")
  return v


def _string(cfg: Mapping, field: str) -> str:
  v = _get(cfg, field)
  if not isinstance(v, str):
    raise error(field, f"must be a string, got {v!r}")
  return v


def _get(cfg: Mapping, field: str) -> Any:
  for part in field.split("."):
    cfg = cfg[part]
  return cfg


def _plain(cfg: Any) -> Any:
  """ConfigDict / mapping / tuple -> plain dicts and lists (recursively)."""
  if hasattr(cfg, "to_dict"):
    cfg = cfg.to_dict()
  if isinstance(cfg, Mapping):
    return {k: _plain(v) for k, v in cfg.items()}
  if isinstance(cfg, (list, tuple)):
    return [_plain(v) for v in cfg]
  return cfg


def _fill(cfg: Any, default: Mapping, prefix: str) -> dict:
  """``cfg`` with missing keys from ``default``; unknown keys are errors with a hint."""
  if not isinstance(cfg, Mapping):
    raise ValueError(f"{prefix or 'config'}: must be a dict of fields, got "
                     f"{type(cfg).__name__} {cfg!r}"[:200])
  out = {}
  for key, value in cfg.items():
    name = f"{prefix}.{key}" if prefix else str(key)
    if key not in default:
      close = difflib.get_close_matches(str(key), list(default), n=1)
      hint = f"; did you mean {close[0]!r}?" if close else f"; allowed: {', '.join(default)}"
      raise ValueError(f"config.{name}: unknown field{hint}")
    if isinstance(default[key], dict) and key not in _OPEN:
      value = _fill(value, default[key], name)
    out[key] = value
  for key, value in default.items():
    out.setdefault(key, copy.deepcopy(value))
  return out


def validate(config: Any) -> dict[str, Any]:
  """Checks a whole config and returns it as a plain dict with every field.

  Nothing is loaded, built or written here: a typo costs no compile.

  Args:
    config: an ``ml_collections.ConfigDict`` or a (nested) mapping.

  Returns:
    The config as plain dicts and lists, missing fields filled with defaults.

  Raises:
    ValueError: one line naming the field and what is allowed.
  """
  cfg = _fill(_plain(config), _DEFAULTS, "")
  _int(cfg, "seed", 0)
  _int(cfg, "population", 1)
  _int(cfg, "epochs", 1)
  _int(cfg, "batch_size", 1)
  _int(cfg, "eval_batch_size", 1)
  _string(cfg, "fitness")
  _string(cfg, "data.source")
  if not isinstance(cfg["data"]["data_dir"], str):
    raise error("data.data_dir", f"must be a path string, got {cfg['data']['data_dir']!r}")
  image_size = _int(cfg, "data.image_size", 0)
  if 0 < image_size < 8:
    raise error("data.image_size", f"must be 0 (the source's own size) or >= 8, got {image_size}")
  _float(cfg, "data.val_fraction", 0.0, 1.0, lo_open=True, hi_open=True)
  _float(cfg, "data.test_fraction", 0.0, 1.0, hi_open=True)
  if cfg["data"]["val_fraction"] + cfg["data"]["test_fraction"] >= 1.0:
    raise error("data.test_fraction", "val_fraction + test_fraction must be < 1, got "
                f"{cfg['data']['val_fraction']:g} + {cfg['data']['test_fraction']:g}")
  _int(cfg, "data.max_train", 0)
  _int(cfg, "data.num_classes", 0)
  _choice(cfg, "data.task", TASKS)
  for name, value in cfg["model"].items():
    hp_lib.BUILTIN[name].check(value, f"config.model.{name}")
  _choice(cfg, "schedule.kind", optim.SCHEDULES)
  _float(cfg, "schedule.warmup_epochs", 0.0)
  _float(cfg, "schedule.alpha", 0.0, 1.0)
  _float(cfg, "schedule.decay_epochs", 0.0)
  _choice(cfg, "init", INITS)
  if not isinstance(cfg["space"], Mapping):
    raise error("space", f"must be a dict name -> dimension, got {cfg['space']!r}")
  controller = cfg["controller"]
  if not isinstance(controller, Mapping):
    raise error("controller", f"must be a dict with a name, got {controller!r}")
  _choice(cfg, "controller.name", CONTROLLERS) if "name" in controller else None
  for field in ("lr_range_test", "tensorboard", "report", "shared_order", "shard"):
    _flag(cfg, field)
  _flag(cfg, "progress", optional=True)
  _int(cfg, "checkpoint.every", 1)
  _int(cfg, "checkpoint.keep", 1)
  return cfg


def diff(old: Mapping[str, Any], new: Mapping[str, Any], ignore=RESUME_FREE) -> list[str]:
  """The dotted fields whose values differ between two configs (``ignore``-d aside)."""
  from hpjax import checkpoint  # pylint: disable=g-import-not-at-top
  return checkpoint.diff_configs(old, new, ignore=ignore)

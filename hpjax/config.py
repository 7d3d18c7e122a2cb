"""The launcher's config: its fields, their defaults and their checks, in one place.

A config is a nested dict (an ``ml_collections.ConfigDict`` in
``experiments/configs/``, or JSON read by ``from_json.py``). :func:`defaults`
is every field with its default; :func:`validate` checks a whole config
before anything is built or written and fills in missing fields:

* an unknown key anywhere is an error naming it, with the closest known key;
* every value has a type and bounds (a number must be finite; an integer
  field refuses ``2.5``, ``True`` and ``"two"``);
* every error is one line naming the field (``config.data.val_fraction``)
  and what is allowed;
* a config whose arrays certainly cannot fit in memory is refused with the
  numbers (:func:`check_memory`).

The search space (``space``) and the controller's settings are checked by
their own modules (:mod:`hpjax.space`, :mod:`hpjax.controllers`).
"""

from __future__ import annotations

import copy
import difflib
import math
import numbers
import os
from collections.abc import Mapping
from typing import Any

from hpjax import hparams as hp_lib
from hpjax import optim

CONTROLLERS = ("none", "pbt", "halving", "pbt_halving")
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
  check_memory(cfg)
  return cfg


# The sources whose images are known without reading a file: (examples or
# None, height, width, channels). Images are uint8, one byte per value.
_IMAGES = {"digits": (1797, 8, 8, 1), "mnist": (None, 28, 28, 1),
           "fashion_mnist": (None, 28, 28, 1), "cifar10": (None, 32, 32, 3)}


def memory_limit() -> int | None:
  """Bytes of memory this process can have: physical memory, or a lower cgroup limit.

  None when neither can be read.
  """
  limits = []
  try:
    limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
  except (AttributeError, OSError, ValueError):
    pass
  for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
    try:
      with open(path) as f:
        text = f.read().strip()
    except OSError:
      continue
    if text.isdigit() and int(text) > 0:
      limits.append(int(text))
  limits = [v for v in limits if v > 0]
  return min(limits) if limits else None


def _bytes(n: float) -> str:
  for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
    if n < 1024 or unit == "PiB":
      return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
    n /= 1024
  return f"{n:.1f} PiB"


def check_memory(cfg: Mapping[str, Any], limit: int | None = None) -> None:
  """Refuses a config whose arrays certainly cannot fit in this machine's memory.

  The rule: before anything is loaded, a lower bound of the bytes two kinds
  of arrays take is compared with the memory limit (:func:`memory_limit`:
  physical memory, or the cgroup limit when it is lower; the arrays are
  built on the host first):

  * the dataset after ``data.image_size`` resizing: examples x size x size x
    channels bytes (uint8). The examples are the digits' 1797 (split and
    capped as configured); for every other source at least one batch, one
    validation and one test example, since their counts are not known
    before the files are read;
  * the evaluation splits, each padded to a whole number of
    ``eval_batch_size`` chunks: at least ``eval_batch_size`` examples each,
    of input bytes plus 8 (label and weight).

  Being lower bounds, the estimates never refuse a config that fits. What
  they cannot see (the population's parameters and optimizer states, an
  unusually large file) still fails when it is allocated; the launcher
  reports that as one ``out of memory`` line too.

  Args:
    cfg: a config with every field (as :func:`validate` returns it).
    limit: bytes available (default: :func:`memory_limit`; no check when
      that cannot be read).

  Raises:
    ValueError: one line naming the field, the bytes it needs and the limit.
  """
  limit = memory_limit() if limit is None else limit
  if not limit:
    return
  d = cfg["data"]
  source = str(d["source"]).strip().lower().replace("-", "_")
  known = _IMAGES.get(source.split(":", 1)[0])
  size, batch, evals = int(d["image_size"]), int(cfg["batch_size"]), int(cfg["eval_batch_size"])
  channels = known[3] if known else 1
  if size:
    per_example = size * size * channels
  else:
    per_example = known[1] * known[2] * known[3] if known else 0
  count = known[0] if known and known[0] else None
  if count:
    held_out = max(2, math.floor((d["val_fraction"] + d["test_fraction"]) * count) - 2)
    train = count - held_out
    if d["max_train"]:
      train = min(train, int(d["max_train"]))
    train = max(train, batch)
  else:
    held_out, train = 2, batch
  # Validation and test are each padded to at least one eval chunk; labels
  # take 4 bytes per example, the padding weights 4 per padded example.
  rows = train + max(held_out, 2 * evals)
  total = rows * (per_example + 4) + 2 * evals * 4
  if total <= limit:
    return
  have = f"more than this machine's memory ({_bytes(limit)})"
  native = known[1] * known[2] * known[3] if known else 0
  if size and rows * (native + 4) + 2 * evals * 4 <= limit:
    raise error("data.image_size", f"{size} makes each image {_bytes(per_example)} ({size} x "
                f"{size} x {channels} bytes), and the dataset and the evaluation splits padded to "
                f"eval_batch_size hold at least {rows} images: {_bytes(total)}, {have}")
  raise error("eval_batch_size", f"{evals} pads the validation and test splits to at least "
              f"{evals} examples each (2 x {evals} x {per_example + 8} bytes): "
              f"{_bytes(2 * evals * (per_example + 8))}, {have}")


def diff(old: Mapping[str, Any], new: Mapping[str, Any], ignore=RESUME_FREE) -> list[str]:
  """The dotted fields whose values differ between two configs (``ignore``-d aside)."""
  from hpjax import checkpoint  # pylint: disable=g-import-not-at-top
  return checkpoint.diff_configs(old, new, ignore=ignore)

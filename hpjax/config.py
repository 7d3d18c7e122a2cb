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

**A user's code** plugs in through import strings, ``"module.path:name"``
(:func:`import_object`; they run the user's own code, docs/security.md):

* ``model.factory``: ``""`` (the built-in families, whose structural
  hyperparameters are ``model``'s other fields) or the user's NNX module
  class or factory (the contract of ``hpjax.tune(model=...)``); the other
  fields of ``model`` are then its structural constructor arguments, any
  identifier with a number, string or boolean value (built-in names the
  factory does not take are ignored while they hold their defaults);
* ``data.source``: a built-in source, or a function of no arguments
  returning ``(x, y)``, ``(x, y, x_test, y_test)``, a dict of those arrays
  (``x_val``/``y_val`` too), an ``hpjax.Dataset``, or an
  ``hpjax.data.Stream`` (training batches streamed from the host); the
  ``data`` options (fractions, ``max_train``, ``image_size``, ``task``,
  ``num_classes``) apply to arrays, a Dataset or Stream is used as it is
  (an option set for one is an error);
* ``loss``: ``""`` (the built-in loss each member's ``hp["loss"]`` picks), a
  built-in loss for every member, or ``(outputs, y, hp) -> [B]``;
* ``metric``: ``""`` (the task's), a built-in metric name, or an
  ``hpjax.Metric`` (or a list of them); ``fitness`` names one of them or
  ``loss``.

:func:`validate` checks only their form; :func:`hpjax.tuner.from_config`
imports them.
"""

from __future__ import annotations

from collections.abc import Mapping
import copy
import difflib
import importlib
import math
import numbers
import os
import sys
import traceback
from typing import Any

from hpjax import hparams as hp_lib
from hpjax import optim

CONTROLLERS = ("none", "pbt", "halving", "pbt_halving")
METRICS = ("accuracy", "mse")  # the built-in metrics (hpjax.fitness.TASK_METRIC)
# Built-in data sources written with a colon ("npz:PATH", "tfds:NAME"): not import strings.
_SOURCE_PREFIXES = ("npz", "tfds")
_SOURCES = ("digits", "mnist", "fashion_mnist", "cifar10", "npz", "diabetes")
INITS = ("random", "grid", "quasi_random")
TASKS = ("auto", "classification", "regression")

_DEFAULTS = {
  "seed": 0,
  "population": 16,
  "epochs": 10,
  "batch_size": 32,
  "eval_batch_size": 256,
  "fitness": "",  # "": the first metric (the task's: accuracy, or mse for regression)
  "data": {
    "source": "digits",
    "data_dir": "",
    "image_size": 0,
    "val_fraction": 0.1,
    "test_fraction": 0.2,
    "max_train": 0,
    "num_classes": 0,
    "task": "auto",
  },
  # factory "": the built-in families, whose structural values follow;
  # "module:Name": a user's model, whose own structural values follow.
  "model": {
    "factory": "",
    **{name: hp_lib.BUILTIN[name].default for name in hp_lib.MODEL_STRUCTURAL},
  },
  "loss": "",  # "": the built-in loss hp["loss"] picks; a built-in name; "module:function"
  "metric": "",  # "": the task's (accuracy, mse); a built-in name; "module:object"
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
RESUME_FREE = (
  "epochs",
  "checkpoint.every",
  "checkpoint.keep",
  "shard",
  "report",
  "progress",
  "tensorboard",
)


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


def _float(
  cfg: Mapping,
  field: str,
  lo: float | None = None,
  hi: float | None = None,
  lo_open: bool = False,
  hi_open: bool = False,
) -> float:
  v = _get(cfg, field)
  if _is_bool(v) or not isinstance(v, numbers.Real):
    raise error(field, f"must be a number, got {v!r}")
  v = float(v)
  text = (
    f"{'(' if lo_open else '['}{'-inf' if lo is None else f'{lo:g}'}, "
    f"{'inf' if hi is None else f'{hi:g}'}{')' if hi_open or hi is None else ']'}"
  )
  if not math.isfinite(v):
    raise error(field, f"must be a finite number in {text}, got {v}")
  if (lo is not None and (v < lo or (lo_open and v == lo))) or (
    hi is not None and (v > hi or (hi_open and v == hi))
  ):
    raise error(field, f"must be in {text}, got {v:g}")
  return v


def _flag(cfg: Mapping, field: str, optional: bool = False) -> bool | None:
  v = _get(cfg, field)
  if optional and v is None:
    return None
  if not _is_bool(v):
    raise error(
      field, f"must be true or false{' (or null: automatic)' if optional else ''}, got {v!r}"
    )
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


def _fill(cfg: Any, default: Mapping, prefix: str, open_: tuple = _OPEN) -> dict:
  """``cfg`` with missing keys from ``default``; unknown keys are errors with a hint.

  Sections named in ``open_`` are taken as they are (their own checks follow).
  """
  if not isinstance(cfg, Mapping):
    raise ValueError(
      f"{prefix or 'config'}: must be a dict of fields, got {type(cfg).__name__} {cfg!r}"[:200]
    )
  out = {}
  for key, value in cfg.items():
    name = f"{prefix}.{key}" if prefix else str(key)
    if key not in default:
      close = difflib.get_close_matches(str(key), list(default), n=1)
      hint = f"; did you mean {close[0]!r}?" if close else f"; allowed: {', '.join(default)}"
      raise ValueError(f"config.{name}: unknown field{hint}")
    if isinstance(default[key], dict) and key not in open_:
      value = _fill(value, default[key], name)
    out[key] = value
  for key, value in default.items():
    out.setdefault(key, copy.deepcopy(value))
  return out


def _check_data_section(cfg: dict[str, Any]) -> None:
  """``config.data``'s fields (its ``source`` is checked with the other names of code)."""
  if not isinstance(cfg["data"]["data_dir"], str):
    raise error("data.data_dir", f"must be a path string, got {cfg['data']['data_dir']!r}")
  image_size = _int(cfg, "data.image_size", 0)
  if 0 < image_size < 8:
    raise error("data.image_size", f"must be 0 (the source's own size) or >= 8, got {image_size}")
  _float(cfg, "data.val_fraction", 0.0, 1.0, lo_open=True, hi_open=True)
  _float(cfg, "data.test_fraction", 0.0, 1.0, hi_open=True)
  if cfg["data"]["val_fraction"] + cfg["data"]["test_fraction"] >= 1.0:
    raise error(
      "data.test_fraction",
      "val_fraction + test_fraction must be < 1, got "
      f"{cfg['data']['val_fraction']:g} + {cfg['data']['test_fraction']:g}",
    )
  _int(cfg, "data.max_train", 0)
  _int(cfg, "data.num_classes", 0)
  _choice(cfg, "data.task", TASKS)


def _check_model_section(cfg: dict[str, Any]) -> None:
  """``config.model``: a factory's import string and the structural values."""
  if _string(cfg, "model.factory"):
    check_import_string(cfg["model"]["factory"], "model.factory")
  for name, value in cfg["model"].items():
    if name == "factory":
      continue
    if not isinstance(name, str) or not name.isidentifier():
      raise error(
        "model", f"field names must be identifiers (the factory's arguments), got {name!r}"
      )
    if name in hp_lib.BUILTIN:
      hp_lib.BUILTIN[name].check(value, f"config.model.{name}")
    elif not isinstance(value, (numbers.Real, str)):  # a bool is a Real
      raise error(
        f"model.{name}",
        f"must be a number, a string or true/false (a structural "
        f"argument of the model factory), got {value!r}",
      )


def _check_code_names(cfg: dict[str, Any]) -> None:
  """``data.source``, ``loss`` and ``metric``: a built-in name or an import string."""
  source = _string(cfg, "data.source")
  if is_import_string(source):
    check_import_string(source, "data.source")
  elif ":" not in source and source.strip().lower().replace("-", "_") not in _SOURCES:
    raise error(
      "data.source",
      f"unknown value {source!r}; allowed: {', '.join(_SOURCES)}, "
      "npz:PATH, tfds:NAME, or an import string 'module.path:function'",
    )
  for field, builtin in (("loss", hp_lib.BUILTIN["loss"].choices), ("metric", METRICS)):
    value = _string(cfg, field)
    if value and not is_import_string(value) and value not in builtin:
      raise error(
        field,
        f'unknown value {value!r}; allowed: "" (the default), '
        f"{', '.join(builtin)}, or an import string 'module.path:name'",
      )
    if is_import_string(value):
      check_import_string(value, field)


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
  raw = _plain(config)
  # A user's model: the section holds its own structural arguments, so no
  # built-in name is filled in and any identifier is allowed.
  user_model = (
    isinstance(raw, Mapping)
    and isinstance(raw.get("model"), Mapping)
    and raw["model"].get("factory", "") != ""
  )
  cfg = _fill(raw, _DEFAULTS, "", _OPEN + (("model",) if user_model else ()))
  _int(cfg, "seed", 0)
  _int(cfg, "population", 1)
  _int(cfg, "epochs", 1)
  _int(cfg, "batch_size", 1)
  _int(cfg, "eval_batch_size", 1)
  _check_data_section(cfg)
  _string(cfg, "fitness")
  _check_model_section(cfg)
  _check_code_names(cfg)
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


# ---------------------------------------------------------------------------
# Import strings: a user's code named by the config.


def is_import_string(value: Any) -> bool:
  """Whether a config string names the user's code (``"module.path:name"``).

  ``npz:PATH`` and ``tfds:NAME`` are built-in data sources, not import strings.
  """
  return (
    isinstance(value, str)
    and ":" in value
    and value.split(":", 1)[0].strip().lower() not in _SOURCE_PREFIXES
  )


def check_import_string(value: str, field: str) -> tuple[str, str]:
  """The module and attribute path of an import string; one line naming ``field`` if malformed.

  Nothing is imported here.
  """
  example = "e.g. 'my_models:CNN'" if field == "model.factory" else "e.g. 'my_code:my_function'"
  if ":" not in value:
    raise error(field, f"{value!r} is not an import string; write 'module.path:name' ({example})")
  module, _, attr = value.partition(":")
  if not all(p.isidentifier() for p in module.split(".")) or not all(
    p.isidentifier() for p in attr.split(".")
  ):
    raise error(
      field,
      f"{value!r} is not an import string: the module path and the name must "
      f"be dotted Python identifiers, 'module.path:name' ({example})",
    )
  return module, attr


def exception_line(e: BaseException) -> str:
  """``Type: first line of the message (FILE, line N)``: a user's exception on one line.

  The place is the innermost frame outside Python's import machinery (for a
  syntax error, the offending line).
  """
  text = e.msg if isinstance(e, SyntaxError) and e.msg else str(e)
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  out = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
  if isinstance(e, SyntaxError) and e.filename:
    return f"{out} ({e.filename}, line {e.lineno})"
  frames = [
    f
    for f in traceback.extract_tb(e.__traceback__)
    if not f.filename.startswith("<frozen") and "importlib" not in f.filename
  ]
  return f"{out} ({frames[-1].filename}, line {frames[-1].lineno})" if frames else out


def import_object(value: str, field: str) -> Any:
  """Imports what the import string ``value`` of config field ``field`` names.

  The module is imported as Python imports any module (from the current
  directory, ``PYTHONPATH`` and installed packages): this runs the user's
  own code, as a Python config file does (docs/security.md).

  Args:
    value: ``"module.path:name"`` (``name`` may be dotted: ``Class.attr``).
    field: the config field, for messages (``model.factory``).

  Returns:
    The object.

  Raises:
    ValueError: one line naming ``config.FIELD``: a malformed string, a
      module that does not exist, a module that exists but raised while it
      was imported (its exception, file and line), or a missing attribute
      (with the closest name).
  """
  module_name, attr = check_import_string(value, field)
  try:
    module = importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    missing = e.name or ""
    if missing and (module_name == missing or module_name.startswith(missing + ".")):
      raise error(
        field,
        f"{value!r}: no module named {missing!r} on the Python path (the "
        "current directory, PYTHONPATH, installed packages)",
      ) from None
    # The module was found; something it imports was not.
    raise error(
      field,
      f"{value!r}: module {module_name!r} was found but importing it failed: {exception_line(e)}",
    ) from None
  except Exception as e:  # noqa: BLE001
    # The user's module ran and raised: its own error, where it happened.
    raise error(
      field,
      f"{value!r}: module {module_name!r} was found but importing it failed: {exception_line(e)}",
    ) from None
  obj, path = module, module_name
  for part in attr.split("."):
    try:
      obj = getattr(obj, part)
    except AttributeError:
      names = [n for n in dir(obj) if not n.startswith("_")]
      close = difflib.get_close_matches(part, names, n=1)
      hint = f"; did you mean {close[0]!r}?" if close else ""
      raise error(field, f"{value!r}: {path!r} has no attribute {part!r}{hint}") from None
    path = f"{path}.{part}"
  return obj


def describe(obj: Any) -> str:
  """What an imported object is, for messages (``a module``, ``an int``)."""
  name = "module" if isinstance(obj, type(sys)) else type(obj).__name__
  return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


# The sources whose images are known without reading a file: (examples or
# None, height, width, channels). Images are uint8, one byte per value.
_IMAGES = {
  "digits": (1797, 8, 8, 1),
  "mnist": (None, 28, 28, 1),
  "fashion_mnist": (None, 28, 28, 1),
  "cifar10": (None, 32, 32, 3),
}


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
    raise error(
      "data.image_size",
      f"{size} makes each image {_bytes(per_example)} ({size} x "
      f"{size} x {channels} bytes), and the dataset and the evaluation splits padded to "
      f"eval_batch_size hold at least {rows} images: {_bytes(total)}, {have}",
    )
  raise error(
    "eval_batch_size",
    f"{evals} pads the validation and test splits to at least "
    f"{evals} examples each (2 x {evals} x {per_example + 8} bytes): "
    f"{_bytes(2 * evals * (per_example + 8))}, {have}",
  )


def with_new_fields(old: Mapping[str, Any]) -> dict[str, Any]:
  """A ``config.json`` written before the import strings, with their defaults added.

  A workdir started by an older hpjax resumes: its config lacks
  ``model.factory``, ``loss`` and ``metric``, which then meant their defaults.
  """
  out = copy.deepcopy(dict(old))
  for key in ("loss", "metric"):
    out.setdefault(key, "")
  if isinstance(out.get("model"), dict):
    out["model"].setdefault("factory", "")
  return out


def diff(old: Mapping[str, Any], new: Mapping[str, Any], ignore=RESUME_FREE) -> list[str]:
  """The dotted fields whose values differ between two configs (``ignore``-d aside)."""
  from hpjax import checkpoint  # pylint: disable=g-import-not-at-top

  return checkpoint.diff_configs(old, new, ignore=ignore)

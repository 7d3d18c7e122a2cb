"""hpjax: tune hyperparameters by training a whole population at once.

One call tunes your own Flax NNX model on your own data::

  results = hpjax.tune(MyModel, (x, y), {"learning_rate": hpjax.Float(1e-4, 1e-1, log=True)},
                       population=32, epochs=10, controller=hpjax.PBT())

Members are vmapped and jit-compiled together (:mod:`hpjax.engine`), a
controller (:mod:`hpjax.controllers`) prunes, copies and perturbs them between
epochs, and a whole population is checkpointed and resumed
(:mod:`hpjax.tuner`). ``docs/architecture.md`` maps the modules.

The names below are imported on first use (PEP 562), so ``import hpjax`` is
cheap: a launcher can install its signal handlers before JAX loads.
"""

import importlib

__version__ = "0.2.0"

# Public name -> the module that defines it.
_EXPORTS = {
  "Choice": "hpjax.space",
  "Fixed": "hpjax.space",
  "Float": "hpjax.space",
  "Int": "hpjax.space",
  "DataError": "hpjax.data",
  "Dataset": "hpjax.data",
  "dataset_from_arrays": "hpjax.data",
  "load_dataset": "hpjax.data",
  "EpochSchedule": "hpjax.optim",
  "GroupSpec": "hpjax.engine",
  "PopulationState": "hpjax.engine",
  "group_functions": "hpjax.engine",
  "HParams": "hpjax.hparams",
  "TracedChoice": "hpjax.hparams",
  "Halving": "hpjax.controllers",
  "PBT": "hpjax.controllers",
  "Sweep": "hpjax.controllers",
  "PBTHalving": "hpjax.controllers",
  "Member": "hpjax.population",
  "Population": "hpjax.population",
  "Metric": "hpjax.fitness",
  "Results": "hpjax.results",
  "load_results": "hpjax.results",
  "tune": "hpjax.tuner",
}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605 - a list, built from the one table of names


def __getattr__(name: str):
  """Imports a public name, or a submodule (``hpjax.engine``), on first use."""
  if name in _EXPORTS:
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
  else:
    try:
      value = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
      if e.name != f"{__name__}.{name}":
        raise
      raise AttributeError(f"module 'hpjax' has no attribute {name!r}") from None
  globals()[name] = value
  return value


def __dir__():
  return sorted(set(globals()) | set(_EXPORTS))

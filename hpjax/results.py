"""What a tuning run returns: the best member, every member-epoch, the best model.

The launcher writes the same workdir. :func:`hpjax.tune` returns a
:class:`Results`; :func:`load_results` opens any workdir, finished, running or
killed::

  results = hpjax.tune(MyCNN, (x, y), space, controller=hpjax.PBT())
  results.best.hparams, results.best.val, results.best.test
  results.dataframe()            # one row per member and epoch (pandas)
  model = results.best_model()   # an NNX module, ready to call
  results.predict(x_new)         # the best model's outputs on raw inputs
  results.plot()                 # PNGs in WORKDIR/plots
  results.lineage(), results.schedule()
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import dataclasses
import json
import os
from typing import Any

from flax import nnx
import jax
import numpy as np

from hpjax import checkpoint
from hpjax import engine
from hpjax import lineage
from hpjax.data import normalize


@dataclasses.dataclass(frozen=True)
class Best:
  """The best member of a finished run.

  Attributes:
    member: its id.
    hparams: its hyperparameters at the end (choices by name).
    val: its validation metrics (``loss`` and the run's metric).
    test: the same on the test split.
    fitness: the ranked metric's name; ``mode`` its direction.
  """

  member: int
  hparams: dict
  val: dict
  test: dict
  fitness: str
  mode: str


class Results:
  """A finished run: its summary, its files, and (in the process that ran it) its population.

  Args:
    workdir: the run's directory.
    summary: ``summary.json``'s dict.
    population: the trained :class:`hpjax.Population`, or None when loaded
      from disk.
    model: the model factory, needed to rebuild the best model from disk
      (default: the built-in families).
  """

  def __init__(
    self,
    workdir: str,
    summary: Mapping[str, Any],
    population=None,
    model: Callable[..., nnx.Module] | None = None,
  ):
    self.workdir = os.path.abspath(workdir)
    self.summary = dict(summary)
    self.population = population
    self._model = model

  @classmethod
  def load(cls, workdir: str, model: Callable[..., nnx.Module] | None = None) -> "Results":
    """The results of the run in ``workdir``: finished, still running or killed.

    A finished run is read from ``summary.json``; an unfinished one from its
    logs (the best member at the last complete epoch; no test metrics and
    no exported model yet).

    Args:
      workdir: the run's directory.
      model: the model factory, to rebuild a user's model from disk.

    Raises:
      ValueError: the workdir holds no run (no readable logs).
    """
    path = os.path.join(workdir, "summary.json")
    if os.path.exists(path):
      try:
        with open(path) as f:
          return cls(workdir, json.load(f), model=model)
      except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot be read ({e})") from None
    from hpjax import report  # pylint: disable=g-import-not-at-top

    try:
      partial = report.summarize(report.load_run(workdir))
    except (report.ReportError, KeyError, ValueError) as e:
      raise ValueError(f"{workdir}: no run to load ({e})") from None
    summary = {
      "status": "partial",
      "best_member": partial["best_member"],
      "hyperparameters": partial["hyperparameters"] or {},
      "val": partial["val"],
      "test": {},
      "fitness": partial["fitness"],
      "mode": partial["mode"],
      "epochs": partial["epochs_done"],
      "ranking": [r["member"] for r in partial["ranking"]],
    }
    return cls(workdir, summary, model=model)

  @property
  def finished(self) -> bool:
    """Whether the run reached its last epoch (and exported its best model)."""
    return self.summary.get("status") != "partial"

  def lineage(self) -> list[dict]:
    """Every copy (PBT's exploit and explore) and pruning, in order (``lineage.jsonl``)."""
    return lineage.read_jsonl(os.path.join(self.workdir, "lineage.jsonl"))

  def schedule(self) -> dict:
    """The best member's hyperparameters epoch by epoch (``best/schedule.json``), for replay."""
    path = os.path.join(self.workdir, "best", "schedule.json")
    if not os.path.exists(path):
      raise ValueError(f"{path}: no schedule ({self._unfinished()})")
    with open(path) as f:
      return json.load(f)

  def _unfinished(self) -> str:
    return (
      "the run has not finished: its best model and schedule are exported at the end; "
      "resume it to finish"
      if not self.finished
      else "not exported"
    )

  @property
  def best(self) -> Best:
    """The best member at the end of the run (by the run's fitness and direction)."""
    s = self.summary
    return Best(
      member=int(s["best_member"]),
      hparams=dict(s["hyperparameters"]),
      val=dict(s["val"]),
      test=dict(s.get("test") or {}),
      fitness=s["fitness"],
      mode=s.get("mode", "max"),
    )

  def dataframe(self):
    """Every member-epoch as a ``pandas.DataFrame``.

    Columns: ``epoch``, ``member``, the train and validation metrics
    (``train_loss``, ``val_accuracy``, ...), ``wall_s``, and one column per
    hyperparameter the member trained with that epoch.
    """
    import pandas as pd  # pylint: disable=g-import-not-at-top

    rows = []
    for r in lineage.read_jsonl(os.path.join(self.workdir, "metrics.jsonl")):
      hp = r.pop("hparams", {}) or {}
      flat = {}
      for k, v in hp.items():
        if isinstance(v, Mapping):  # rows of runs logged by hpjax < 0.2
          flat.update(v)
        else:
          flat[k] = v
      rows.append({**r, **flat})
    return pd.DataFrame(rows)

  def best_model(self) -> nnx.Module:
    """The best member's model: an NNX module in eval mode, called on normalized inputs.

    Use :meth:`predict` for raw inputs (it normalizes them as training did,
    and maps regression predictions back from the standardized targets the
    model trained on to the targets' units).
    """
    if self.population is not None:
      pop = self.population
      position = int(self.summary["ranking_positions"][0])
      return pop.member_model(position)
    if not self.finished:
      raise ValueError(f"{self.workdir}: {self._unfinished()}")
    return self._load_model()[0]

  def _load_model(self):
    """The exported best model (``WORKDIR/best/model``) rebuilt with the model factory."""
    params, state, meta = checkpoint.load_model(os.path.join(self.workdir, "best", "model"))
    from hpjax import models  # pylint: disable=g-import-not-at-top

    factory = self._model or models.builtin
    structural = tuple(meta.get("structural", {}).items())
    spec = engine.GroupSpec(
      model=factory,
      structural=structural,
      batch_size=1,
      input_shape=tuple(meta["input_shape"]),
      num_outputs=int(meta["num_outputs"]),
      task=meta["task"],
      traced=(),
      loss=None,
      metrics=(),
      val_loss=None,
    )
    lead = jax.tree.map(lambda a: np.asarray(a)[None], {"params": params, "state": state})
    host = engine.PopulationState(
      params=lead["params"],
      model_state=lead["state"],
      opt_state=None,
      hparams={},
      key=None,
      epoch=None,
    )
    return engine.model_of(spec, host, 0), meta

  def predict(self, x) -> np.ndarray:
    """The best model's outputs on raw inputs ``x``: logits, or regression predictions.

    ``x`` is in the stored units of the run's data (e.g. uint8 images, at
    the size the run trained on); it is normalized with the training split's
    statistics, as in training. Regression predictions come back ``[N, 1]``
    in the targets' original units: the run trained on targets standardized
    with the training split's mean and std (its reported MSEs are in those
    standardized units), and the prediction is mapped back with them.

    Raises:
      ValueError: ``x``'s examples are not of the shape the model trained on
        (one line naming both).
    """
    if self.population is not None:
      pop = self.population
      shape, task = tuple(pop.data.input_shape), pop.data.task
      y_mean, y_std = pop.data.y_mean, pop.data.y_std
    else:
      if not self.finished:
        raise ValueError(f"{self.workdir}: {self._unfinished()}")
      model, meta = self._load_model()
      shape, task = tuple(meta["input_shape"]), meta["task"]
      # An export of an older hpjax has no target statistics: standardized units.
      y_mean, y_std = meta.get("y_mean", 0.0), meta.get("y_std", 1.0)
    if tuple(np.shape(x)[1:]) != shape:
      raise ValueError(
        f"predict: x holds examples of shape {tuple(np.shape(x)[1:])}; the model trained on "
        f"{shape} (the run's stored units and size, e.g. after config.data.image_size)"
      )
    if self.population is not None:
      position = int(self.summary["ranking_positions"][0])
      g = next(g for g in pop.groups if position in g.members)
      out = np.asarray(g.fns.predict(g.state, x)[g.members.index(position)])
    else:
      out = np.asarray(_call(model, normalize(x, meta["mean"], meta["std"]), meta))
    if task != "regression":
      return out
    # As the run saw them ([N] predictions are [N, 1]), in the targets' units.
    return out.reshape(len(out), 1) * np.float32(y_std) + np.float32(y_mean)

  def plot(self) -> list[str]:
    """Writes the report's plots (``WORKDIR/plots/*.png``) and returns their paths."""
    from hpjax import report  # pylint: disable=g-import-not-at-top

    return report.build_report(self.workdir)["plots"]

  def table(self, top: int = 10) -> str:
    """The ranking table as text."""
    from hpjax import report  # pylint: disable=g-import-not-at-top

    return report.format_table(report.summarize(report.load_run(self.workdir)), top=top)

  def __repr__(self) -> str:
    b = self.best
    return (
      f"Results(workdir={self.workdir!r}, best member {b.member}: val "
      + ", ".join(f"{k}={v:.4g}" for k, v in b.val.items())
      + ")"
    )


def _call(model: nnx.Module, x, meta: Mapping[str, Any]):
  """Calls an exported model in eval mode with its recorded hyperparameters."""
  from hpjax import hparams as hp_lib  # pylint: disable=g-import-not-at-top

  values = {}
  choices = meta.get("choices") or {}
  for k, v in meta["hyperparameters"].items():
    # As training gave them: a traced choice as a TracedChoice among its
    # candidates (an export of an older hpjax lists none: the value alone).
    if k in choices and v in choices[k]:
      values[k] = hp_lib.TracedChoice(choices[k].index(v), choices[k])
    else:
      values[k] = hp_lib.TracedChoice(0, (v,)) if isinstance(v, (str, bool)) else v
  if engine._takes_hparams(model):  # pylint: disable=protected-access
    return model(x, hp_lib.HParams(values, train=False))
  return model(x)


def load_results(workdir: str, model: Callable[..., nnx.Module] | None = None) -> Results:
  """The results of the run in ``workdir``, finished, running or killed (:meth:`Results.load`)."""
  return Results.load(workdir, model=model)

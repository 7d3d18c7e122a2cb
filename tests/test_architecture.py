"""The worked examples of docs/architecture.md: a hyperparameter, a controller, a
model family and a writer, each added without touching the loop."""

import dataclasses

from flax import nnx
import jax
import numpy as np
import pytest

import hpjax
from hpjax import hparams as hp_lib
from hpjax import models

DATA = dict(data="digits", population=4, epochs=2, batch_size=32, log=lambda s: None)


class Tiny(nnx.Module):
  """A small model that reads a built-in hyperparameter added by a test."""

  def __init__(self, *, input_shape, num_outputs, rngs, **unused):
    del unused
    self.out = nnx.Linear(int(np.prod(input_shape)), num_outputs, rngs=rngs)

  def __call__(self, x, hp):
    if hp.train:
      x = x + hp["input_noise"] * jax.random.normal(hp.next_key(), x.shape)
    return self.out(x.reshape(x.shape[0], -1))


@pytest.fixture
def input_noise(monkeypatch):
  """The table entry of the doc's example, added for one test."""
  entry = hp_lib._float(
    "input_noise",
    0.0,
    0.0,
    role="model",  # pylint: disable=protected-access
    doc="std of Gaussian noise on the inputs",
  )
  monkeypatch.setitem(hp_lib.BUILTIN, "input_noise", entry)
  return entry


def test_a_built_in_hyperparameter_is_one_entry_plus_its_use(input_noise, tmp_path):
  del input_noise
  data = hpjax.load_dataset("digits", seed=0, max_train=128)
  pop = hpjax.Population([{"input_noise": v} for v in (0.0, 0.5)], data, model=Tiny, mesh=None)
  assert pop.hparams()[1]["input_noise"] == 0.5  # traced, in the state
  assert "input_noise" in pop.groups[0].state.hparams and len(pop.groups) == 1
  with pytest.raises(ValueError, match=r"input_noise: must be in \[0, inf\)"):
    hpjax.Population([{"input_noise": -1.0}], data, model=Tiny, mesh=None)
  results = hpjax.tune(
    Tiny,
    **{**DATA, "data": data},
    workdir=str(tmp_path / "run"),
    space={"input_noise": hpjax.Float(0.0, 1.0)},
    controller=hpjax.PBT(),
  )
  df = results.dataframe()
  assert df["input_noise"].between(0.0, 1.0).all() and df["input_noise"].nunique() > 4


@dataclasses.dataclass(frozen=True)
class DropWorst(hpjax.controllers.Controller):
  """The doc's controller: drops the worst member after every epoch until ``keep`` remain."""

  name = "drop_worst"
  keep: int = 2

  def acts_at(self, epoch):
    return True

  def decide(self, view):
    order = hpjax.fitness.rank(view.fitness, view.mode)  # best first
    if len(order) <= self.keep:
      return hpjax.controllers.Decision()
    survivors = np.sort(order[:-1])
    return hpjax.controllers.Decision(
      keep=survivors,
      events=[{"event": "pruned", "member": int(order[-1])}],
      note=f"dropped 1, {len(survivors)} left",
    )


class BestPerEpoch(hpjax.writers.Writer):
  """The doc's writer: the best fitness of every epoch."""

  def __init__(self):
    self.rows = []

  def epoch(self, record):
    self.rows.append((record.epoch, float(record.fitness[record.best_position])))


def test_a_controller_and_a_writer_join_a_run_without_touching_the_loop(tmp_path):
  best = BestPerEpoch()
  results = hpjax.tune(
    None,
    **{**DATA, "epochs": 3},
    workdir=str(tmp_path / "run"),
    space={"learning_rate": hpjax.Float(1e-3, 1e-1, log=True), "width": hpjax.Fixed(4)},
    controller=DropWorst(keep=2),
    writers=[best],
  )
  assert results.summary["members_at_end"] == 2  # 4 -> 3 -> 2 (none after the last epoch)
  df = results.dataframe()
  assert df.groupby("epoch").size().tolist() == [4, 3, 2]
  assert [e for e, _ in best.rows] == [1, 2, 3]
  assert best.rows[-1][1] == pytest.approx(df[df.epoch == 3]["val_accuracy"].max())


class TinyNet(nnx.Module):
  """The doc's new family: a one-layer network over flattened inputs."""

  def __init__(self, arch, *, input_shape, num_outputs, rngs):
    self.hidden = nnx.Linear(int(np.prod(input_shape)), arch.width, rngs=rngs)
    self.out = nnx.Linear(arch.width, num_outputs, rngs=rngs)

  def __call__(self, x, hp):
    return self.out(self.hidden(x.reshape(x.shape[0], -1)))


def test_a_model_family_is_one_registry_entry(monkeypatch):
  monkeypatch.setitem(models.FAMILIES, "tiny", (TinyNet, False))
  # The table's choices follow FAMILIES (at import; here re-derived for the test).
  monkeypatch.setitem(
    hp_lib.BUILTIN,
    "family",
    dataclasses.replace(hp_lib.BUILTIN["family"], choices=tuple(models.FAMILIES)),
  )
  data = hpjax.load_dataset("digits", seed=0, max_train=128)
  pop = hpjax.Population(
    [{"family": "tiny", "width": 3}, {"family": "vgg", "width": 4, "depth": 1}], data, mesh=None
  )
  assert len(pop.groups) == 2 and isinstance(pop.member_model(0), TinyNet)
  assert pop.member_model(0).hidden.kernel.shape == (64, 3)  # built from its Arch
  assert np.isfinite(pop.train_epoch()["train_loss"]).all()

"""How a user's model is called, and what its hyperparameters are, as a plain loop would have them.

A user's ``__call__`` and ``hp`` reads must mean in the population what
they mean in the user's own loop: an option with a default is not a slot for
the hyperparameters, a traced choice compares like its value (on the
device) or refuses a Python truth test, an exported model receives its
values as training gave them, and a name read only at evaluation is read.
"""

from flax import nnx
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hpjax
from hpjax import engine


@pytest.fixture(scope="module")
def data():
  return hpjax.load_dataset("digits", seed=0, max_train=64)


def _ce(out, y, hp):
  del hp
  return optax.softmax_cross_entropy_with_integer_labels(out, y)


@pytest.mark.parametrize(
  "signature,takes",
  [
    ("x, hp", True),
    ("x, hp=None", True),
    ("x, hparams", True),
    ("x, *rest", True),
    ("x, train=False", False),
    ("x, deterministic=None", False),
    ("x, mask=None, hp=None", True),
    ("x", False),
  ],
)
def test_only_a_second_parameter_without_a_default_or_named_hp_takes_the_hyperparameters(
  signature, takes
):
  namespace = {}
  exec(f"class M:\n  def __call__(self, {signature}):\n    pass", namespace)
  assert engine._takes_hparams(namespace["M"]()) is takes  # pylint: disable=protected-access


class _Flagged(nnx.Module):
  """Its own ``train`` option: hpjax must call it as ``model(x)`` (train stays False)."""

  def __init__(self, *, rngs):
    self.lin = nnx.Linear(64, 10, rngs=rngs)

  def __call__(self, x, train=False):
    if train is not False:  # it was handed the (truthy) hyperparameters
      raise AssertionError(f"train={train!r}")
    return self.lin(x.reshape(x.shape[0], -1))


def test_a_models_own_option_with_a_default_is_left_at_its_default(data):
  pop = hpjax.Population(
    [dict(learning_rate=0.1, batch_size=16)], data, model=_Flagged, loss=_ce, seed=0, mesh=None
  )
  assert np.isfinite(pop.train_epoch()["train_loss"]).all()
  assert np.isfinite(pop.evaluate("val")["loss"]).all()


class _Mode(nnx.Module):
  """A user's own string and bool choices, read by comparison (``==``) or ``.is_``."""

  def __init__(self, *, rngs, by="eq"):
    self.by = by
    self.l1 = nnx.Linear(64, 16, rngs=rngs)
    self.out = nnx.Linear(16, 10, rngs=rngs)

  def __call__(self, x, hp):
    h = self.l1(x.reshape(x.shape[0], -1))
    if self.by == "eq":
      tanh, skip = hp["mode"] == "tanh", hp["skip"] == True  # noqa: E712 - the user's way
    else:
      tanh, skip = hp["mode"].is_("tanh"), hp["skip"].is_(True)
    h = jnp.where(tanh, jnp.tanh(h), nnx.relu(h))
    return self.out(jnp.where(skip, h * 0.5, h))


_SPACE = {"mode": hpjax.Choice(["relu", "tanh"]), "skip": hpjax.Choice([False, True])}
_MEMBERS = [
  dict(mode="tanh", skip=False, learning_rate=0.05, batch_size=16),
  dict(mode="relu", skip=True, learning_rate=0.05, batch_size=16),
]


def test_a_traced_choice_compares_like_its_value_on_the_device(data):
  # hp["mode"] == "tanh" was always False (a Python object against a string):
  # both members trained relu. It now equals .is_("tanh"), the documented way.
  losses = {}
  for by in ("eq", "is_"):
    space = {**_SPACE, "by": hpjax.Choice([by], structural=True)}
    pop = hpjax.Population(
      [dict(m, by=by) for m in _MEMBERS],
      data,
      model=_Mode,
      space=space,
      loss=_ce,
      seed=0,
      mesh=None,
    )
    losses[by] = [np.asarray(pop.train_epoch()["train_loss"]) for _ in range(2)]
  np.testing.assert_array_equal(losses["eq"], losses["is_"])
  choice = hpjax.TracedChoice(jnp.int32(1), ("relu", "tanh"))
  assert bool(choice == "tanh") and not bool(choice != "tanh")
  with pytest.raises(ValueError, match=r"'gelu' is not among this traced choice's values"):
    choice == "gelu"  # noqa: B015 - a typo is an error, not False
  with pytest.raises(TypeError, match=r"no Python truth value .* hp\[name\].is_\(value\)"):
    bool(choice)


def test_an_exported_model_gets_a_bool_choice_as_training_gave_it(data, tmp_path):
  space = {**_SPACE, "by": hpjax.Choice(["is_"], structural=True)}
  live = hpjax.tune(
    _Mode,
    data,
    space,
    members=[dict(m, by="is_") for m in _MEMBERS],
    loss=_ce,
    epochs=1,
    workdir=str(tmp_path / "run"),
    log=lambda s: None,
  )
  x = np.asarray(data.x_val[:8])
  again = hpjax.load_results(str(tmp_path / "run"), model=_Mode)
  np.testing.assert_allclose(again.predict(x), live.predict(x), rtol=1e-5, atol=1e-5)


class _Tempered(nnx.Module):
  """Reads its own ``temperature`` only when evaluating."""

  def __init__(self, *, rngs):
    self.lin = nnx.Linear(64, 10, rngs=rngs)

  def __call__(self, x, hp):
    out = self.lin(x.reshape(x.shape[0], -1))
    return out if hp.train else out / hp["temperature"]


def test_a_name_the_model_reads_only_at_evaluation_is_accepted_and_applied(data):
  members = [dict(temperature=t, learning_rate=0.1, batch_size=16) for t in (1.0, 4.0)]
  pop = hpjax.Population(
    members,
    data,
    model=_Tempered,
    space={"temperature": hpjax.Float(0.5, 5.0)},
    loss=_ce,
    seed=0,
    mesh=None,
  )
  g = pop.groups[0]
  logits = np.asarray(g.fns.predict(g.state, data.x_val), np.float64)
  # The eval logits of member 1 are its raw ones over 4: recompute them raw.
  model = pop.member_model(1)
  x = hpjax.data.normalize(np.asarray(data.x_val), data.mean, data.std)
  raw = np.asarray(model.lin(jnp.reshape(x, (x.shape[0], -1))), np.float64)
  np.testing.assert_allclose(logits[1], raw / 4.0, rtol=1e-5, atol=1e-6)

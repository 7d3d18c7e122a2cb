"""Losses and metrics against numpy on the members' own predictions.

Every reference here is computed from scratch: ``predict`` gives each
member's outputs on a split, and numpy computes the loss or metric over the
split's real examples. The splits are tiny and their lengths are not whole
evaluation chunks, so the engine pads them (x = 0, y = 0): padding must count
for nothing, whatever a metric computes on it.
"""

from flax import nnx
import jax.numpy as jnp
import numpy as np
import pytest

import hpjax

FEATURES, TRAIN, VAL, TEST = 4, 32, 13, 7
# 13 validation examples in chunks of 8: one chunk of 8, one of 5 + 3 padding.
EVAL_BATCH = 8


class Linear(nnx.Module):
  """A user's linear model; ``squeeze``: regression predictions ``[B]``, not ``[B, 1]``."""

  def __init__(self, input_shape, num_outputs, *, rngs, squeeze=False, extra=0):
    self.squeeze = squeeze
    self.lin = nnx.Linear(int(np.prod(input_shape)), num_outputs + extra, rngs=rngs)

  def __call__(self, x):
    out = self.lin(x.reshape(x.shape[0], -1))
    return out[:, 0] if self.squeeze else out


def _split(rng, n, task):
  x = rng.normal(size=(n, FEATURES)).astype(np.float32)
  if task == "regression":
    return x, (2.0 + np.tanh(x[:, 0] + x[:, 1])).astype(np.float32)
  return x, (np.arange(n) % 3).astype(np.int32)


def _data(task):
  rng = np.random.default_rng(0)
  (xt, yt), (xv, yv), (xs, ys) = (_split(rng, n, task) for n in (TRAIN, VAL, TEST))
  return hpjax.data.dataset_from_arrays(task, xt, yt, xs, ys, x_val=xv, y_val=yv, seed=0)


@pytest.fixture(scope="module")
def regression():
  return _data("regression")


@pytest.fixture(scope="module")
def classification():
  return _data("classification")


def _population(data, metric=None, eval_batch_size=EVAL_BATCH, model_args=None, **hparams):
  """Two members of :class:`Linear` (``model_args``: its structural arguments)."""
  model_args = model_args or {}
  # One full-batch step per epoch: an epoch's training loss is the loss of
  # the members' parameters before the epoch, on the whole training set.
  members = [dict(learning_rate=lr, batch_size=TRAIN, **hparams, **model_args) for lr in (0.0, 0.3)]
  space = {k: hpjax.Choice((v,), structural=True) for k, v in model_args.items()}
  return hpjax.Population(
    members,
    data,
    model=Linear,
    space=space,
    metric=metric,
    seed=0,
    mesh=None,
    eval_batch_size=eval_batch_size,
  )


def _predictions(pop, x):
  """Each member's predictions ``[P, N]`` (regression) on ``x``."""
  g = pop.groups[0]
  out = np.asarray(g.fns.predict(g.state, jnp.asarray(x)), np.float64)
  return out.reshape(out.shape[0], x.shape[0])


def _huber(d):
  a = np.abs(d)
  return np.where(a <= 1.0, 0.5 * d * d, a - 0.5)


@pytest.mark.parametrize("squeeze", [True, False], ids=["outputs_B", "outputs_B1"])
@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_regression_losses_and_mse_match_numpy_whatever_the_output_shape(regression, squeeze, loss):
  pop = _population(regression, model_args={"squeeze": squeeze}, loss=loss)
  before = _predictions(pop, regression.x_train)
  train = pop.train_epoch()
  d = before - np.asarray(regression.y_train, np.float64)
  per = np.square(d) if loss == "mse" else _huber(d)
  np.testing.assert_allclose(train["train_loss"], per.mean(-1), rtol=1e-5)
  np.testing.assert_allclose(train["train_mse"], np.square(d).mean(-1), rtol=1e-5)
  val = pop.evaluate("val")
  err = _predictions(pop, regression.x_val) - np.asarray(regression.y_val, np.float64)
  # Validation loss is squared error whatever each member trains with.
  np.testing.assert_allclose(val["loss"], np.square(err).mean(-1), rtol=1e-5)
  np.testing.assert_allclose(val["mse"], np.square(err).mean(-1), rtol=1e-5)


def test_a_metric_non_finite_on_padding_leaves_validation_finite(regression):
  # Relative error: finite on every real example (no standardised target is
  # 0), infinite on a padding row (target 0), which must not turn a member's
  # score into NaN.
  rel = hpjax.Metric("rel", lambda out, y: jnp.abs(out[..., 0] - y) / jnp.abs(y), "min")
  pop = _population(regression, metric=[rel, "mse"])
  pop.train_epoch()
  val = pop.evaluate("val")
  y = np.asarray(regression.y_val, np.float64)
  pred = _predictions(pop, regression.x_val)
  np.testing.assert_allclose(val["rel"], (np.abs(pred - y) / np.abs(y)).mean(-1), rtol=1e-5)
  np.testing.assert_allclose(val["loss"], np.square(pred - y).mean(-1), rtol=1e-5)


def _top2(out, y):
  top = jnp.argsort(out, axis=-1)[..., -2:]
  return jnp.any(top == y[..., None], axis=-1).astype(jnp.float32)


@pytest.mark.parametrize("eval_batch_size", [EVAL_BATCH, 256])
def test_classification_metrics_match_numpy_on_padded_splits(classification, eval_batch_size):
  metric = ["accuracy", hpjax.Metric("top2", _top2, "max")]
  pop = _population(classification, metric=metric, eval_batch_size=eval_batch_size)
  pop.train_epoch()
  g = pop.groups[0]
  for split, x, y in (
    ("val", classification.x_val, classification.y_val),
    ("test", classification.x_test, classification.y_test),
  ):
    got = pop.evaluate(split)
    logits = np.asarray(g.fns.predict(g.state, x), np.float64)
    y = np.asarray(y)
    top2 = (np.argsort(logits, -1)[..., -2:] == y[:, None]).any(-1)
    z = logits - logits.max(-1, keepdims=True)
    nll = np.log(np.exp(z).sum(-1)) - np.take_along_axis(z, y[None, :, None], -1)[..., 0]
    np.testing.assert_allclose(got["accuracy"], (logits.argmax(-1) == y).mean(-1), rtol=1e-6)
    np.testing.assert_allclose(got["top2"], top2.mean(-1), rtol=1e-6)
    np.testing.assert_allclose(got["loss"], nll.mean(-1), rtol=1e-5)


def _batch_accuracy(out, y):
  """A per-batch (scalar) metric: it cannot leave a split's padding out."""
  return jnp.mean((jnp.argmax(out, -1) == y).astype(jnp.float32))


@pytest.mark.parametrize("first", ["train_epoch", "evaluate"])
def test_a_per_batch_metric_is_refused_before_anything_runs(classification, first):
  metric = ["accuracy", hpjax.Metric("batch_acc", _batch_accuracy, "max")]
  pop = _population(classification, metric=metric)
  with pytest.raises(ValueError, match=r"^metric 'batch_acc': .*one value per example") as e:
    getattr(pop, first)()
  assert "\n" not in str(e.value)
  assert int(pop.groups[0].state.epoch[0]) == 0


def test_a_per_batch_validation_loss_is_refused(classification):
  pop = hpjax.Population(
    [dict(learning_rate=0.1, batch_size=TRAIN)],
    classification,
    model=Linear,
    val_loss=lambda out, y: jnp.mean(jnp.square(out)),
    seed=0,
    mesh=None,
    eval_batch_size=EVAL_BATCH,
  )
  with pytest.raises(ValueError, match=r"^val_loss: .*one value per example"):
    pop.evaluate("val")


@pytest.mark.parametrize(
  "task,extra,squeeze,want",
  [
    ("classification", 1, False, r"output shape \(32, 4\); expected \(32, 3\)"),
    ("classification", 0, True, r"output shape \(32,\); expected \(32, 3\)"),
    ("regression", 1, False, r"output shape \(32, 2\); expected \(32,\) or \(32, 1\)"),
  ],
)
def test_a_model_output_of_another_shape_is_refused_while_tracing(task, extra, squeeze, want):
  pop = _population(_data(task), model_args={"extra": extra, "squeeze": squeeze})
  with pytest.raises(ValueError, match="^model: " + want):
    pop.train_epoch()
  assert int(pop.groups[0].state.epoch[0]) == 0


def _squeezed(input_shape, num_outputs, *, rngs):
  return Linear(input_shape, num_outputs, rngs=rngs, squeeze=True)


def test_a_finished_runs_predictions_have_the_shape_and_units_the_run_saw(regression, tmp_path):
  # A regression model returning [B]: the run (and its live predict) sees
  # [B, 1]; the exported model, loaded from disk, predicts the same values
  # in the same shape. Both in the targets' own units: the run trained on
  # targets standardized with the training split's mean and std, and its
  # reported test MSE (in those units) is the predictions' MSE / y_std^2.
  rng = np.random.default_rng(0)  # the arrays _data gave: train, val, test in turn
  x, y = [_split(rng, n, "regression") for n in (TRAIN, VAL, TEST)][2]
  space = {"learning_rate": hpjax.Fixed(0.1)}
  live = hpjax.tune(
    _squeezed,
    regression,
    space,
    population=2,
    epochs=1,
    batch_size=TRAIN,
    workdir=str(tmp_path / "run"),
    log=lambda s: None,
  )
  np.testing.assert_allclose(np.asarray(regression.x_test), x)  # the test split: the arrays given
  want = live.predict(x)
  assert want.shape == (TEST, 1)
  mse = np.mean(np.square(want[:, 0].astype(np.float64) - y)) / regression.y_std**2
  assert live.best.test["mse"] == pytest.approx(mse, rel=1e-4)
  again = hpjax.Results.load(str(tmp_path / "run"), model=_squeezed)
  got = again.predict(x)
  assert got.shape == (TEST, 1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  for results in (live, again):
    with pytest.raises(ValueError, match=r"^predict: x holds examples of shape \(2,\); .* \(4,\)"):
      results.predict(x[:, :2])

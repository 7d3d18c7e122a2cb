"""Training data streamed from the host (hpjax.data.Stream).

The reference for the streamed path is the in-memory path with
``shared_order=True``, fed by a stream that yields the very batches that
path gathers (the same permutation of the same arrays), and a plain
single-model loop (stock nnx and optax) over the stream's batches.
"""

import json
import os
import subprocess
import sys
import textwrap

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hpjax
from hpjax import engine
from hpjax.data import DataError
from hpjax.data import normalize
from hpjax.data import Stream

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(family="vgg", depth=1, width=4, dense=16)
ACTS = ("relu", "tanh", "sigmoid")
B = 32


def _members():
  return [
    hpjax.Member(learning_rate=0.01, optimizer="adam", activation="relu", **TINY),
    hpjax.Member(learning_rate=0.1, optimizer="sgd", activation="tanh", dropout=0.3, **TINY),
    hpjax.Member(learning_rate=0.003, optimizer="rmsprop", activation="sigmoid", **TINY),
    hpjax.Member(learning_rate=0.02, optimizer="nesterov", activation="relu", **TINY),
  ]


class _Batches:
  """``train(epoch)`` of a stream: the batches the in-memory shared order gathers.

  The in-memory path's shared order for epoch ``e`` is the permutation
  drawn from ``fold_in(key(seed), e)``, cut into whole batches. Records the
  epochs it is asked for.
  """

  def __init__(self, data, seed=0, batch_size=B, dtype=None, short=None):
    self.x, self.y = np.asarray(data.x_train), np.asarray(data.y_train)
    self.seed, self.batch_size, self.dtype, self.short = seed, batch_size, dtype, short
    self.steps = self.x.shape[0] // batch_size
    self.asked = []

  def __call__(self, epoch):
    self.asked.append(epoch)
    n, b = self.x.shape[0], self.batch_size
    perm = np.asarray(
      jax.random.permutation(jax.random.fold_in(jax.random.key(self.seed), epoch), n)
    )
    for i in range(self.steps if self.short is None else self.short):
      idx = perm[i * b : (i + 1) * b]
      x = self.x[idx] if self.dtype is None else self.x[idx].astype(self.dtype)
      yield x, self.y[idx]


def _stream(data, train, **kw):
  kw.setdefault("mean", data.mean)
  kw.setdefault("std", data.std)
  return Stream(
    train,
    val=(data.x_val, data.y_val),
    test=(data.x_test, data.y_test),
    steps_per_epoch=train.steps,
    batch_size=train.batch_size,
    **kw,
  )


def _leaves(state):
  return [np.asarray(a) for a in jax.tree.leaves(state)]


@pytest.mark.parametrize("steps_per_call", [1, 3])
def test_streamed_epochs_equal_the_in_memory_shared_order(digits_small, steps_per_call):
  # 8 steps per epoch: in calls of 1, or of 3, 3 and 2 stacked batches.
  train = _Batches(digits_small)
  stream = _stream(digits_small, train, steps_per_call=steps_per_call)
  kw = dict(candidates={"activation": ACTS}, mesh=None)
  ref = hpjax.Population(_members(), digits_small, shared_order=True, **kw)
  got = hpjax.Population(_members(), stream, **kw)
  assert got.groups[0].fns.spec.batch_size == B and got.steps_per_epoch() == 4 * 8
  for _ in range(2):  # the second epoch: the next order, keys split once per epoch
    want_m, got_m = ref.train_epoch(), got.train_epoch()
    for k in want_m:
      np.testing.assert_allclose(got_m[k], want_m[k], rtol=1e-6, err_msg=k)
  assert train.asked == [0, 1]
  # Bit-equal on jax 0.10 CPU (the same step on the same batches, the same
  # keys and schedule); the tolerance leaves XLA room to fuse the two
  # programs differently.
  for a, b in zip(_leaves(ref.groups[0].state), _leaves(got.groups[0].state)):
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(got.groups[0].state.epoch, [2] * 4)
  np.testing.assert_allclose(got.evaluate("val")["accuracy"], ref.evaluate("val")["accuracy"])


class _Net(nnx.Module):
  """A user's model of stock nnx layers: BatchNorm statistics and a Dropout RNG stream."""

  def __init__(self, *, rngs: nnx.Rngs):
    self.conv = nnx.Conv(1, 4, (3, 3), strides=(2, 2), use_bias=False, rngs=rngs)
    self.bn = nnx.BatchNorm(4, rngs=rngs)
    self.drop = nnx.Dropout(0.25, rngs=rngs)
    self.out = nnx.Linear(4 * 16, 10, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.bn(self.conv(x)))
    return self.out(self.drop(x.reshape(x.shape[0], -1)))


def test_a_member_trains_as_the_model_would_alone_on_the_streams_batches(digits_small):
  train = _Batches(digits_small, batch_size=64)  # 4 steps per epoch
  stream = _stream(digits_small, train)
  pop = hpjax.Population(
    [{"learning_rate": 0.01, "optimizer": "adam"}], stream, model=_Net, seed=3, mesh=None
  )
  init = jax.random.fold_in(jax.random.wrap_key_data(engine.member_keys(3, [0])[0]), 0)
  model = _Net(rngs=nnx.Rngs(jax.random.fold_in(init, 1), params=init))
  model.train()
  optimizer = nnx.Optimizer(model, optax.adam(0.01), wrt=nnx.Param)

  def loss_fn(m, x, y):
    out = m(normalize(x, stream.mean, stream.std))
    return optax.softmax_cross_entropy_with_integer_labels(out, jnp.asarray(y)).mean()

  for epoch in range(2):
    losses = []
    for x, y in train(epoch):
      loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
      optimizer.update(model, grads)
      losses.append(loss)
    np.testing.assert_allclose(pop.train_epoch()["train_loss"][0], np.mean(losses), rtol=1e-5)
  state = pop.groups[0].state
  for a, b in zip(
    jax.tree.leaves(state.params), jax.tree.leaves(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  ):
    np.testing.assert_allclose(np.asarray(a)[0], b, rtol=2e-5, atol=1e-6)
  rest = nnx.state(model, nnx.Not(nnx.Param))
  np.testing.assert_allclose(
    state.model_state["bn"]["mean"][0], rest["bn"]["mean"][...], rtol=1e-5, atol=1e-6
  )
  assert int(state.model_state["drop"]["rngs"]["count"][0]) == 8  # one draw per step


def test_statistics_come_from_the_first_pass_unless_given(digits_small):
  # 256 examples in 8 whole batches: the first pass sees the whole training
  # split, so the statistics are the Dataset's.
  train = _Batches(digits_small)
  full = _stream(digits_small, train, mean=None, std=None)
  np.testing.assert_allclose(full.mean, digits_small.mean, rtol=1e-6)
  np.testing.assert_allclose(full.std, digits_small.std, rtol=1e-6)
  assert train.asked == [0]
  first_two = _stream(digits_small, train, mean=None, std=None, stats_batches=2)
  x = np.concatenate([b[0] for b in list(train(0))[:2]]).astype(np.float64)
  np.testing.assert_allclose(first_two.mean, [x.mean()], rtol=1e-6)
  np.testing.assert_allclose(first_two.std, [x.std()], rtol=1e-6)
  given = _stream(digits_small, train, mean=[1.0], std=[2.0])
  assert given.mean.tolist() == [1.0] and given.std.tolist() == [2.0]
  with pytest.raises(DataError, match="give both mean and std"):
    _stream(digits_small, train, mean=[1.0], std=None)


def test_bad_batches_and_short_streams_are_one_clear_line(digits_small):
  kw = dict(candidates={"activation": ACTS}, mesh=None)
  cases = [
    (
      _Batches(digits_small, dtype=np.float32),
      r"stream 'stream': batch 0 of epoch 0: x has dtype float32, expected uint8",
    ),
    (
      _Batches(digits_small, short=5),
      r"stream 'stream': train\(0\) yielded 5 batches, fewer than steps_per_epoch=8",
    ),
  ]
  for train, match in cases:
    pop = hpjax.Population(_members()[:2], _stream(digits_small, train), **kw)
    with pytest.raises(DataError, match=match):
      pop.train_epoch()
  stream = _stream(digits_small, _Batches(digits_small))
  x, y = np.zeros((20, 8, 8, 1), np.uint8), np.zeros(20, np.int64)
  with pytest.raises(
    DataError,
    match=r"batch 7 of epoch 3: x has shape \(20, 8, 8, 1\), "
    r"expected \(32, 8, 8, 1\) \(a last partial batch\? drop it",
  ):
    stream.check(x, y, 3, 7)
  x = np.zeros((32, 8, 8, 1), np.uint8)
  with pytest.raises(DataError, match=r"label 10 out of range \[0, 9\]"):
    stream.check(x, np.full(32, 10), 0, 0)
  with pytest.raises(DataError, match="y has dtype float32, expected integer class labels"):
    stream.check(x, np.zeros(32, np.float32), 0, 0)
  assert stream.check(x[..., 0], np.zeros(32, np.int64), 0, 0)[1].dtype == np.int32
  # The batch size is the stream's, for every member.
  with pytest.raises(DataError, match=r"batch_size: 64, but stream 'stream' yields batches of 32"):
    hpjax.Population([_members()[0].replace(batch_size=64)], stream, **kw)
  with pytest.raises(ValueError, match="batch_mode: 'traced'"):
    hpjax.Population(_members()[:1], stream, batch_mode="traced", **kw)
  with pytest.raises(DataError, match="steps_per_epoch must be an integer >= 1, got 0"):
    Stream(
      lambda e: [],
      val=(x, np.arange(32) % 10),
      test=(x, np.arange(32) % 10),
      steps_per_epoch=0,
      batch_size=32,
    )


class _StopAfter(hpjax.writers.Writer):
  """Stands in for a kill: the process dies after ``epoch`` was checkpointed."""

  def __init__(self, epoch):
    self.stop_epoch = epoch

  def epoch(self, record):
    if record.epoch == self.stop_epoch + 1:
      raise KeyboardInterrupt


def test_pbt_through_tune_and_a_resume_that_rereads_the_epoch(digits_small, tmp_path):
  space = {"learning_rate": hpjax.Float(3e-3, 3e-1, log=True), "activation": hpjax.Choice(ACTS)}

  def run(train, workdir, **kw):
    return hpjax.tune(
      data=_stream(digits_small, train),
      space=space,
      members=[{**TINY, **m} for m in hpjax.tuner.draw_members(space, 4, 0)],
      epochs=3,
      controller=hpjax.PBT(quantile_fraction=0.5),
      workdir=str(workdir),
      log=lambda _: None,
      **kw,
    )

  straight_train = _Batches(digits_small)
  straight = run(straight_train, tmp_path / "straight")
  assert straight_train.asked == [0, 1, 2]
  rows = [json.loads(l) for l in open(tmp_path / "straight" / "metrics.jsonl")]
  assert len(rows) == 12 and all(np.isfinite(r["train_loss"]) for r in rows)
  lineage = [json.loads(l) for l in open(tmp_path / "straight" / "lineage.jsonl")]
  assert any(e["donor"] != e["target"] for e in lineage)  # PBT copied members
  assert straight.summary["members_at_end"] == 4 and straight.best.test
  cfg = json.load(open(tmp_path / "straight" / "config.json"))
  assert cfg["data"]["train"] == 256 and cfg["members"][0]["batch_size"] == B

  # Killed after epoch 2's record, before its checkpoint: the newest is
  # epoch 1's, and the resume asks the stream for epoch index 1 again.
  killed_train = _Batches(digits_small)
  with pytest.raises(KeyboardInterrupt):
    run(killed_train, tmp_path / "killed", writers=[_StopAfter(1)])
  resumed = run(killed_train, tmp_path / "killed")
  assert killed_train.asked == [0, 1, 1, 2]
  assert resumed.best.member == straight.best.member
  assert resumed.best.val == pytest.approx(straight.best.val, rel=1e-6)
  # Another stream (another batch size) is another run.
  with pytest.raises(ValueError, match=r"another config \(.*data"):
    run(_Batches(digits_small, batch_size=64), tmp_path / "straight")


def test_tune_refuses_another_batch_size_for_a_stream(digits_small):
  with pytest.raises(DataError, match=r"batch_size: 16, but stream 'stream' yields batches of 32"):
    hpjax.tune(
      data=_stream(digits_small, _Batches(digits_small)),
      population=2,
      epochs=1,
      batch_size=16,
      log=lambda _: None,
    )


def test_a_stream_on_two_devices_equals_one_device():
  # Simulated devices must be set before JAX starts: a fresh process.
  code = textwrap.dedent("""
      import json, numpy as np, jax, hpjax
      from tests.test_stream import _Batches, _members, _stream, ACTS
      data = hpjax.load_dataset("digits", seed=0, max_train=256)
      out = {}
      for mesh in (None, "auto"):
        pop = hpjax.Population(_members(), _stream(data, _Batches(data)),
                               candidates={"activation": ACTS}, mesh=mesh)
        m = [pop.train_epoch()["train_loss"].tolist() for _ in range(2)]
        out[str(mesh)] = (m, pop.evaluate("val")["loss"].tolist(), pop.mesh is not None)
      print("RESULT", json.dumps(out))
  """)
  cache = os.environ.get("HPJAX_TEST_CACHE_DIR", os.path.join(ROOT, ".jax_cache"))
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    JAX_NUM_CPU_DEVICES="2",
    HPJAX_CACHE_DIR=cache,
    JAX_COMPILATION_CACHE_DIR=cache,
  )
  r = subprocess.run(
    [sys.executable, "-c", code],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
    check=False,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  out = json.loads(r.stdout.split("RESULT ", 1)[1])
  (one, one_val, one_sharded), (two, two_val, two_sharded) = out["None"], out["auto"]
  assert not one_sharded and two_sharded
  # Two members per device instead of four: other kernel blockings, float32 rounding.
  np.testing.assert_allclose(two, one, rtol=1e-4)
  np.testing.assert_allclose(two_val, one_val, rtol=1e-4)

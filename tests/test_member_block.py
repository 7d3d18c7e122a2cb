"""member_block: a group trained and evaluated in blocks of one compiled program.

Blocks change no number (each member's computation is the same program's);
a population cut to a multiple of the block compiles no new epoch.
"""

import jax
from jax._src import dispatch  # event names of JAX's own compile monitoring
import numpy as np
import pytest

import hpjax
from hpjax import engine
from hpjax import tuner

TINY = dict(family="vgg", depth=1, width=4, dense=16)


@pytest.fixture(scope="module")
def data():
  return hpjax.load_dataset("digits", seed=0, max_train=64)


def _population(data, member_block):
  members = [
    {**TINY, "learning_rate": lr, "optimizer": opt, "batch_size": 16}
    for lr, opt in zip(np.geomspace(1e-3, 1e-1, 8).tolist(), ["adam", "sgd"] * 4)
  ]
  return hpjax.Population(
    members,
    data,
    seed=3,
    candidates={"activation": ("relu",)},
    mesh=None,
    member_block=member_block,
  )


def _leaves(pop):
  return [np.asarray(a) for g in pop.groups for a in jax.tree.leaves(g.state)]


def test_blocks_give_the_same_numbers_and_a_cut_compiles_no_epoch(data):
  whole, blocked = _population(data, None), _population(data, 4)
  (g,) = blocked.groups
  if not engine.runs_in_chunks(g.fns.spec, 8, 4):
    pytest.skip("members run all at once on this backend: no blocks")
  assert blocked._blocks(g) == 2 and whole._blocks(whole.groups[0]) == 1
  for _ in range(2):
    a, b = whole.train_epoch(), blocked.train_epoch()
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(b[k], a[k])
  for a, b in zip(_leaves(whole), _leaves(blocked), strict=True):
    np.testing.assert_array_equal(a, b)
  for k, v in whole.evaluate("val").items():
    np.testing.assert_array_equal(blocked.evaluate("val")[k], v)

  keep = [0, 2, 5, 7]
  whole.compact(keep)
  blocked.compact(keep)
  events = []

  def listener(name, *args, **kwargs):
    del args, kwargs
    if name == dispatch.BACKEND_COMPILE_EVENT:
      events.append(name)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    after = blocked.train_epoch()
    val = blocked.evaluate("val")
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert events == [], f"{len(events)} compiles after the cut to one block"
  expected = whole.train_epoch()
  for k, v in expected.items():
    np.testing.assert_array_equal(after[k], v)
  for k, v in whole.evaluate("val").items():
    np.testing.assert_array_equal(val[k], v)


def test_blocks_smaller_than_the_groups_chunks_are_not_used(data):
  # On CPU a group of 8 runs chunks of 4: blocks of 2 would run chunks of 2,
  # another program, so the group trains whole (the same numbers as without
  # blocks, exactly).
  whole, blocked = _population(data, None), _population(data, 2)
  (g,) = blocked.groups
  if engine._member_chunk(g.fns.spec, 8) != 4:  # pylint: disable=protected-access
    pytest.skip("not CPU: members run all at once, no blocks")
  assert not engine.runs_in_chunks(g.fns.spec, 8, 2)
  assert engine.runs_in_chunks(g.fns.spec, 8, 4) and engine.runs_in_chunks(g.fns.spec, 16, 8)
  assert blocked._blocks(g) == 1
  a, b = whole.train_epoch(), blocked.train_epoch()
  for k in a:
    np.testing.assert_array_equal(b[k], a[k])


def test_member_block_is_checked(data):
  with pytest.raises(ValueError, match="member_block: expected None or an int >= 1, got 0"):
    _population(data, 0)


def test_controllers_say_the_sizes_and_the_tuner_picks_their_common_block():
  halving = hpjax.Halving(grace_period=2, reduction_factor=2, min_members=8)
  assert halving.population_sizes(32, 10) == (32, 16, 8)
  assert hpjax.PBTHalving(halving=halving).population_sizes(32, 10) == (32, 16, 8)
  assert hpjax.Halving(grace_period=1, reduction_factor=3).population_sizes(27, 10) == (27, 9, 3, 1)
  assert hpjax.PBT().population_sizes(32, 10) == (32,)

  class Exp:  # what tuner.member_block reads of an Experiment
    members, epochs = [{}] * 32, 10
    controller = hpjax.PBTHalving(halving=halving)

  assert tuner.member_block(Exp) == 8
  Exp.controller = hpjax.PBT()
  assert tuner.member_block(Exp) is None  # one size: whole groups
  Exp.members, Exp.controller = [{}] * 12, hpjax.Halving(grace_period=1, reduction_factor=5)
  assert tuner.member_block(Exp) is None  # 12 -> 3: no common block above 1


def test_compile_ahead_covers_the_blocks_programs(data, jax_compiles):
  # 6 members in blocks of 2 (chunks of 2), evaluation chunks of 41: shapes
  # no other test compiles.
  members = [
    {**TINY, "learning_rate": lr, "optimizer": "adam", "batch_size": 16}
    for lr in np.geomspace(1e-3, 1e-1, 6).tolist()
  ]
  kw = dict(seed=3, candidates={"activation": ("relu",)}, mesh=None, eval_batch_size=41)
  pop = hpjax.Population(members, data, member_block=2, compile_ahead=("val",), **kw)
  if pop._blocks(pop.groups[0]) != 3:
    pytest.skip("members run all at once on this backend: no blocks")
  got, events = jax_compiles(lambda: (pop.train_epoch(), pop.evaluate("val")))
  assert events == [], f"{len(events)} traces/compiles in the first epoch after compiling ahead"
  whole = hpjax.Population(members, data, **kw)
  for a, b in zip(got, (whole.train_epoch(), whole.evaluate("val"))):
    for k in b:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)

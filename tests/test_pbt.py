"""Population-based training decisions: pure host functions, no compiles."""

import math

import numpy as np
import pytest

from hpjax import space as S
from hpjax.controllers import pbt
from hpjax.controllers.pbt import PBT

SPACE = {
  "learning_rate": S.Float(1e-4, 1e-1, log=True),
  "dropout": S.Float(0.0, 0.5),
  "optimizer": S.Choice(("sgd", "rmsprop", "adam")),
  "batch_size": S.Choice((16, 32), ordered=True),
}


def _hparams(p, batch_sizes=None):
  batch_sizes = batch_sizes or [32] * p
  return [
    {
      "learning_rate": 1e-3 * (i + 1),
      "dropout": 0.1,
      "optimizer": "adam",
      "batch_size": batch_sizes[i],
    }
    for i in range(p)
  ]


# Batch size as in a population where it is structural (a compiled group per
# size: the sizes are not multiples of the smallest, or batch_mode="structural").
STRUCTURAL = ("batch_size",)


def _plan(fitness, hparams=None, groups=None, cfg=PBT(), seed=0, **kw):
  kw.setdefault("structural", STRUCTURAL)
  p = len(fitness)
  hparams = hparams if hparams is not None else _hparams(p)
  groups = np.zeros(p, int) if groups is None else np.asarray(groups)
  return pbt.exploit_explore(
    np.asarray(fitness, float),
    hparams,
    SPACE,
    groups,
    cfg,
    np.random.default_rng(seed),
    generation=kw.pop("generation", 1),
    **kw,
  )


# ---------------------------------------------------------------------------
# Ranking and quantiles.


def test_rank_both_modes_with_ties_by_index():
  f = np.array([0.5, 0.9, 0.5, 0.1])
  assert pbt.rank(f, "max").tolist() == [1, 0, 2, 3]
  assert pbt.rank(f, "min").tolist() == [3, 0, 2, 1]


@pytest.mark.parametrize("mode", ["max", "min"])
def test_non_finite_fitness_ranks_last_in_both_modes(mode):
  f = np.array([np.nan, 0.3, np.inf, 0.7, -np.inf, 0.5])
  order = pbt.rank(f, mode).tolist()
  assert order[:3] == ([3, 5, 1] if mode == "max" else [1, 5, 3])
  assert order[3:] == [0, 2, 4]  # non-finite, in member order


def test_rank_all_nan_is_member_order():
  assert pbt.rank(np.full(5, np.nan), "max").tolist() == [0, 1, 2, 3, 4]


def test_quantile_size():
  assert pbt.quantile_size(1, 0.25) == 0
  assert pbt.quantile_size(2, 0.25) == 1
  assert pbt.quantile_size(3, 0.25) == 1
  assert pbt.quantile_size(3, 0.5) == 1  # never overlapping: floor(3 / 2)
  assert pbt.quantile_size(10, 0.25) == 3  # 2.5 rounds up
  assert pbt.quantile_size(16, 0.25) == 4
  # Halves round up in decimal, not in binary: 90 x 0.35 = 31.5 (the float
  # product is 31.499999999999996), 170 x 0.35 = 59.5.
  assert pbt.quantile_size(90, 0.35) == 32
  assert pbt.quantile_size(170, 0.35) == 60
  assert pbt.quantile_size(16, 0.5) == 8
  assert pbt.quantile_size(16, 1e-6) == 1


# ---------------------------------------------------------------------------
# Configuration.


@pytest.mark.parametrize(
  "kwargs, words",
  [
    ({"quantile_fraction": 0.0}, "pbt.quantile_fraction: must be in (0, 0.5]"),
    ({"quantile_fraction": 0.6}, "pbt.quantile_fraction: must be in (0, 0.5]"),
    ({"interval": 0}, "pbt.interval"),
    ({"burn_in": -1}, "pbt.burn_in"),
    ({"resample_probability": -0.1}, "pbt.resample_probability: must be in [0, 1]"),
    ({"perturbation_factors": ()}, "pbt.perturbation_factors"),
    ({"perturbation_factors": (0.8, 0.0)}, "pbt.perturbation_factors"),
  ],
)
def test_invalid_configs(kwargs, words):
  with pytest.raises(ValueError) as e:
    PBT(**kwargs).validate()
  assert words in str(e.value) and "\n" not in str(e.value)
  with pytest.raises(ValueError):
    _plan([0.1, 0.2], cfg=PBT(**kwargs))


def test_defaults_are_valid_and_rank_rejects_bad_mode():
  assert PBT().validate() == PBT()
  with pytest.raises(ValueError, match="mode: unknown value 'best'"):
    pbt.rank(np.zeros(3), "best")


def test_should_decide_with_burn_in_and_interval():
  cfg = PBT(interval=3, burn_in=2)
  assert [e for e in range(0, 15) if pbt.should_decide(e, cfg)] == [5, 8, 11, 14]
  assert [e for e in range(0, 5) if pbt.should_decide(e, PBT())] == [1, 2, 3, 4]
  with pytest.raises(ValueError, match="epoch"):
    pbt.should_decide(-1, cfg)


# ---------------------------------------------------------------------------
# Exploit and explore.


def test_p2_replaces_the_worst_with_the_best():
  plan = _plan([0.2, 0.8])
  assert plan.donors.tolist() == [1, 1]
  assert plan.replaced.tolist() == [0]
  assert plan.hparams[1] == _hparams(2)[1]
  assert len(plan.events) == 1 and plan.events[0]["target"] == 0 and plan.events[0]["donor"] == 1


def test_p3_replaces_one_member():
  plan = _plan([0.5, 0.1, 0.9], mode="min")
  assert plan.donors.tolist() == [0, 1, 1]  # min: 2 is the worst, 1 the best
  plan = _plan([0.5, 0.1, 0.9])
  assert plan.donors.tolist() == [0, 2, 2]


def test_p1_and_all_nan():
  plan = _plan([np.nan])
  assert plan.donors.tolist() == [0] and not plan.events
  plan = _plan([np.nan] * 4)
  # Ranked by index: member 0 is the top quantile, member 3 the bottom.
  assert plan.donors.tolist() == [0, 1, 2, 0]
  ev = plan.events[0]
  assert math.isnan(ev["target_fitness"]) and math.isnan(ev["donor_fitness"])


def test_ties_use_member_order():
  plan = _plan([0.5] * 4)
  assert plan.donors.tolist() == [0, 1, 2, 0]


def test_nan_members_are_replaced_first():
  f = [0.9, np.nan, 0.1, 0.5, np.inf, 0.7, 0.3, 0.2]
  plan = _plan(f, cfg=PBT(quantile_fraction=0.25))
  assert set(plan.replaced.tolist()) == {1, 4}
  assert set(plan.donors[[1, 4]].tolist()) <= {0, 5}


@pytest.mark.parametrize("q, replaced", [(0.5, 8), (1e-6, 1), (0.25, 4)])
def test_quantile_edges(q, replaced):
  f = np.arange(16, dtype=float)
  plan = _plan(f, cfg=PBT(quantile_fraction=q))
  bottom = set(range(replaced))
  top = set(range(16 - replaced, 16))
  assert set(plan.replaced.tolist()) == bottom
  assert set(plan.donors[sorted(bottom)].tolist()) <= top
  assert not bottom & top


def test_donors_come_from_the_top_quantile():
  rng = np.random.default_rng(7)
  for seed in range(20):
    f = rng.normal(size=12)
    plan = _plan(f, seed=seed, cfg=PBT(quantile_fraction=0.25))
    order = pbt.rank(f, "max")
    top, bottom = set(order[:3].tolist()), set(order[-3:].tolist())
    assert set(plan.replaced.tolist()) == bottom
    assert all(int(plan.donors[i]) in top for i in bottom)
    kept = [i for i in range(12) if i not in bottom]
    assert plan.donors[kept].tolist() == kept
    assert all(plan.hparams[i] == _hparams(12)[i] for i in kept)


def test_donor_choice_is_uniform_over_the_top():
  donors = {int(_plan(np.arange(8.0), seed=s).donors[0]) for s in range(40)}
  assert donors == {6, 7}


def test_exploit_stays_within_a_structural_group():
  # Group 0 (batch 16): members 0-3; group 1 (batch 32): members 4-7. The top
  # quantile (6, 7) is all group 1, so group 0's bottom member copies the best
  # of its own group that is not in the bottom quantile.
  f = np.array([0.1, 0.2, 0.3, 0.4, 0.15, 0.5, 0.8, 0.9])
  bs = [16] * 4 + [32] * 4
  groups = np.array([0] * 4 + [1] * 4)
  plan = _plan(f, hparams=_hparams(8, bs), groups=groups, cfg=PBT(quantile_fraction=0.25))
  assert set(plan.replaced.tolist()) == {0, 4}
  assert plan.donors[0] == 3  # the best of group 0 outside the bottom
  assert plan.donors[4] in (6, 7)
  for i in range(8):
    assert groups[plan.donors[i]] == groups[i]
    assert plan.hparams[i]["batch_size"] == bs[i]  # structural: the donor's (same group)


def test_a_group_entirely_in_the_bottom_is_left_alone():
  f = np.array([0.9, 0.8, 0.7, 0.1])
  plan = _plan(f, hparams=_hparams(4, [32, 32, 32, 16]), groups=[0, 0, 0, 1])
  assert plan.donors.tolist() == [0, 1, 2, 3] and not plan.events


def test_explore_changes_only_vectorized_dims_within_bounds():
  space = {**SPACE, "depth": S.Choice((1, 2, 3))}
  hp = [{**h, "depth": 2, "note": "kept"} for h in _hparams(8)]
  for seed in range(30):
    plan = pbt.exploit_explore(
      np.arange(8.0),
      hp,
      space,
      np.zeros(8, int),
      PBT(),
      np.random.default_rng(seed),
      generation=3,
      structural=STRUCTURAL,
    )
    for i in plan.replaced.tolist():
      new, donor = plan.hparams[i], hp[plan.donors[i]]
      assert new["depth"] == donor["depth"] and new["batch_size"] == donor["batch_size"]
      assert new["note"] == "kept"
      assert 1e-4 <= new["learning_rate"] <= 1e-1 and 0.0 <= new["dropout"] <= 0.5
      assert new["optimizer"] in SPACE["optimizer"].values
      assert new["learning_rate"] != donor["learning_rate"] or new["dropout"] != donor["dropout"]


def test_no_resampling_perturbs_by_the_factors():
  cfg = PBT(resample_probability=0.0, perturbation_factors=(0.5, 2.0))
  plan = _plan([0.1, 0.9], cfg=cfg)
  lr = plan.hparams[0]["learning_rate"]
  assert lr == pytest.approx(2e-3 * 0.5) or lr == pytest.approx(2e-3 * 2.0)
  assert plan.hparams[0]["optimizer"] in ("sgd", "rmsprop")  # unordered: another value


def test_custom_explore_fn_is_used():
  calls = []

  def explore(h, rng):
    calls.append(dict(h))
    return {**h, "learning_rate": 0.05, "dropout": float(rng.uniform(0.0, 0.1))}

  plan = _plan(np.arange(4.0), explore_fn=explore)
  assert len(calls) == 1 and calls[0] == _hparams(4)[plan.donors[0]]
  assert plan.hparams[0]["learning_rate"] == 0.05 and plan.hparams[0]["optimizer"] == "adam"


def test_custom_explore_fn_may_not_change_structure():
  with pytest.raises(ValueError, match="explore_fn: changed structural hyperparameter 'batch_s"):
    _plan(np.arange(4.0), explore_fn=lambda h, rng: {**h, "batch_size": 16})


def test_same_seed_same_plan():
  f = np.random.default_rng(0).normal(size=10)
  a, b, c = _plan(f, seed=5), _plan(f, seed=5), _plan(f, seed=6)
  assert a.donors.tolist() == b.donors.tolist() and a.hparams == b.hparams and a.events == b.events
  assert a.hparams != c.hparams


def test_events_record_old_and_new_values():
  plan = _plan([0.3, 0.9, 0.1, 0.6], generation=4)
  (ev,) = plan.events
  assert ev["generation"] == 4 and ev["target"] == 2 and ev["donor"] == 1 and ev["group"] == 0
  assert ev["target_fitness"] == 0.1 and ev["donor_fitness"] == 0.9
  assert ev["old_hparams"] == _hparams(4)[2]
  assert ev["new_hparams"] == plan.hparams[2]
  for k, (old, new) in ev["changes"].items():
    assert ev["old_hparams"][k] == old and ev["new_hparams"][k] == new and old != new


def test_bad_inputs():
  with pytest.raises(ValueError, match=r"hparams: needs one dict per member \(3\), got 2"):
    pbt.exploit_explore(
      np.zeros(3), _hparams(2), SPACE, np.zeros(3, int), PBT(), np.random.default_rng(), 1
    )
  with pytest.raises(ValueError, match="groups: must be an int array"):
    pbt.exploit_explore(
      np.zeros(3), _hparams(3), SPACE, np.zeros(2, int), PBT(), np.random.default_rng(), 1
    )
  with pytest.raises(ValueError, match=r"hparams\[0\]: missing 'dropout'"):
    pbt.exploit_explore(
      np.zeros(2),
      [{"learning_rate": 1e-3, "optimizer": "adam"}] * 2,
      SPACE,
      np.zeros(2, int),
      PBT(),
      np.random.default_rng(),
      1,
      structural=STRUCTURAL,
    )
  with pytest.raises(ValueError, match="rng: must be a numpy.random.Generator"):
    pbt.exploit_explore(np.zeros(2), _hparams(2), SPACE, np.zeros(2, int), PBT(), 0, 1)


# ---------------------------------------------------------------------------
# Applying a plan per group.


def test_a_traced_batch_size_is_explored_like_any_value():
  # One compiled program for every batch size: PBT copies across sizes and
  # moves a copy's batch size to a neighbour (an ordered choice).
  hp = _hparams(8, [16, 32] * 4)
  cfg = PBT(resample_probability=0.0)
  moved = set()
  for seed in range(20):
    plan = _plan(np.arange(8.0), hparams=hp, cfg=cfg, seed=seed, structural=())
    for i in plan.replaced.tolist():
      donor, new = hp[plan.donors[i]], plan.hparams[i]
      assert {donor["batch_size"], new["batch_size"]} == {16, 32}  # the only neighbour
      moved.add((hp[i]["batch_size"], donor["batch_size"]))
  assert (16, 32) in moved or (32, 16) in moved  # a copy across batch sizes happened

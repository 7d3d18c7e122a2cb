"""Successive halving decisions: pure host functions, no compiles."""

import math

import numpy as np
import pytest

from hpjax.controllers import halving
from hpjax.controllers.halving import Halving

# ---------------------------------------------------------------------------
# Configuration and schedule.


@pytest.mark.parametrize(
  "grace, eta, max_epochs, expected",
  [
    (1, 3, 30, [1, 3, 9, 27]),
    (1, 3, 27, [1, 3, 9]),  # no rung at max_epochs itself: training ends there
    (1, 3, 28, [1, 3, 9, 27]),
    (1, 2, 10, [1, 2, 4, 8]),
    (2, 2, 16, [2, 4, 8]),
    (3, 4, 100, [3, 12, 48]),
    (5, 3, 5, []),  # grace reaches the end: nothing to cut
    (5, 3, 6, [5]),
    (1, 3, 1, []),
  ],
)
def test_rung_epochs(grace, eta, max_epochs, expected):
  cfg = Halving(grace_period=grace, reduction_factor=eta)
  assert halving.rung_epochs(cfg, max_epochs) == expected
  for e in range(0, max_epochs + 2):
    assert halving.is_rung(e, cfg, max_epochs) == (e in expected)


def test_rung_index():
  cfg = Halving(grace_period=2, reduction_factor=3)
  assert [halving.rung_index(e, cfg) for e in (2, 6, 18, 54)] == [0, 1, 2, 3]
  for e in (0, 1, 3, 5, 7, 19):
    with pytest.raises(ValueError, match=r"^epoch: .* not a rung epoch"):
      halving.rung_index(e, cfg)


@pytest.mark.parametrize(
  "kwargs, field",
  [
    ({"reduction_factor": 1}, "reduction_factor"),
    ({"reduction_factor": 0}, "reduction_factor"),
    ({"reduction_factor": 2.0}, "reduction_factor"),
    ({"reduction_factor": True}, "reduction_factor"),
    ({"grace_period": 0}, "grace_period"),
    ({"grace_period": -1}, "grace_period"),
    ({"grace_period": 1.5}, "grace_period"),
    ({"min_members": 0}, "min_members"),
  ],
)
def test_validation_errors_name_the_field(kwargs, field):
  with pytest.raises(ValueError, match=rf"^halving\.{field}: ") as e:
    Halving(**kwargs).validate()
  assert "\n" not in str(e.value)
  # Every entry point validates the config.
  with pytest.raises(ValueError, match=rf"^halving\.{field}: "):
    halving.rung_epochs(Halving(**kwargs), 10)
  with pytest.raises(ValueError, match=rf"^halving\.{field}: "):
    halving.cut([0.1, 0.2], Halving(**kwargs), 1)


def test_cut_mode_error_lists_allowed_values():
  with pytest.raises(ValueError, match="mode: unknown value 'best'; allowed: max, min"):
    halving.cut([0.1, 0.2], Halving(), epoch=1, mode="best")


def test_validate_returns_self():
  cfg = Halving()
  assert cfg.validate() is cfg


def test_bad_arguments():
  cfg = Halving()
  with pytest.raises(ValueError, match=r"^max_epochs: "):
    halving.rung_epochs(cfg, 0)
  with pytest.raises(ValueError, match=r"^epoch: "):
    halving.is_rung(-1, cfg, 10)
  with pytest.raises(ValueError, match=r"^fitness: "):
    halving.cut([[0.1, 0.2]], cfg, 1)
  with pytest.raises(ValueError, match=r"^groups: "):
    halving.cut([0.1, 0.2], cfg, 1, groups=[0])
  with pytest.raises(ValueError, match=r"^groups: "):
    halving.cut([0.1, 0.2], cfg, 1, groups=[0.0, 1.0])
  with pytest.raises(ValueError, match=r"^epoch: "):
    halving.cut([0.1, 0.2], cfg, 2)  # 2 is not 1 * 3**k


# ---------------------------------------------------------------------------
# Keep sizes.


@pytest.mark.parametrize(
  "p, eta, min_members, expected",
  [
    (0, 3, 1, 0),
    (1, 3, 1, 1),
    (2, 3, 1, 1),
    (3, 3, 1, 1),
    (4, 3, 1, 2),
    (9, 3, 1, 3),
    (10, 3, 1, 4),
    (27, 3, 1, 9),
    (8, 2, 1, 4),
    (7, 2, 1, 4),
    (9, 3, 5, 5),
    (4, 3, 5, 4),
    (5, 3, 5, 5),
  ],
)
def test_keep_size_is_ceil_with_floor(p, eta, min_members, expected):
  cfg = Halving(reduction_factor=eta, min_members=min_members)
  assert halving.keep_size(p, cfg) == expected


# ---------------------------------------------------------------------------
# Cuts.


def test_cut_keeps_best_ceil_n_over_eta_in_member_order():
  f = np.array([0.3, 0.9, 0.1, 0.7, 0.5, 0.8, 0.2])  # P = 7, eta = 3 -> keep 3
  c = halving.cut(f, Halving(), epoch=1)
  assert c.keep.tolist() == [1, 3, 5]  # the three best, in their current order
  assert c.pruned.tolist() == [0, 2, 4, 6]
  assert c.keep.dtype == np.int64 and c.pruned.dtype == np.int64
  # Compaction is a plain gather that preserves the relative order.
  assert f[c.keep].tolist() == [0.9, 0.7, 0.8]


def test_cut_min_mode():
  f = np.array([0.3, 0.9, 0.1, 0.7, 0.5, 0.8, 0.2])
  c = halving.cut(f, Halving(), epoch=1, mode="min")
  assert c.keep.tolist() == [0, 2, 6]


def test_population_of_one_never_changes():
  for f in ([0.5], [np.nan], [-np.inf]):
    c = halving.cut(np.array(f), Halving(), epoch=1)
    assert c.keep.tolist() == [0] and c.pruned.tolist() == [] and c.records == []


@pytest.mark.parametrize("mode, expected", [("max", [1]), ("min", [0])])
def test_population_of_two_keeps_one(mode, expected):
  c = halving.cut([0.2, 0.6], Halving(), epoch=1, mode=mode)
  assert c.keep.tolist() == expected
  assert len(c.records) == 1


def test_population_of_three_keeps_one_and_two_with_eta_two():
  f = [0.4, 0.6, 0.5]
  assert halving.cut(f, Halving(), epoch=1).keep.tolist() == [1]
  assert halving.cut(f, Halving(reduction_factor=2), epoch=1).keep.tolist() == [1, 2]


def test_ties_go_to_the_lower_index():
  c = halving.cut([0.5, 0.9, 0.5, 0.5, 0.9, 0.5], Halving(), epoch=1)
  assert c.keep.tolist() == [1, 4]
  c = halving.cut([0.5] * 6, Halving(reduction_factor=2), epoch=1)
  assert c.keep.tolist() == [0, 1, 2]


@pytest.mark.parametrize("mode", ["max", "min"])
def test_non_finite_ranks_last(mode):
  f = np.array([np.nan, 0.3, np.inf, 0.7, -np.inf, 0.5])
  c = halving.cut(f, Halving(reduction_factor=2), epoch=1, mode=mode)
  assert c.keep.tolist() == [1, 3, 5]


def test_all_nan_keeps_the_first_members():
  c = halving.cut(np.full(6, np.nan), Halving(), epoch=1)
  assert c.keep.tolist() == [0, 1]
  assert c.pruned.tolist() == [2, 3, 4, 5]
  assert all(math.isnan(r["fitness"]) for r in c.records)


def test_min_members_floor():
  f = np.arange(9, dtype=float)
  cfg = Halving(min_members=4)
  assert halving.cut(f, cfg, epoch=1).keep.tolist() == [5, 6, 7, 8]  # not ceil(9/3) = 3
  # At or below the floor, nothing is cut.
  c = halving.cut(np.arange(3, dtype=float), cfg, epoch=1)
  assert c.keep.tolist() == [0, 1, 2] and c.pruned.size == 0


def test_records_hold_pruned_members_last_fitness_and_rung():
  cfg = Halving(grace_period=2, reduction_factor=2)
  f = np.array([0.1, 0.8, np.nan, 0.4])
  c = halving.cut(f, cfg, epoch=8)  # 2 * 2**2: the third rung
  assert c.keep.tolist() == [1, 3]
  assert c.records == [
    {"rung": 2, "epoch": 8, "member": 0, "fitness": 0.1, "rank": 2},
    {"rung": 2, "epoch": 8, "member": 2, "fitness": c.records[1]["fitness"], "rank": 3},
  ]
  assert math.isnan(c.records[1]["fitness"])
  assert all(type(r["fitness"]) is float and type(r["member"]) is int for r in c.records)


def test_groups_rank_globally_and_a_group_may_vanish():
  f = np.array([0.1, 0.9, 0.2, 0.8, 0.3, 0.7])
  groups = np.array([0, 1, 0, 1, 0, 1])
  c = halving.cut(f, Halving(reduction_factor=2), epoch=1, groups=groups)
  assert c.keep.tolist() == [1, 3, 5]  # group 0 is gone entirely
  assert [r["group"] for r in c.records] == [0, 0, 0]
  assert all(type(r["group"]) is int for r in c.records)
  # Without groups the decision is the same; only the records lack the group.
  c2 = halving.cut(f, Halving(reduction_factor=2), epoch=1)
  assert c2.keep.tolist() == c.keep.tolist() and "group" not in c2.records[0]


def test_successive_rungs_shrink_geometrically():
  cfg = Halving(grace_period=1, reduction_factor=3)
  rng = np.random.default_rng(0)
  ids = np.arange(27)  # original ids, to follow members across compactions
  sizes = []
  for epoch in halving.rung_epochs(cfg, 30):
    f = 0.1 * rng.normal(size=ids.size) + ids  # higher original id: better
    c = halving.cut(f, cfg, epoch)
    ids = ids[c.keep]
    sizes.append(ids.size)
    assert np.all(np.diff(ids) > 0)  # survivors keep their relative order
  assert sizes == [9, 3, 1, 1]
  assert ids.tolist() == [26]

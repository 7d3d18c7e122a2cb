"""Learning-rate range test analysis: pure host functions, no compiles."""

import math

import numpy as np
import pytest

from hpjax.controllers import lr_range
from hpjax.controllers.lr_range import RangeResult


def _synthetic(rates, n_points=20):
  """Curves whose speed grows with the rate up to 1e-2, then diverge.

  Rates up to 1e-2 decay exponentially at a speed that peaks at 3e-3 (the
  optimum: above it, noisy steps slow progress down); 3e-2 grows without
  bound; 1e-1 and above go NaN part-way.
  """
  t = np.arange(n_points, dtype=float)
  curves = []
  for r in rates:
    if r < 2e-2:
      # Speed in log-rate: a bump centred on log10(3e-3).
      speed = 0.3 * math.exp(-(((math.log10(r) - math.log10(3e-3)) / 0.6) ** 2))
      curves.append(2.3 * np.exp(-speed * t))
    elif r < 5e-2:
      curves.append(2.3 * np.exp(0.05 * t))  # rises to ~5.9: above 1.5 x initial
    else:
      c = 2.3 * np.exp(0.3 * t)
      c[n_points // 2 :] = np.nan
      curves.append(c)
  return np.stack(curves)


RATES = lr_range.log_spaced_rates(1e-5, 1e-1, 9)  # 1e-5, 3.2e-5, ..., 1e-1


# ---------------------------------------------------------------------------
# Rates.


def test_log_spaced_rates():
  r = lr_range.log_spaced_rates(1e-4, 1e-1, 4)
  assert r[0] == 1e-4 and r[-1] == 1e-1
  np.testing.assert_allclose(r, [1e-4, 1e-3, 1e-2, 1e-1])
  assert np.all(np.diff(np.log(r)) > 0)
  np.testing.assert_allclose(np.diff(np.log(RATES)), np.log(10) / 2)


@pytest.mark.parametrize(
  "args, field",
  [
    ((0.0, 1.0, 3), "lo"),
    ((-1e-3, 1.0, 3), "lo"),
    ((math.nan, 1.0, 3), "lo"),
    (("1e-3", 1.0, 3), "lo"),
    ((1e-3, 1e-3, 3), "hi"),
    ((1e-3, 1e-4, 3), "hi"),
    ((1e-3, math.inf, 3), "hi"),
    ((1e-3, 1e-1, 1), "n"),
    ((1e-3, 1e-1, 2.0), "n"),
    ((1e-3, 1e-1, True), "n"),
  ],
)
def test_log_spaced_rates_validation(args, field):
  with pytest.raises(ValueError, match=rf"^{field}: ") as e:
    lr_range.log_spaced_rates(*args)
  assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------
# Analysis.


def test_synthetic_sweep():
  res = lr_range.analyse(RATES, _synthetic(RATES))
  assert isinstance(res, RangeResult)
  np.testing.assert_array_equal(res.rates, RATES)
  # 3e-2 grows past 1.5x its start, 1e-1 goes NaN; nothing else diverges.
  assert res.diverged.tolist() == [False] * 7 + [True, True]
  assert res.best_rate == pytest.approx(10**-2.5)  # the medium band, 3.2e-3
  lo, hi = res.suggested_range
  assert lo == pytest.approx(1e-3) and hi == pytest.approx(1e-2)
  # Contiguous: every rate in [lo, hi] qualifies and did not diverge.
  inside = (res.rates >= lo) & (res.rates <= hi)
  idx = np.flatnonzero(inside)
  assert np.all(np.diff(idx) == 1)
  assert not np.any(res.diverged[inside])
  assert np.all(res.slopes[inside] >= 0.5 * np.nanmax(res.slopes[~res.diverged]))
  # Small rates fall slowly; the losses and slopes line up with the curves.
  assert res.slopes[0] < 0.2 * res.slopes[4]
  assert math.isnan(res.losses[-1]) and math.isnan(res.slopes[-1])
  assert res.slopes[-2] < 0  # the loss rose
  np.testing.assert_allclose(res.losses[:7], _synthetic(RATES)[:7, -1])


def test_unsorted_input_is_sorted_by_rate():
  perm = np.array([4, 0, 8, 2, 6, 1, 7, 3, 5])
  a = lr_range.analyse(RATES, _synthetic(RATES))
  b = lr_range.analyse(RATES[perm], _synthetic(RATES)[perm])
  np.testing.assert_array_equal(a.rates, b.rates)
  np.testing.assert_array_equal(a.diverged, b.diverged)
  np.testing.assert_array_equal(a.slopes[:7], b.slopes[:7])
  assert a.best_rate == b.best_rate and a.suggested_range == b.suggested_range


def test_slope_is_relative_decrease():
  rates = [1e-3, 1e-2]
  curves = [[2.0, 1.5, 1.0], [4.0, 2.0, 1.0]]
  res = lr_range.analyse(rates, curves)
  np.testing.assert_allclose(res.slopes, [0.5, 0.75])
  np.testing.assert_allclose(res.losses, [1.0, 1.0])
  assert res.best_rate == 1e-2
  # 0.5 >= 0.5 * 0.75: both rates are in the range.
  assert res.suggested_range == (1e-3, 1e-2)
  # With tail=2 the final loss is the mean of the last two points.
  res = lr_range.analyse(rates, curves, tail=2)
  np.testing.assert_allclose(res.losses, [1.25, 1.5])
  np.testing.assert_allclose(res.slopes, [0.375, 0.625])


def test_divergence_threshold_is_exact():
  rates = [1e-3, 1e-2, 1e-1, 1.0]
  curves = [[2.0, 1.0], [2.0, 3.0], [2.0, 3.0000001], [2.0, np.inf]]
  res = lr_range.analyse(rates, curves)
  blew_up = res.diverged & ~res.no_progress
  assert blew_up.tolist() == [False, False, True, True]  # 3.0 == 1.5 x 2.0 is not above
  # Not blown up, but above the best rate and no better than its start.
  assert res.no_progress.tolist() == [False, True, False, False]
  assert res.diverged.tolist() == [False, True, True, True]
  res = lr_range.analyse(rates, curves, diverge_factor=2.0)
  assert (res.diverged & ~res.no_progress).tolist() == [False, False, False, True]
  assert res.no_progress.tolist() == [False, True, True, False]


def test_nan_anywhere_diverges_even_if_the_end_is_finite():
  res = lr_range.analyse([1e-3, 1e-2], [[2.0, 1.5, 1.0], [2.0, np.nan, 0.5]])
  assert res.diverged.tolist() == [False, True]
  assert res.best_rate == 1e-3 and res.suggested_range == (1e-3, 1e-3)


def test_range_stops_at_a_diverged_rate():
  # Rate 3 diverged although its neighbours are fine: the range stays on one side.
  rates = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
  curves = [[2.0, 1.0], [2.0, 0.5], [2.0, 0.4], [2.0, np.nan], [2.0, 0.45]]
  res = lr_range.analyse(rates, curves)
  assert res.best_rate == 1e-2
  assert res.suggested_range == (1e-4, 1e-2)


def test_range_fraction():
  rates = [1e-4, 1e-3, 1e-2, 1e-1]
  curves = [[1.0, 0.9], [1.0, 0.6], [1.0, 0.2], [1.0, 0.5]]  # slopes 0.1, 0.4, 0.8, 0.5
  assert lr_range.analyse(rates, curves).suggested_range == (1e-3, 1e-1)
  assert lr_range.analyse(rates, curves, range_fraction=0.6).suggested_range == (1e-2, 1e-1)
  assert lr_range.analyse(rates, curves, range_fraction=1.0).suggested_range == (1e-2, 1e-2)
  assert lr_range.analyse(rates, curves, range_fraction=0.1).suggested_range == (1e-4, 1e-1)


def test_ties_go_to_the_lower_rate():
  res = lr_range.analyse([1e-3, 1e-2, 1e-1], [[1.0, 0.9], [1.0, 0.5], [1.0, 0.5]])
  assert res.best_rate == 1e-2


def test_all_diverged_and_no_progress():
  res = lr_range.analyse([1e-2, 1e-1], [[1.0, np.nan], [1.0, 9.0]])
  assert res.diverged.tolist() == [True, True]
  assert math.isnan(res.best_rate)
  assert all(math.isnan(x) for x in res.suggested_range)
  text = lr_range.describe(res)
  assert "every rate diverged" in text and "1.0e-02" in text

  res = lr_range.analyse([1e-4, 1e-3, 1e-1], [[1.0, 1.0], [1.0, 1.1], [1.0, np.nan]])
  assert math.isnan(res.best_rate)
  text = lr_range.describe(res)
  assert "did not fall" in text and "diverged) from 1.0e-01" in text and "above 1.0e-03" in text


def test_zero_initial_loss_gives_zero_slope():
  res = lr_range.analyse([1e-3, 1e-2], [[0.0, 0.0], [1.0, 0.5]])
  assert res.slopes.tolist() == [0.0, 0.5]
  assert res.best_rate == 1e-2


def _collapse_sweep(top=(2.31, 2.38, 2.45)):
  """Validation-loss curves like adam's on digits: 7 points, the first the
  loss before training (ln 10 = 2.30 for every rate), then one per epoch.

  1e-4 improves slowly (2.30 -> 2.15); the middle rates learn, best at
  3.2e-3; 3.2e-2 learns less; the top three (0.1, 0.32, 1) jump up in the
  first epoch and collapse to chance, ending at ``top`` (never above 1.5 x
  the initial loss, never NaN).
  """
  finals = [2.15, 1.2, 0.3, 0.15, 0.25, 0.9]
  curves = [np.geomspace(2.3, f, 7) for f in finals]
  for f in top:
    curves.append(np.array([2.3, 3.4, 2.9, 2.6, 2.45, 2.35, f]))
  return lr_range.log_spaced_rates(1e-4, 1.0, 9), np.stack(curves)


def test_collapse_to_chance_at_the_top_is_flagged():
  rates, curves = _collapse_sweep()
  res = lr_range.analyse(rates, curves)
  assert res.best_rate == pytest.approx(10**-2.5)
  # Before: final 2.31-2.45 against 2.30 at the start is below 1.5 x the
  # initial loss, and nothing was flagged.
  assert res.diverged.tolist() == [False] * 6 + [True] * 3
  lo, hi = res.suggested_range
  assert lo == pytest.approx(10**-3.5) and hi == pytest.approx(10**-1.5)
  text = lr_range.describe(res)
  assert text == (
    "loss falls fastest at lr 3.2e-03; useful range 3.2e-04 – 3.2e-02; "
    "too high (no progress) from 1.0e-01; too low (slow) below 3.2e-04"
  )
  assert res.no_progress.tolist() == [False] * 6 + [True] * 3
  # The small rate removed less than 10 % too, but it is slow, not flagged.
  assert 0 < res.slopes[0] < 0.1 and not res.no_progress[0] and not res.diverged[0]


def test_a_slow_small_rate_is_not_flagged_like_a_collapsed_high_one():
  # Both remove about 2 % of the initial loss; only the one above the best
  # rate is too high. The one below is slow.
  rates = [1e-5, 1e-3, 1.0]
  curves = [[2.3, 2.28, 2.25], [2.3, 1.0, 0.4], [2.3, 2.6, 2.25]]
  res = lr_range.analyse(rates, curves)
  np.testing.assert_allclose(res.slopes[[0, 2]], [0.05 / 2.3, 0.05 / 2.3])
  assert res.diverged.tolist() == [False, False, True]
  assert "too low (slow) below 1.0e-03" in lr_range.describe(res)
  assert res.no_progress.tolist() == [False, False, True]


def test_no_progress_is_excluded_from_the_range():
  # 0.1 ends just below its start (slope 0.009): with a small range_fraction
  # it used to join the suggested range.
  rates, curves = _collapse_sweep(top=(2.28, 2.38, 2.45))
  res = lr_range.analyse(rates, curves, range_fraction=0.005)
  assert res.slopes[6] > 0.005 * res.slopes[3]
  assert res.suggested_range == (pytest.approx(1e-4), pytest.approx(10**-1.5))
  assert res.no_progress[6] and res.diverged[6]


def test_min_progress():
  rates, curves = _collapse_sweep(top=(2.0, 2.38, 2.45))  # 0.1 removes 13 %
  assert lr_range.analyse(rates, curves).no_progress.tolist() == [False] * 7 + [True] * 2
  res = lr_range.analyse(rates, curves, min_progress=0.2)
  assert res.no_progress.tolist() == [False] * 6 + [True] * 3
  # 3.2e-2 removed 61 %: it is not flagged even at min_progress 0.6 ...
  res = lr_range.analyse(rates, curves, min_progress=0.6)
  assert res.no_progress.tolist() == [False] * 6 + [True] * 3
  # ... and the threshold is exact: 1 - 0.75 = 0.25 is not below 0.25.
  res = lr_range.analyse(
    [1e-3, 1e-2, 1e-1], [[1.0, 0.5], [1.0, 0.75], [1.0, 0.75000001]], min_progress=0.25
  )
  assert res.no_progress.tolist() == [False, False, True]
  # Nothing above the best rate: nothing to flag.
  assert not lr_range.analyse(rates[:4], curves[:4]).no_progress.any()


def test_no_progress_needs_a_best_rate_that_progressed():
  # Every rate is slow (the best removes 2 %): nothing is "too high".
  rates = [1e-4, 1e-3, 1e-2]
  res = lr_range.analyse(rates, [[2.3, 2.29, 2.28], [2.3, 2.27, 2.25], [2.3, 2.29, 2.27]])
  assert res.best_rate == 1e-3
  assert not res.no_progress.any() and not res.diverged.any()
  assert res.suggested_range == (1e-3, 1e-2)


def test_describe_names_both_reasons_at_the_top():
  rates, curves = _collapse_sweep()
  curves[7, 3:] = np.nan  # 0.32 blows up; 0.1 and 1.0 collapse
  text = lr_range.describe(lr_range.analyse(rates, curves))
  assert "too high (diverged or no progress) from 1.0e-01" in text
  rates, curves = _collapse_sweep()
  curves[6:, 3:] = np.nan  # all three blow up
  text = lr_range.describe(lr_range.analyse(rates, curves))
  assert "too high (diverged) from 1.0e-01" in text


# ---------------------------------------------------------------------------
# Description.


def test_describe_mentions_the_numbers():
  res = lr_range.analyse(RATES, _synthetic(RATES))
  text = lr_range.describe(res)
  assert text == (
    "loss falls fastest at lr 3.2e-03; useful range 1.0e-03 – 1.0e-02; "
    "too high (diverged) from 3.2e-02; too low (slow) below 1.0e-03"
  )
  assert "\n" not in text


def test_describe_hints_at_the_edges():
  up = lr_range.analyse([1e-3, 1e-2], [[1.0, 0.9], [1.0, 0.5]])
  assert "highest tried; widen the sweep upwards" in lr_range.describe(up)
  down = lr_range.analyse([1e-3, 1e-2], [[1.0, 0.5], [1.0, 0.9]])
  text = lr_range.describe(down)
  assert "lowest tried; widen the sweep downwards" in text and "too low" not in text


def test_describe_rejects_other_types():
  with pytest.raises(ValueError, match=r"^result: must be a RangeResult"):
    lr_range.describe({"best_rate": 1e-3})


# ---------------------------------------------------------------------------
# Validation.


@pytest.mark.parametrize(
  "rates, curves, kwargs, field",
  [
    ([1e-3], [[1.0, 0.5]], {}, "rates"),
    ([[1e-3, 1e-2]], [[1.0, 0.5], [1.0, 0.5]], {}, "rates"),
    ([0.0, 1e-2], [[1.0, 0.5], [1.0, 0.5]], {}, "rates"),
    ([np.nan, 1e-2], [[1.0, 0.5], [1.0, 0.5]], {}, "rates"),
    ([1e-2, 1e-2], [[1.0, 0.5], [1.0, 0.5]], {}, "rates"),
    (["a", 1e-2], [[1.0, 0.5], [1.0, 0.5]], {}, "rates"),
    ([1e-3, 1e-2], [[1.0, 0.5]], {}, "loss_curves"),
    ([1e-3, 1e-2], [[1.0], [1.0]], {}, "loss_curves"),
    ([1e-3, 1e-2], [1.0, 0.5], {}, "loss_curves"),
    ([1e-3, 1e-2], [[1.0, 0.5], [1.0, 0.5]], {"tail": 0}, "tail"),
    ([1e-3, 1e-2], [[1.0, 0.5], [1.0, 0.5]], {"tail": 2}, "tail"),
    ([1e-3, 1e-2], [[1.0, 0.5], [1.0, 0.5]], {"diverge_factor": 1.0}, "diverge_factor"),
    ([1e-3, 1e-2], [[1.0, 0.5], [1.0, 0.5]], {"range_fraction": 0.0}, "range_fraction"),
    ([1e-3, 1e-2], [[1.0, 0.5], [1.0, 0.5]], {"range_fraction": 1.5}, "range_fraction"),
    ([1e-3, 1e-2], [[1.0, 0.5], [1.0, 0.5]], {"min_progress": -0.1}, "min_progress"),
    ([1e-3, 1e-2], [[1.0, 0.5], [1.0, 0.5]], {"min_progress": 1.0}, "min_progress"),
    ([1e-3, 1e-2], [[1.0, 0.5], [1.0, 0.5]], {"min_progress": "0.1"}, "min_progress"),
  ],
)
def test_analyse_validation(rates, curves, kwargs, field):
  with pytest.raises(ValueError, match=rf"^{field}: ") as e:
    lr_range.analyse(rates, curves, **kwargs)
  assert "\n" not in str(e.value)


def _range_config(**changes):
  from experiments.configs import digits_lr_range  # pylint: disable=g-import-not-at-top

  c = digits_lr_range.get_config()
  c.population, c.epochs = 4, 2
  c.space.learning_rate.points = 4
  c.model.width, c.model.dense = 4, 8
  c.report = c.tensorboard = c.progress = False
  for k, v in changes.items():
    setattr(c, k, v)
  return c


@pytest.mark.parametrize(
  "change,match",
  [
    (
      dict(controller={"name": "halving", "grace_period": 1}),
      r"^config.lr_range_test: needs controller 'none', a sweep .* got 'halving'$",
    ),
    (
      dict(population=8),  # a grid of 4 rates x 2 optimizers: each rate twice
      r"^config.lr_range_test: needs every member at its own learning rate .* got ",
    ),
  ],
)
def test_a_range_test_its_analysis_cannot_read_is_refused_before_training(tmp_path, change, match):
  # It crashed after training, with no summary written: halving pruned
  # members whose curves the analysis then looked up; repeated rates left
  # it one curve short per rate.
  import ml_collections  # pylint: disable=g-import-not-at-top

  from hpjax import tuner  # pylint: disable=g-import-not-at-top

  c = _range_config(**{k: v for k, v in change.items() if k != "controller"})
  if "controller" in change:
    c.controller = ml_collections.ConfigDict(change["controller"])
  if change.get("population") == 8:
    c.space.optimizer = ml_collections.ConfigDict(dict(type="choice", values=("adam", "sgd")))
  workdir = tmp_path / "run"
  with pytest.raises(ValueError, match=match):
    tuner.run(c, str(workdir), log=lambda s: None)
  assert not workdir.exists()

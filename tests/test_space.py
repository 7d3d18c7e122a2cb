"""Search spaces: validation, initial sampling and PBT's perturbation (host only)."""

import numpy as np
import pytest

from hpjax import space as S

# ---------------------------------------------------------------------------
# Validation.


@pytest.mark.parametrize(
  "cfg, words",
  [
    (
      {"learning_rate": {"type": "float", "lo": 0.1, "hi": 0.01}},
      ["learning_rate", "lo must be < hi"],
    ),
    (
      {"learning_rate": {"type": "float", "lo": 0.1, "hi": 0.1}},
      ["learning_rate", "lo must be < hi"],
    ),
    ({"depth": {"type": "int", "lo": 4, "hi": 2}}, ["depth", "lo must be < hi"]),
    (
      {"weight_decay": {"type": "float", "lo": 0.0, "hi": 1e-3, "log": True}},
      ["weight_decay", "lo > 0"],
    ),
    ({"optimizer": {"type": "choice", "values": ()}}, ["optimizer", "empty"]),
    (
      {"optimizer": {"type": "choice", "values": ("adam", "sgd", "adam")}},
      ["optimizer", "duplicated"],
    ),
    ({"my-scale": {"type": "float", "lo": 0.1, "hi": 1.0}}, ["space", "identifiers", "my-scale"]),
    (
      {"learning_rate": {"type": "float", "lo": 0.1, "hi": 1.0, "structural": True}},
      ["space.learning_rate.structural", "traced hyperparameter of hpjax"],
    ),
    (
      {"optimizer": {"type": "choice", "values": ("sgd", "lion")}},
      ["space.optimizer", "'lion'", "adam"],
    ),
    ({"activation": {"type": "fixed", "value": "mish"}}, ["space.activation", "'mish'", "relu"]),
    (
      {"loss": {"type": "choice", "values": ("hinge",)}},
      ["space.loss", "'hinge'", "cross_entropy"],
    ),
    (
      {"learning_rate": {"type": "floaty", "lo": 0.1, "hi": 1.0}},
      ["learning_rate.type", "float, int, choice, fixed"],
    ),
    ({"learning_rate": {"type": "float", "lo": 0.1}}, ["learning_rate", "missing field 'hi'"]),
    (
      {"learning_rate": {"type": "float", "lo": 1e-4, "hi": 0.1, "log_scale": True}},
      ["learning_rate", "'log_scale'", "lo, hi, log, points"],
    ),
    (
      {"learning_rate": {"type": "float", "lo": "small", "hi": 0.1}},
      ["learning_rate.lo", "number"],
    ),
    (
      {"learning_rate": {"type": "float", "lo": 1e-4, "hi": 0.1, "log": "yes"}},
      ["learning_rate.log", "True or False"],
    ),
    ({"depth": {"type": "int", "lo": 1.5, "hi": 4}}, ["depth.lo", "integer"]),
    (
      {"learning_rate": {"type": "float", "lo": 1e-4, "hi": 0.1, "points": 1}},
      ["learning_rate.points", ">= 2"],
    ),
    ({"depth": {"type": "int", "lo": 1, "hi": 3, "points": 5}}, ["depth.points", "at most 3"]),
    ({"optimizer": {"type": "choice", "values": "adam"}}, ["optimizer.values", "list"]),
    ({"dropout": {"type": "float", "lo": 0.0, "hi": 1.0}}, ["space.dropout", "[0, 1)"]),
    (
      {"learning_rate": {"type": "float", "lo": -1.0, "hi": 1.0}},
      ["space.learning_rate", "[0, inf)"],
    ),
    (
      {"batch_size": {"type": "float", "lo": 8, "hi": 64}},
      ["space.batch_size", "int, choice or fixed"],
    ),
    (
      {"batch_size": {"type": "choice", "values": (16, 0)}},
      ["space.batch_size", "must be in [1, inf)"],
    ),
    ({"optimizer": {"type": "float", "lo": 0, "hi": 3}}, ["space.optimizer", "choice or fixed"]),
    ({"batch_norm": {"type": "choice", "values": (0, 1)}}, ["space.batch_norm", "True or False"]),
  ],
)
def test_from_config_rejects_each_problem_with_one_line(cfg, words):
  with pytest.raises(ValueError) as e:
    S.from_config(cfg)
  msg = str(e.value)
  assert "\n" not in msg
  for w in words:
    assert w in msg, (w, msg)


@pytest.mark.parametrize(
  "space, words",
  [
    ({"learning_rate": S.Float(1.0, 0.5)}, ["space.learning_rate", "lo must be < hi"]),
    ({"learning_rate": S.Float(0.0, 1.0, log=True)}, ["space.learning_rate", "lo > 0"]),
    ({"width": S.Int(0, 8, log=True)}, ["space.width", "lo > 0"]),
    ({"optimizer": S.Choice(())}, ["space.optimizer", "empty"]),
    ({"activation": S.Choice(("relu", "relu"))}, ["space.activation", "duplicated"]),
    ({"momentum": (0.5, 0.9)}, ["space.momentum", "Float, Int, Choice or Fixed"]),
    ({"dropout": S.Choice(([0.1], [0.2]))}, ["space.dropout", "hashable"]),
  ],
)
def test_validate_dimensions_built_in_python(space, words):
  with pytest.raises(ValueError) as e:
    S.validate(space)
  for w in words:
    assert w in str(e.value), (w, str(e.value))


def test_valid_config_round_trips_and_stays_hashable():
  space = S.from_config(
    {
      "learning_rate": {"type": "float", "lo": 1e-4, "hi": 1e-1, "log": True, "points": 4},
      "optimizer": {"type": "choice", "values": ["sgd", "adam"]},
      "batch_size": {"type": "choice", "values": (16, 32, 64), "ordered": True},
      "depth": {"type": "int", "lo": 1, "hi": 3},
      "batch_norm": {"type": "fixed", "value": False},
    }
  )
  assert space["learning_rate"] == S.Float(1e-4, 1e-1, True, 4)
  assert space["optimizer"] == S.Choice(("sgd", "adam"))
  assert space["depth"] == S.Int(1, 3)
  assert len({hash(d) for d in space.values()}) == 5
  assert S.is_structural("depth") and not S.is_structural("learning_rate")
  assert not S.is_structural("batch_size")  # traced: one program serves every size


def test_structural_dimension_must_fit_the_population():
  space = {"width": S.Choice((8, 16, 32, 64, 128)), "learning_rate": S.Float(1e-3, 1e-1)}
  with pytest.raises(ValueError) as e:
    S.check_structural_fits(space, 4)
  msg = str(e.value)
  assert "space.width" in msg and "5 structural values" in msg and "4 members" in msg
  assert S.check_structural_fits(space, 5) == {"width": 5}
  # Batch size is traced (one program for all sizes): any number of them fits.
  assert S.check_structural_fits({"batch_size": S.Choice((8, 16, 32, 64, 128))}, 2) == {}
  with pytest.raises(ValueError, match="space.width: 113 structural values"):
    S.check_structural_fits({"width": S.Int(16, 128)}, 16)
  assert S.check_structural_fits({"depth": S.Fixed(2)}, 1) == {"depth": 1}


# ---------------------------------------------------------------------------
# Initial populations.


def test_grid_is_the_full_factorial():
  space = {
    "optimizer": S.Choice(("sgd", "adam")),
    "learning_rate": S.Float(1e-3, 1e-1, True, 3),
    "depth": S.Int(1, 2),
    "activation": S.Fixed("relu"),
  }
  grid = S.sample_grid(space, 12)
  assert len(grid) == 12
  assert len({tuple(sorted(g.items())) for g in grid}) == 12
  lrs = sorted({g["learning_rate"] for g in grid})
  assert lrs == pytest.approx([1e-3, 1e-2, 1e-1])  # log-spaced, both ends included
  assert {g["depth"] for g in grid} == {1, 2}
  assert all(isinstance(g["depth"], int) for g in grid)
  assert {g["activation"] for g in grid} == {"relu"}
  assert S.sample_grid(space) == grid


def test_grid_linear_and_int_points():
  assert S.Float(0.0, 0.5, points=3).grid_values("dropout") == pytest.approx((0.0, 0.25, 0.5))
  assert S.Int(8, 128, log=True, points=5).grid_values("width") == (8, 16, 32, 64, 128)
  assert S.Int(1, 16).grid_values("depth") == tuple(range(1, 17))


def test_grid_size_mismatch_says_how_many_members_it_needs():
  space = {"optimizer": S.Choice(("sgd", "adam", "rmsprop")), "depth": S.Int(1, 4)}
  with pytest.raises(ValueError) as e:
    S.sample_grid(space, 16)
  msg = str(e.value)
  assert "needs 12 members" in msg and "got 16" in msg and "\n" not in msg


def test_grid_needs_points_for_float_and_wide_int():
  with pytest.raises(ValueError, match=r"space\.learning_rate\.points: a grid needs points"):
    S.sample_grid({"learning_rate": S.Float(1e-3, 1e-1)})
  with pytest.raises(ValueError, match=r"space\.width\.points: .*17 values"):
    S.sample_grid({"width": S.Int(16, 32)})


SPACE = {
  "learning_rate": S.Float(1e-4, 1e-1, log=True),
  "dropout": S.Float(0.0, 0.5),
  "depth": S.Int(1, 6),
  "width": S.Int(8, 64, log=True),
  "optimizer": S.Choice(("sgd", "rmsprop", "adam")),
  "activation": S.Fixed("relu"),
}


def _in_space(draw):
  for k, dim in SPACE.items():
    v = draw[k]
    if isinstance(dim, S.Float):
      assert isinstance(v, float) and dim.lo <= v <= dim.hi, (k, v)
    elif isinstance(dim, S.Int):
      assert isinstance(v, int) and dim.lo <= v <= dim.hi, (k, v)
    elif isinstance(dim, S.Choice):
      assert v in dim.values, (k, v)
    else:
      assert v == dim.value


def test_quasi_random_within_bounds_and_deterministic():
  a = S.sample_quasi_random(SPACE, 20, seed=3)
  assert len(a) == 20
  for d in a:
    _in_space(d)
  assert a == S.sample_quasi_random(SPACE, 20, seed=3)
  assert a != S.sample_quasi_random(SPACE, 20, seed=4)
  assert {d["optimizer"] for d in a} == {"sgd", "rmsprop", "adam"}
  fixed = S.sample_quasi_random({"activation": S.Fixed("tanh")}, 2, 0)
  assert fixed == [{"activation": "tanh"}] * 2


def test_quasi_random_spreads_better_than_random():
  dim = {"dropout": S.Float(0.0, 0.4)}
  for seed in range(5):
    x = np.array([d["dropout"] for d in S.sample_quasi_random(dim, 16, seed)])
    assert np.bincount(np.floor(x / 0.1).astype(int), minlength=4).tolist() == [4, 4, 4, 4]
  # Log dims are spread evenly in log space.
  lr = np.array(
    [
      d["learning_rate"]
      for d in S.sample_quasi_random({"learning_rate": S.Float(1e-4, 1.0, log=True)}, 16, 0)
    ]
  )
  assert np.bincount(np.floor(-np.log10(lr)).astype(int), minlength=4).tolist() == [4, 4, 4, 4]
  # Random draws rarely are that balanced.
  balanced = 0
  for seed in range(20):
    x = np.array([d["dropout"] for d in S.sample_random(dim, 16, seed)])
    balanced += np.bincount(np.floor(x / 0.1).astype(int), minlength=4).tolist() == [4, 4, 4, 4]
  assert balanced < 5


def test_random_sampling_within_bounds_and_seeded():
  a = S.sample_random(SPACE, 50, seed=0)
  for d in a:
    _in_space(d)
  assert a == S.sample_random(SPACE, 50, seed=0)


# ---------------------------------------------------------------------------
# Perturbation.


def _rng(seed=0):
  return np.random.default_rng(seed)


def test_perturb_float_multiplies_by_a_factor():
  dim = S.Float(0.0, 10.0)
  seen = {round(S.perturb(dim, 5.0, _rng(s), resample_probability=0.0), 9) for s in range(40)}
  assert sorted(seen) == [4.0, 6.0]


def test_perturb_float_clips_at_both_ends():
  dim = S.Float(1.0, 2.0)
  for s in range(30):
    hi = S.perturb(dim, 2.0, _rng(s), factors=(1.2,), resample_probability=0.0)
    lo = S.perturb(dim, 1.0, _rng(s), factors=(0.8,), resample_probability=0.0)
    assert hi == 2.0 and lo == 1.0


def test_perturb_log_dim_stays_positive():
  dim = S.Float(1e-5, 1e-1, log=True)
  v, rng = 1e-5, _rng(1)
  for _ in range(200):
    v = S.perturb(dim, v, rng, factors=(0.5, 0.8))
    assert 1e-5 <= v <= 1e-1 and v > 0


def test_perturb_int_stays_int_and_moves_at_least_one():
  dim = S.Int(1, 10)
  for s in range(30):
    up = S.perturb(dim, 2, _rng(s), factors=(1.2,), resample_probability=0.0)
    down = S.perturb(dim, 2, _rng(s), factors=(0.8,), resample_probability=0.0)
    assert (up, down) == (3, 1) and type(up) is int and type(down) is int
  assert S.perturb(dim, 5, _rng(), factors=(2.0,), resample_probability=0.0) == 10
  # Clipped at both bounds, still ints.
  assert S.perturb(dim, 10, _rng(), factors=(1.2,), resample_probability=0.0) == 10
  assert S.perturb(dim, 1, _rng(), factors=(0.8,), resample_probability=0.0) == 1
  assert S.perturb(dim, 9, _rng(), factors=(3.0,), resample_probability=0.0) == 10
  assert S.perturb(dim, np.int64(4), _rng(), factors=(1.0,), resample_probability=0.0) == 4
  rng = _rng(2)
  for _ in range(100):
    v = S.perturb(dim, 5, rng)
    assert type(v) is int and 1 <= v <= 10


def test_perturb_ordered_choice_moves_to_a_neighbour():
  dim = S.Choice((16, 32, 64, 128), ordered=True)
  for s in range(30):
    assert S.perturb(dim, 16, _rng(s), resample_probability=0.0) == 32
    assert S.perturb(dim, 128, _rng(s), resample_probability=0.0) == 64
  mid = {S.perturb(dim, 32, _rng(s), resample_probability=0.0) for s in range(40)}
  assert mid == {16, 64}
  single = S.Choice(("adam",), ordered=True)
  assert S.perturb(single, "adam", _rng(), resample_probability=0.0) == "adam"


def test_perturb_unordered_choice_redraws_another_value():
  dim = S.Choice(("sgd", "rmsprop", "adam"))
  seen = [S.perturb(dim, "adam", _rng(s), resample_probability=0.0) for s in range(60)]
  assert set(seen) == {"sgd", "rmsprop"}
  with pytest.raises(ValueError, match="'lion' is not among the choices"):
    S.perturb(dim, "lion", _rng())


def test_perturb_fixed_is_unchanged():
  rng = _rng()
  state = rng.bit_generator.state
  assert S.perturb(S.Fixed("relu"), "relu", rng, resample_probability=1.0) == "relu"
  assert rng.bit_generator.state == state  # nothing drawn


def test_resample_probability_one_always_redraws_from_the_prior():
  rng = _rng(5)
  dim = S.Float(0.1, 0.2)
  vals = [S.perturb(dim, 0.15, rng, factors=(1.0,), resample_probability=1.0) for _ in range(100)]
  assert all(0.1 <= v <= 0.2 for v in vals) and len(set(vals)) == 100
  ints = [
    S.perturb(S.Int(3, 5), 4, rng, factors=(1.0,), resample_probability=1.0) for _ in range(100)
  ]
  assert set(ints) == {3, 4, 5}
  # An unordered choice can resample its own value (a prior draw, not a move).
  ch = [S.perturb(S.Choice(("a", "b")), "a", rng, resample_probability=1.0) for _ in range(50)]
  assert set(ch) == {"a", "b"}


def test_perturb_is_deterministic_given_the_generator():
  dims = [
    S.Float(1e-4, 1.0, log=True),
    S.Int(1, 100),
    S.Choice((1, 2, 3), ordered=True),
    S.Choice(("x", "y", "z")),
  ]
  values = [1e-2, 50, 2, "y"]
  run = lambda: [S.perturb(d, v, _rng(11)) for d, v in zip(dims, values)]
  assert run() == run()


@pytest.mark.parametrize(
  "kwargs, words",
  [
    ({"factors": ()}, "perturbation_factors"),
    ({"factors": (0.8, -1.0)}, "perturbation_factors"),
    ({"resample_probability": 1.5}, "resample_probability: must be in [0, 1]"),
  ],
)
def test_perturb_rejects_bad_arguments(kwargs, words):
  with pytest.raises(ValueError) as e:
    S.perturb(S.Float(0.0, 1.0), 0.5, _rng(), **kwargs)
  assert words in str(e.value)
  with pytest.raises(ValueError, match="rng: must be a numpy.random.Generator"):
    S.perturb(S.Float(0.0, 1.0), 0.5, 0)


def test_user_names_declare_their_own_hyperparameters():
  space = S.from_config(
    {
      "scale": {"type": "float", "lo": 0.5, "hi": 2.0},
      "blocks": {"type": "int", "lo": 1, "hi": 3, "structural": True},
      "norm": {"type": "choice", "values": ["layer", "batch"]},
    }
  )
  assert not S.is_structural("scale", space) and S.is_structural("blocks", space)
  assert space["blocks"].hparam("blocks").kind == "int"
  assert space["norm"].hparam("norm").kind == "choice"
  assert S.Choice((0.1, 0.2)).hparam("p").kind == "float"  # numbers stay numbers
  assert S.to_config(space)["blocks"] == {
    "type": "int",
    "lo": 1,
    "hi": 3,
    "log": False,
    "points": None,
    "structural": True,
  }
  assert S.from_config(S.to_config(space)) == space


@pytest.mark.parametrize(
  "name", ["epoch", "member", "wall_s", "hparams", "val_accuracy", "train_loss"]
)
def test_a_name_a_metrics_row_already_has_is_refused(name):
  # Results.dataframe merges each row's hyperparameters into its columns: a
  # user hyperparameter named "epoch" replaced the epoch column silently.
  with pytest.raises(ValueError, match=rf"^space.{name}: a metrics row already has this column"):
    S.validate({name: S.Float(0.5, 2.0)})
  assert S.validate({"epochs_scale": S.Float(0.5, 2.0)})  # only the exact columns and prefixes

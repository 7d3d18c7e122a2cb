"""A user's own model, data, loss and metric through the real launcher, by import string.

The worked example (``experiments/examples/my_config.py``) runs as a
subprocess, shrunk (4 members, 2 epochs); every bad import string is one
``error:`` line, exit status 1 and no workdir.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from hpjax import config as config_lib
from hpjax import tuner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "experiments", "examples", "my_config.py")
SMALL = [
  "--config.population=4",
  "--config.epochs=2",
  "--config.data.max_train=200",
  "--config.report=False",
]


def _env(path=None):
  """The launcher's environment in tests: CPU, the suite's cache, ``path`` on PYTHONPATH."""
  cache = os.environ.get("HPJAX_TEST_CACHE_DIR", os.path.join(ROOT, ".jax_cache"))
  env = dict(os.environ, HPJAX_CACHE_MIN_SECS="0", HPJAX_CACHE_DIR=cache, JAX_PLATFORMS="cpu")
  if path:
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(path), env.get("PYTHONPATH")) if p)
  return env


def _run(workdir, *args, config=CONFIG, path=None):
  return subprocess.run(
    [sys.executable, "-m", "experiments.tune", f"--config={config}", f"--workdir={workdir}", *args],
    cwd=ROOT,
    env=_env(path),
    capture_output=True,
    text=True,
    timeout=600,
  )


@pytest.fixture(scope="module")
def example_run(tmp_path_factory):
  """The example config, shrunk, run once by the real launcher."""
  workdir = tmp_path_factory.mktemp("user_code") / "run"
  r = _run(workdir, *SMALL)
  assert r.returncode == 0, r.stderr[-3000:]
  return workdir, r


def _jsonl(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.xdist_group("user_code")
def test_example_trains_the_users_model_ranked_by_the_users_metric(example_run):
  workdir, r = example_run
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["members"] == 4 and summary["member_epochs"] == 8
  assert summary["fitness"] == "error" and summary["mode"] == "min"  # the user's metric ranks
  assert set(summary["val"]) == {"error", "top2", "loss"} and set(summary["test"]) == {
    "error",
    "top2",
    "loss",
  }
  hp = summary["hyperparameters"]
  assert hp["hidden"] == 32 and hp["channels"] in (8, 16) and 0.0 <= hp["noise"]
  rows = _jsonl(workdir / "metrics.jsonl")
  assert len(rows) == 8 and {"val_error", "val_top2", "train_error"} <= set(rows[0])
  last = {row["member"]: row["val_error"] for row in rows if row["epoch"] == 2}
  assert summary["best_member"] == min(last, key=last.get)
  # PBT: the worst copied a better member (lower error) and perturbed the
  # model's own traced hyperparameter, within the structural group.
  events = _jsonl(workdir / "lineage.jsonl")
  assert events and all(e["donor_fitness"] <= e["target_fitness"] for e in events)
  assert any(e["new_hparams"]["noise"] != e["old_hparams"]["noise"] for e in events)
  assert all(e["new_hparams"]["channels"] == e["old_hparams"]["channels"] for e in events)
  config = json.loads((workdir / "config.json").read_text())
  assert config["model"] == {"factory": "experiments.examples.my_model:CNN", "hidden": 32}
  assert config["data"]["source"] == "experiments.examples.my_data:digits"
  assert config["loss"].endswith(":focal_loss") and config["metric"].endswith(":METRICS")
  assert "best member" in r.stdout and "val error" in r.stdout


@pytest.mark.xdist_group("user_code")
def test_relaunch_resumes_the_users_run(tmp_path, example_run):
  workdir = tmp_path / "run"
  shutil.copytree(example_run[0], workdir)
  r = _run(workdir, *SMALL, "--config.epochs=3")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "resuming from the checkpoint of epoch 2" in r.stdout
  rows = _jsonl(workdir / "metrics.jsonl")
  assert [sum(1 for row in rows if row["epoch"] == e) for e in (1, 2, 3)] == [4, 4, 4]


@pytest.mark.xdist_group("user_code")
def test_best_config_retrains_the_users_model(tmp_path, example_run):
  workdir = example_run[0]
  best = json.loads((workdir / "best" / "config.json").read_text())
  assert best["model"]["factory"] == "experiments.examples.my_model:CNN"
  assert best["population"] == 1 and set(best["space"]) == {"channels", "noise"}
  from_json = os.path.join(ROOT, "experiments", "configs", "from_json.py")
  r = _run(
    tmp_path / "retrained",
    "--config.report=False",
    config=f"{from_json}:{workdir / 'best' / 'config.json'}",
  )
  assert r.returncode == 0, r.stderr[-3000:]
  again = json.loads((tmp_path / "retrained" / "summary.json").read_text())
  summary = json.loads((workdir / "summary.json").read_text())
  assert again["members"] == 1 and again["fitness"] == "error"
  assert again["hyperparameters"] == summary["hyperparameters"]


@pytest.mark.xdist_group("user_code")
def test_an_import_string_in_the_workdir_is_never_imported(tmp_path, example_run):
  # A workdir's config.json is only compared with the command line's config:
  # an import string written there does not run, and the relaunch is refused.
  workdir = tmp_path / "run"
  shutil.copytree(example_run[0], workdir)
  config = json.loads((workdir / "config.json").read_text())
  config["model"]["factory"] = "tripwire:CNN"
  (workdir / "config.json").write_text(json.dumps(config))
  modules = tmp_path / "modules"
  modules.mkdir()
  marker = tmp_path / "imported"
  (modules / "tripwire.py").write_text(f"open({str(marker)!r}, 'w').close()\nCNN = None\n")
  r = _run(workdir, *SMALL, path=modules)
  err = _one_error(r, "--workdir", "model.factory")
  assert "another config" in err
  assert not marker.exists()


def _one_error(r, *words):
  assert r.returncode == 1, (r.returncode, r.stderr[-3000:])
  lines = [l for l in r.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-3000:]
  for w in words:
    assert w in lines[0], (w, lines[0])
  return lines[0]


# The user's modules of the bad cases, written to a directory on PYTHONPATH.
MODULES = {
  "raises_inside.py": "import os\nraise RuntimeError('the user module fails')\n",
  "imports_missing.py": "import surely_not_installed_xyz\n",
  "objects.py": textwrap.dedent("""\
        WIDTH = 3
        def name():
          return "digits"
        def failing():
          raise ValueError("no data today")
        def metric(outputs, y):
          return outputs[:, 0]
        """),
}

BAD = [
  (
    "model.factory=experiments.examples.my_model.CNN",
    ["config.model.factory", "is not an import string", "module.path:name"],
  ),
  (
    "model.factory=no_such_module_xyz:CNN",
    ["config.model.factory", "no module named 'no_such_module_xyz'"],
  ),
  (
    "model.factory=raises_inside:CNN",
    [
      "config.model.factory",
      "module 'raises_inside' was found but importing it failed",
      "RuntimeError: the user module fails",
      "raises_inside.py, line 2",
    ],
  ),
  (
    "model.factory=imports_missing:CNN",
    [
      "config.model.factory",
      "module 'imports_missing' was found but importing it failed",
      "No module named 'surely_not_installed_xyz'",
    ],
  ),
  (
    "model.factory=experiments.examples.my_model:CNNN",
    ["config.model.factory", "has no attribute 'CNNN'", "did you mean 'CNN'"],
  ),
  (
    "model.factory=objects:WIDTH",
    ["config.model.factory", "'objects:WIDTH' is an int, not an nnx.Module class"],
  ),
  (
    "data.source=objects:failing",
    [
      "config.data.source",
      "'objects:failing' raised ValueError: no data today",
      "objects.py, line 5",
    ],
  ),
  ("data.source=objects:name", ["config.data.source", "returned a str; it must return (x, y)"]),
  ("data.source=objects:nothing", ["config.data.source", "has no attribute 'nothing'"]),
  ("loss=objects:WIDTH", ["config.loss", "is an int, not a function"]),
  ("loss=focal", ["config.loss", "unknown value 'focal'", "import string"]),
  ("metric=objects:metric", ["config.metric", "is a function, not an hpjax.Metric"]),
  ("fitness=accuracy", ["config.fitness", "unknown value 'accuracy'; allowed: error, top2, loss"]),
]


@pytest.mark.parametrize("override, words", BAD, ids=[b[0] for b in BAD])
def test_a_bad_import_string_is_one_line_and_writes_nothing(tmp_path, override, words):
  modules = tmp_path / "modules"
  modules.mkdir()
  for name, text in MODULES.items():
    (modules / name).write_text(text)
  r = _run(tmp_path / "run", *SMALL, f"--config.{override}", path=modules)
  _one_error(r, *words)
  assert "Traceback" not in r.stderr
  assert not (tmp_path / "run").exists()


def test_a_factory_on_a_built_in_config_refuses_a_changed_built_in_field(tmp_path):
  # The built-in fields at their defaults are left out for the factory;
  # depth=3 was set on purpose, and CNN does not take it.
  sweep = os.path.join(ROOT, "experiments", "configs", "digits_sweep.py")
  r = _run(
    tmp_path / "run",
    *SMALL,
    "--config.model.factory=experiments.examples.my_model:CNN",
    "--config.model.depth=3",
    config=sweep,
  )
  _one_error(
    r,
    "config.model.depth: experiments.examples.my_model:CNN takes no argument "
    "'depth' (it takes: channels, hidden)",
  )
  assert not (tmp_path / "run").exists()


def test_example_config_builds_without_training():
  from experiments.examples import my_config  # pylint: disable=g-import-not-at-top

  assert "python -m experiments.tune --config=experiments/examples/my_config.py" in (
    my_config.__doc__
  )
  c = my_config.get_config()
  cfg = config_lib.validate(c)
  assert set(cfg["model"]) == {"factory", "hidden"}  # no built-in name filled in
  c.population = 4
  exp = tuner.from_config(c)
  assert exp.model.__name__ == "CNN" and exp.loss.__name__ == "focal_loss"
  assert [m.name for m in exp.metric] == ["error", "top2"]
  assert (exp.fitness, exp.mode) == ("error", "min")
  assert exp.data.name == "experiments.examples.my_data:digits" and exp.data.num_test == 297
  assert all(m["hidden"] == 32 and m["channels"] in (8, 16) for m in exp.members)


def test_a_factory_ignores_built_in_model_defaults_but_not_changed_ones():
  from experiments.examples import my_config  # pylint: disable=g-import-not-at-top

  c = my_config.get_config().to_dict()
  # A model section made from the defaults, as --config.model.factory on a
  # built-in config would leave it: the built-in names still at theirs.
  c["model"] = {**config_lib.defaults()["model"], "factory": c["model"]["factory"], "hidden": 32}
  c["population"] = 2
  exp = tuner.from_config(c)
  assert set(exp.members[0]) >= {"hidden", "channels"} and "family" not in exp.members[0]
  c["model"]["width"] = 8
  with pytest.raises(ValueError, match=r"config.model.width: .*:CNN takes no argument 'width'"):
    tuner.from_config(c)


def test_an_older_workdir_config_without_the_import_fields_resumes(tmp_path):
  from experiments.configs import digits_sweep  # pylint: disable=g-import-not-at-top

  cfg = config_lib.validate(digits_sweep.get_config())
  old = json.loads(json.dumps(cfg))
  del old["loss"], old["metric"], old["model"]["factory"]
  (tmp_path / "config.json").write_text(json.dumps(old))
  tuner.check_workdir(str(tmp_path), cfg)  # the fields' defaults: the same config
  cfg["loss"] = "mse"
  with pytest.raises(ValueError, match=r"another config \(loss differ"):
    tuner.check_workdir(str(tmp_path), cfg)


STREAM_MODULE = '''
import numpy as np
import hpjax

def digits():
  """A Stream over digits' training split: shuffled per epoch, seeded by the epoch."""
  d = hpjax.load_dataset("digits", seed=0, max_train=256)
  x, y = np.asarray(d.x_train), np.asarray(d.y_train)
  steps = len(x) // 32

  def train(epoch):
    order = np.random.default_rng(epoch).permutation(len(x))
    for i in range(steps):
      j = order[i * 32 : (i + 1) * 32]
      yield x[j], y[j]

  return hpjax.data.Stream(
    train,
    val=(np.asarray(d.x_val), np.asarray(d.y_val)),
    test=(np.asarray(d.x_test), np.asarray(d.y_test)),
    steps_per_epoch=steps,
    batch_size=32,
  )
'''


def test_a_stream_from_a_users_function_trains_through_the_launcher(tmp_path):
  # data.source names a function returning an hpjax.data.Stream: the
  # launcher trains on its batches (the example's batch size is the stream's).
  modules = tmp_path / "modules"
  modules.mkdir()
  (modules / "my_stream.py").write_text(textwrap.dedent(STREAM_MODULE))
  small = [a for a in SMALL if "max_train" not in a]
  r = _run(tmp_path / "run", *small, "--config.data.source=my_stream:digits", path=modules)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "streamed" in r.stdout + r.stderr
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["members"] == 4 and summary["member_epochs"] == 8
  assert 0.0 < summary["test"]["error"] < 1.0


def test_a_loading_option_set_for_a_stream_is_one_line_and_writes_nothing(tmp_path):
  # data.max_train caps arrays or a named source; a Stream is trained on as it is.
  modules = tmp_path / "modules"
  modules.mkdir()
  (modules / "my_stream.py").write_text(textwrap.dedent(STREAM_MODULE))
  r = _run(tmp_path / "run", *SMALL, "--config.data.source=my_stream:digits", path=modules)
  _one_error(r, "config.data.max_train: 200 does not apply to the Stream", "leave")
  assert not (tmp_path / "run").exists()


def test_loading_options_left_unset_pass_for_data_used_as_it_is():
  data = tuner._dataset("digits", 0)  # pylint: disable=protected-access
  check = tuner._check_unused_options  # pylint: disable=protected-access
  unset = tuner._data_options(config_lib.defaults())  # pylint: disable=protected-access
  check(data, "config.data.source", unset)
  check(data, "config.data.source", {**unset, "task": "classification", "data_dir": "/x"})
  for name, value in (("image_size", 28), ("val_fraction", 0.2), ("task", "regression")):
    with pytest.raises(
      ValueError, match=rf"^config\.data\.{name}: .* does not apply to the Dataset"
    ):
      check(data, "config.data.source", {**unset, name: value})

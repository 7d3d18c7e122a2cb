"""The real absl launcher, run as a subprocess on a shrunk config."""

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "experiments", "configs", "digits_sweep.py")
SMALL = [
  "--config.population=4",
  "--config.epochs=2",
  "--config.data.max_train=200",
  "--config.model.width=4",
  "--config.model.depth=1",
  "--config.model.dense=16",
]


def _env():
  """The launcher's environment in tests: CPU, the suite's compilation cache."""
  cache = os.environ.get("HPJAX_TEST_CACHE_DIR", os.path.join(ROOT, ".jax_cache"))
  return dict(os.environ, HPJAX_CACHE_MIN_SECS="0", HPJAX_CACHE_DIR=cache, JAX_PLATFORMS="cpu")


def _run(config, workdir, *args):
  """Runs the real launcher to completion; returns the CompletedProcess.

  Plots are off unless a test asks for them (``--config.report=True`` later
  in ``args`` wins): they cost seconds and have their own tests.
  """
  return subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.tune",
      f"--config={config}",
      f"--workdir={workdir}",
      "--config.report=False",
      *args,
    ],
    cwd=ROOT,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=600,
  )


def _launch(workdir, *extra):
  return _run(CONFIG, workdir, *SMALL, *extra)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
  """One finished run of the small sweep (plots on): several tests read it."""
  workdir = tmp_path_factory.mktemp("small") / "run"
  r = _launch(workdir, "--config.report=True")
  assert r.returncode == 0, r.stderr[-3000:]
  return workdir, r


@pytest.mark.xdist_group("launcher_small")
def test_launcher_trains_and_writes_workdir(small_run):
  run, r = small_run
  summary = json.loads((run / "summary.json").read_text())
  assert summary["members"] == 4 and summary["member_epochs"] == 8
  assert 0.0 <= summary["test"]["accuracy"] <= 1.0
  assert set(summary["hyperparameters"]) >= {"learning_rate", "optimizer", "activation"}
  lines = (run / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 8 and "val_accuracy" in json.loads(lines[0])
  assert json.loads((run / "config.json").read_text())["population"] == 4
  assert "best member" in r.stdout
  # What a user looks at afterwards: plots, TensorBoard runs, the exported winner.
  plots = sorted(p.name for p in (run / "plots").iterdir())
  assert {"learning_curves.png", "hparam_trajectories.png", "fitness_vs_hparams.png"} <= set(plots)
  assert "plots: " in r.stdout and "hpjax-report" in r.stdout
  assert sorted(p.name for p in (run / "tensorboard").iterdir()) == [
    f"member_{i:03d}" for i in range(4)
  ]
  assert (run / "best" / "model" / "model.json").exists()


def test_launcher_bad_config_value_is_one_clear_line(tmp_path):
  r = _launch(tmp_path / "bad", "--config.space.optimizer.values=('sgd','lion')")
  assert r.returncode != 0
  err = [l for l in r.stderr.splitlines() if l.startswith("error:")]
  assert len(err) == 1 and "space.optimizer" in err[0] and "lion" in err[0] and "adam" in err[0]
  assert not (tmp_path / "bad").exists()  # nothing written on bad input


PBT_CONFIG = os.path.join(ROOT, "experiments", "configs", "digits_pbt.py")


@pytest.mark.xdist_group("launcher_small")
def test_launcher_retrains_the_exported_best_member(tmp_path, small_run):
  run, _ = small_run
  summary = json.loads((run / "summary.json").read_text())
  best = run / "best"
  assert (best / "model" / "model.json").exists() and (best / "schedule.json").exists()
  from_json = os.path.join(ROOT, "experiments", "configs", "from_json.py")
  r = _run(f"{from_json}:{best / 'config.json'}", tmp_path / "retrained")
  assert r.returncode == 0, r.stderr[-3000:]
  again = json.loads((tmp_path / "retrained" / "summary.json").read_text())
  assert again["members"] == 1 and again["member_epochs"] == 2
  for k in ("learning_rate", "optimizer", "activation", "batch_size"):
    assert again["hyperparameters"][k] == summary["hyperparameters"][k]


PBT_ARGS = [
  "--config.population=6",
  "--config.data.image_size=0",
  "--config.data.max_train=200",
  "--config.model.width=4",
  "--config.model.depth=1",
  "--config.model.dense=16",
  "--config.space.batch_size.values=(16, 32)",
]


def _pbt(workdir, epochs):
  r = _run(PBT_CONFIG, workdir, f"--config.epochs={epochs}", *PBT_ARGS)
  assert r.returncode == 0, r.stderr[-3000:]
  return r


@pytest.fixture(scope="module")
def pbt_straight(tmp_path_factory):
  """A small PBT run (two batch-size groups), 4 epochs straight."""
  workdir = tmp_path_factory.mktemp("pbt") / "straight"
  return workdir, _pbt(workdir, 4)


@pytest.mark.xdist_group("launcher_pbt")
def test_launcher_pbt_records_lineage_within_groups(pbt_straight):
  workdir, r = pbt_straight
  events = [json.loads(l) for l in (workdir / "lineage.jsonl").read_text().splitlines()]
  assert events, "PBT replaced nobody"
  for e in events:
    # Exploit stays within a structural group (the model's shape); batch size
    # is traced, so a copy may cross batch sizes and explore may move it.
    for k in ("family", "depth", "width", "dense"):
      assert e["new_hparams"][k] == e["old_hparams"][k]
    assert e["new_hparams"]["batch_size"] in (16, 32)
    assert e["donor"] != e["target"]
    assert e["donor_fitness"] >= e["target_fitness"]
  assert "replaced" in r.stdout


HALVING_CONFIG = os.path.join(ROOT, "experiments", "configs", "digits_halving.py")


def test_launcher_successive_halving_compacts_population(tmp_path):
  r = _run(
    HALVING_CONFIG,
    tmp_path / "sh",
    "--config.population=9",
    "--config.epochs=4",
    "--config.data.max_train=200",
    "--config.model.width=4",
    "--config.model.depth=1",
    "--config.model.dense=16",
  )
  assert r.returncode == 0, r.stderr[-3000:]
  summary = json.loads((tmp_path / "sh" / "summary.json").read_text())
  assert summary["members"] == 9 and summary["members_at_end"] == 1  # rungs at 1 and 3: 9 -> 3 -> 1
  rows = [json.loads(l) for l in (tmp_path / "sh" / "metrics.jsonl").read_text().splitlines()]
  assert [sum(1 for x in rows if x["epoch"] == e) for e in (1, 2, 3, 4)] == [9, 3, 3, 1]
  pruned = [json.loads(l) for l in (tmp_path / "sh" / "lineage.jsonl").read_text().splitlines()]
  assert len(pruned) == 8 and all(p["event"] == "pruned" for p in pruned)
  survivor = summary["best_member"]
  assert survivor not in {p["member"] for p in pruned}
  assert {x["member"] for x in rows if x["epoch"] == 4} == {survivor}


def test_launcher_learning_rate_range_test(tmp_path):
  config = os.path.join(ROOT, "experiments", "configs", "digits_lr_range.py")
  r = _run(
    config,
    tmp_path / "lr",
    "--config.population=8",
    "--config.epochs=3",
    "--config.space.learning_rate.points=8",
    "--config.space.learning_rate.lo=1e-5",
    "--config.space.learning_rate.hi=10.0",
    "--config.data.max_train=300",
    "--config.model.width=4",
    "--config.model.depth=1",
    "--config.model.dense=16",
  )
  assert r.returncode == 0, r.stderr[-3000:]
  lr = json.loads((tmp_path / "lr" / "summary.json").read_text())["lr_range"]
  assert len(lr["rates"]) == 8 and lr["rates"] == sorted(lr["rates"])
  assert 1e-5 < lr["best_rate"] < 10.0
  lo, hi = lr["suggested_range"]
  assert lo <= lr["best_rate"] <= hi
  assert "learning-rate range test: loss falls fastest" in r.stdout


def _digest_run(workdir):
  """Every number a run leaves: metrics rows and the newest checkpoint's leaves."""
  from hpjax import checkpoint  # pylint: disable=g-import-not-at-top

  rows = []
  for line in (workdir / "metrics.jsonl").read_text().splitlines():
    row = json.loads(line)
    row.pop("wall_s")  # the only field that may differ: seconds since the start
    rows.append(row)
  lineage = (workdir / "lineage.jsonl").read_text().splitlines()
  ck = checkpoint.Checkpointer(str(workdir / "checkpoints"))
  step = ck.latest_step()
  manifest = ck._read_manifest(step)  # pylint: disable=protected-access
  ck.close()
  return rows, lineage, step, [g["digest"] for g in manifest["groups"]]


@pytest.mark.xdist_group("launcher_pbt")
def test_resumed_run_is_bit_identical_to_uninterrupted(tmp_path, pbt_straight):
  _pbt(tmp_path / "resumed", 2)
  r = _pbt(tmp_path / "resumed", 4)  # relaunch, more epochs: resumes at epoch 2
  assert "resuming from the checkpoint of epoch 2" in r.stdout
  a, b = _digest_run(pbt_straight[0]), _digest_run(tmp_path / "resumed")
  assert a[2] == b[2] == 4
  assert a[0] == b[0]  # every metric of every member and epoch, exactly
  assert a[1] == b[1]  # the same PBT decisions
  assert a[3] == b[3]  # every parameter, optimizer state, key: same bytes


@pytest.mark.xdist_group("launcher_small")
def test_relaunch_with_other_config_is_refused_untouched(tmp_path, small_run):
  shutil.copytree(small_run[0], tmp_path / "run")
  before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()}
  r = _launch(tmp_path / "run", "--config.population=5", "--config.model.width=8")
  assert r.returncode == 1
  err = [l for l in r.stderr.splitlines() if l.startswith("error:")]
  assert len(err) == 1 and "population" in err[0] and "model.width" in err[0]
  assert "report" not in err[0]  # shown, not computed: it may differ (the run had plots on)
  after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()}
  assert before == after


KILL_ARGS = [
  "--config.population=4",
  "--config.epochs=12",
  "--config.data.max_train=600",
  "--config.model.width=4",
  "--config.model.depth=1",
  "--config.model.dense=16",
]


def _start(workdir):
  return subprocess.Popen(
    [
      sys.executable,
      "-m",
      "experiments.tune",
      f"--config={CONFIG}",
      f"--workdir={workdir}",
      "--config.report=False",
      *KILL_ARGS,
    ],
    cwd=ROOT,
    env=_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def _wait_for_epoch(workdir, epoch, proc, timeout=300):
  import time  # pylint: disable=g-import-not-at-top

  deadline = time.time() + timeout
  path = workdir / "metrics.jsonl"
  while time.time() < deadline and proc.poll() is None:
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    # Complete lines only: the run may be writing the last one.
    if any(json.loads(l)["epoch"] >= epoch for l in lines if l.endswith("\n")):
      return True
    time.sleep(0.02)
  return False


def _finish(workdir):
  proc = _start(workdir)
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  return out


@pytest.mark.xdist_group("launcher_kill")
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_signal_saves_and_resume_completes_identically(tmp_path, straight_run, signame):
  import signal  # pylint: disable=g-import-not-at-top

  signum = getattr(signal, signame)
  proc = _start(tmp_path / "run")
  assert _wait_for_epoch(tmp_path / "run", 2, proc), "the run ended before it could be stopped"
  proc.send_signal(signum)
  out, err = proc.communicate(timeout=300)
  del out
  assert proc.returncode == 128 + signum, err[-2000:]
  assert "relaunch the same command to resume" in err
  assert "resuming from the checkpoint" in _finish(tmp_path / "run")
  assert _digest_run(tmp_path / "run") == straight_run


@pytest.mark.xdist_group("launcher_kill")
def test_kill_9_at_any_point_resumes_to_the_same_result(tmp_path, straight_run):
  # One run killed three times: after epochs 1, 4 and 7, each time resumed
  # from what the kill left; it ends where the uninterrupted run ends.
  import signal  # pylint: disable=g-import-not-at-top

  for kill_after in (1, 4, 7):
    proc = _start(tmp_path / "run")
    assert _wait_for_epoch(tmp_path / "run", kill_after, proc), kill_after
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
  assert "resuming from the checkpoint" in _finish(tmp_path / "run")
  assert _digest_run(tmp_path / "run") == straight_run


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("straight")
  _finish(workdir)
  return _digest_run(workdir)


@pytest.mark.xdist_group("launcher_kill")
def test_damaged_newest_checkpoint_falls_back_to_previous(tmp_path, straight_run):
  proc = _start(tmp_path / "run")
  assert _wait_for_epoch(tmp_path / "run", 5, proc)
  import signal  # pylint: disable=g-import-not-at-top

  proc.send_signal(signal.SIGKILL)
  proc.communicate(timeout=60)
  ckdir = tmp_path / "run" / "checkpoints"
  steps = sorted(int(p.name) for p in ckdir.iterdir() if p.name.isdigit())
  assert len(steps) >= 2
  newest = ckdir / str(steps[-1])
  for f in newest.rglob("*"):
    if f.is_file() and f.stat().st_size > 0 and "manifest" not in f.name:
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # truncate the data
  proc = _start(tmp_path / "run")
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  assert f"checkpoint step {steps[-1]}" in err and "unreadable" in err
  assert f"resuming from the checkpoint of epoch {steps[-2]}" in out
  assert _digest_run(tmp_path / "run") == straight_run


def test_unusable_workdir_is_a_clear_error_before_training(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  r = _launch(blocker / "run")
  assert r.returncode == 1
  err = [l for l in r.stderr.splitlines() if l.startswith("error:")]
  assert len(err) == 1 and "--workdir" in err[0]
  assert "epoch" not in r.stdout


@pytest.mark.parametrize("name", ["mnist_pbt", "fashion_mnist_pbt", "cifar10_pbt"])
def test_launcher_file_based_configs_on_generated_copies(tmp_path, name):
  from hpjax.data import testing as data_lib  # pylint: disable=g-import-not-at-top

  if name == "cifar10_pbt":
    data_dir = data_lib.write_fake_cifar10(str(tmp_path / "cifar"), n_per_batch=12)
    extra = ["--config.batch_size=16", "--config.model.convs_per_stage=1"]
  else:
    data_dir = data_lib.write_fake_mnist(str(tmp_path / "idx"), n_train=120, n_test=40, gz=True)
    extra = ["--config.model.dense=16"]
  config = os.path.join(ROOT, "experiments", "configs", f"{name}.py")
  r = _run(
    config,
    tmp_path / "mnist",
    f"--config.data.data_dir={data_dir}",
    "--config.population=4",
    "--config.epochs=2",
    "--config.model.width=4",
    "--config.model.depth=1",
    *extra,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  summary = json.loads((tmp_path / "mnist" / "summary.json").read_text())
  assert summary["members"] == 4 and 0.0 <= summary["test"]["accuracy"] <= 1.0


def test_mistyped_config_field_is_one_clear_line(tmp_path):
  r = _launch(tmp_path / "typo", "--config.populaton=3")
  assert r.returncode == 1
  assert r.stderr.strip().splitlines() == [
    "error: --config: no field 'populaton'; did you mean 'population'?"
  ]
  assert not (tmp_path / "typo").exists()

"""The report of a tuning run: plots, report.json and the table, from real tiny runs.

Three tiny real runs are trained once per module (PBT, a learning-rate range
test, successive halving; the bench CNN shrunk to width 4); everything else
works on copies of their workdirs (checkpoints left out) or on hand-written
ones, so no test trains anything itself.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from hpjax import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BEST_RGB = np.array([214, 39, 40]) / 255.0  # matplotlib's tab:red, the best member's colour


def _tiny(module, **overrides):
  c = module.get_config()
  c.population = 4
  c.model.width = 4
  c.model.dense = 8
  for k, v in overrides.items():
    setattr(c, k, v)
  return c


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Workdirs of three tiny finished runs: ``pbt``, ``lr`` and ``halving``."""
  from experiments.configs import digits_halving  # pylint: disable=g-import-not-at-top
  from experiments.configs import digits_lr_range  # pylint: disable=g-import-not-at-top
  from experiments.configs import digits_pbt  # pylint: disable=g-import-not-at-top
  from hpjax import tuner  # pylint: disable=g-import-not-at-top

  base = tmp_path_factory.mktemp("report_runs")
  lr = _tiny(digits_lr_range, epochs=2)
  lr.space.learning_rate.points = 4
  configs = {
    "pbt": _tiny(digits_pbt, epochs=3),
    "lr": lr,
    "halving": _tiny(digits_halving, epochs=3),
  }
  out = {}
  for name, cfg in configs.items():
    out[name] = str(base / name)
    tuner.run(cfg, out[name], log=lambda s: None)
  return out


def _copy(src: str, dst) -> str:
  """A copy of a workdir without its checkpoints and previous report."""
  shutil.copytree(
    src,
    dst,
    ignore=shutil.ignore_patterns("checkpoints", "tensorboard", "best", "plots", "report.json"),
  )
  return str(dst)


def _rows(workdir: str) -> list[dict]:
  """The complete rows of metrics.jsonl (a truncated last line is skipped)."""
  rows = []
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      if line.endswith("\n"):
        rows.append(json.loads(line))
  return rows


def _best_at_last_epoch(workdir: str, metric: str = "val_accuracy", maximize: bool = True) -> int:
  """The best member by the last epoch's fitness, computed independently of hpjax.report."""
  rows = _rows(workdir)
  last = max(r["epoch"] for r in rows)
  vals = {r["member"]: r[metric] for r in rows if r["epoch"] == last}
  finite = {m: v for m, v in vals.items() if math.isfinite(v)}
  top = (max if maximize else min)(finite.values())
  return min(m for m, v in finite.items() if v == top)  # ties: the lower id


def _image(path: str) -> np.ndarray:
  """Checks a PNG is valid and not blank; returns its RGB pixels in [0, 1]."""
  with open(path, "rb") as f:
    head = f.read(8)
  assert head == PNG_SIGNATURE, path
  assert os.path.getsize(path) > 15_000, (path, os.path.getsize(path))
  from matplotlib import image  # pylint: disable=g-import-not-at-top

  img = image.imread(path)[..., :3]
  h, w = img.shape[:2]
  assert w >= 450 and h >= 300, (path, img.shape)
  ink = np.any(img < 0.9, axis=-1).mean()  # not white background
  assert 0.02 < ink < 0.8, (path, ink)
  return img


def _has_colour(img: np.ndarray, rgb: np.ndarray, min_pixels: int = 30) -> bool:
  return int((np.abs(img - rgb).max(axis=-1) < 0.06).sum()) >= min_pixels


def _names(result: dict) -> set[str]:
  return {os.path.basename(p) for p in result["plots"]}


# ---------------------------------------------------------------------------
# Finished runs.


@pytest.mark.xdist_group("report_runs")
def test_pbt_run_produces_every_plot_and_a_report(runs, tmp_path):
  workdir = _copy(runs["pbt"], tmp_path / "pbt")
  summary_before = hashlib.sha256(open(os.path.join(workdir, "summary.json"), "rb").read())
  result = report.build_report(workdir)
  assert _names(result) == {
    "learning_curves.png",
    "hparam_trajectories.png",
    "lineage.png",
    "fitness_vs_hparams.png",
    "parallel_coordinates.png",
  }
  for path in result["plots"]:
    assert os.path.dirname(path) == os.path.join(workdir, "plots")
    img = _image(path)
    if os.path.basename(path) in (
      "learning_curves.png",
      "hparam_trajectories.png",
      "fitness_vs_hparams.png",
    ):
      assert _has_colour(img, BEST_RGB), f"{path}: the best member is not highlighted"
  # summary.json is left alone; report.json holds the summary.
  assert (
    hashlib.sha256(open(os.path.join(workdir, "summary.json"), "rb").read()).digest()
    == summary_before.digest()
  )
  with open(os.path.join(workdir, "report.json")) as f:
    saved = json.load(f)
  s = result["summary"]
  assert saved["best_member"] == s["best_member"] and saved["status"] == "finished"
  assert sorted(saved["plots"]) == sorted(os.path.join("plots", n) for n in _names(result))


@pytest.mark.xdist_group("report_runs")
def test_best_member_and_summary_content(runs):
  workdir = runs["pbt"]
  s = report.summarize(report.load_run(workdir))
  rows = _rows(workdir)
  best = _best_at_last_epoch(workdir)
  assert s["best_member"] == best
  assert s["ranking"][0]["member"] == best and len(s["ranking"]) == 4
  fits = [r["fitness"] for r in s["ranking"]]
  assert fits == sorted(fits, reverse=True)  # accuracy: best first
  best_row = [r for r in rows if r["epoch"] == 3 and r["member"] == best][0]
  assert s["val"]["accuracy"] == pytest.approx(best_row["val_accuracy"])
  assert s["val"]["loss"] == pytest.approx(best_row["val_loss"])
  assert s["hyperparameters"]["learning_rate"] == pytest.approx(
    best_row["hparams"]["learning_rate"]
  )
  assert s["status"] == "finished" and s["epochs_done"] == s["epochs"] == 3
  assert s["member_epochs"] == len(rows) == 12
  assert s["mode"] == "max" and s["fitness"] == "accuracy" and s["controller"] == "pbt"
  with open(os.path.join(workdir, "summary.json")) as f:
    summary = json.load(f)
  assert s["wall_time_s"] == pytest.approx(summary["wall_time_s"])
  assert s["member_steps_per_s"] == pytest.approx(summary["member_steps_per_s"])
  if summary["best_member"] == best:
    assert s["test"] == pytest.approx(summary["test"])
  with open(os.path.join(workdir, "lineage.jsonl")) as f:
    events = [json.loads(l) for l in f if l.strip()]
  assert s["exploit_events"] == sum(1 for e in events if "donor" in e) > 0
  assert set(s["searched"]) == {"learning_rate", "optimizer", "activation", "batch_size"}
  table = report.format_table(s)
  assert f"best member {best} (epoch 3)" in table
  assert "finished, 3 epochs" in table and "pbt:" in table
  assert table.splitlines()[2].split()[:3] == ["rank", "member", "val"]
  assert table.splitlines()[3].split()[:2] == ["1", str(best)]


@pytest.mark.xdist_group("report_runs")
def test_lr_range_run(runs, tmp_path):
  workdir = _copy(runs["lr"], tmp_path / "lr")
  result = report.build_report(workdir)
  # One searched dimension: no parallel coordinates; no PBT: no lineage.
  assert _names(result) == {
    "learning_curves.png",
    "hparam_trajectories.png",
    "fitness_vs_hparams.png",
    "lr_range.png",
  }
  for path in result["plots"]:
    _image(path)
  lr = result["summary"]["lr_range"]
  with open(os.path.join(workdir, "summary.json")) as f:
    expected = json.load(f)["lr_range"]
  assert lr["source"] == "summary.json" and lr["best_rate"] == pytest.approx(expected["best_rate"])
  assert "learning-rate range test: " + expected["description"] in result["table"]
  # Without summary.json the analysis is recomputed from metrics.jsonl.
  os.remove(os.path.join(workdir, "summary.json"))
  run = report.load_run(workdir)
  again = report.summarize(run)
  lr2 = again["lr_range"]
  assert lr2["source"] == "metrics.jsonl" and again["status"] == "partial"
  _image(report.plot_lr_range(run, str(tmp_path / "lr_again.png"), lr2))
  rates = sorted(r["hparams"]["learning_rate"] for r in _rows(workdir) if r["epoch"] == 1)
  assert lr2["rates"] == pytest.approx(rates)
  assert len(lr2["diverged"]) == 4 and lr2["description"]


@pytest.mark.xdist_group("report_runs")
def test_halving_run_pruned_members_end_early(runs, tmp_path):
  workdir = _copy(runs["halving"], tmp_path / "halving")
  result = report.build_report(workdir)
  assert "lineage.png" not in _names(result)  # no exploit events
  assert {"learning_curves.png", "fitness_vs_hparams.png"} <= _names(result)
  for path in result["plots"]:
    _image(path)
  s = result["summary"]
  rows = _rows(workdir)
  last = {r["member"]: r["epoch"] for r in rows}
  assert s["best_member"] == _best_at_last_epoch(workdir)
  assert last[s["best_member"]] == 3
  # Survivors first, then members pruned later before those pruned earlier.
  assert [r["epoch"] for r in s["ranking"]] == sorted(last.values(), reverse=True)
  with open(os.path.join(workdir, "lineage.jsonl")) as f:
    pruned = [json.loads(l) for l in f if l.strip()]
  assert s["pruned"] == len(pruned) >= 2  # 4 -> 2 after epoch 1
  assert all(last[e["member"]] == e["epoch"] for e in pruned)  # curves end where pruned
  assert {e["member"] for e in pruned if e["epoch"] < 3} == {m for m, e in last.items() if e < 3}
  assert s["member_epochs"] == len(rows) < 12
  assert "epochs" in result["table"].splitlines()[2]  # members' epochs differ: shown


# ---------------------------------------------------------------------------
# Runs killed half way and damaged workdirs.


@pytest.mark.xdist_group("report_runs")
def test_killed_run_gives_a_partial_report(runs, tmp_path):
  workdir = _copy(runs["pbt"], tmp_path / "killed")
  os.remove(os.path.join(workdir, "summary.json"))
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path) as f:
    lines = [l for l in f if l.strip()]
  kept = [l for l in lines if json.loads(l)["epoch"] < 3]
  dropped = [l for l in lines if json.loads(l)["epoch"] == 3]
  with open(path, "w") as f:
    f.writelines(kept)
    f.write(dropped[0][: len(dropped[0]) // 2])  # the row being written when killed
  result = report.build_report(workdir)
  s = result["summary"]
  assert s["status"] == "partial" and s["epochs_done"] == 2 and s["epochs"] == 3
  assert s["test"] is None and s["member_epochs"] == 8
  assert s["best_member"] == _best_at_last_epoch(workdir)
  assert "partial, 2/3 epochs" in result["table"]
  assert any("truncated last line" in w for w in s["warnings"])
  assert "learning_curves.png" in _names(result)
  assert not os.path.exists(os.path.join(workdir, "summary.json"))


@pytest.mark.xdist_group("report_runs")
def test_incomplete_last_epoch_is_left_out(runs, tmp_path):
  workdir = _copy(runs["pbt"], tmp_path / "half_epoch")
  os.remove(os.path.join(workdir, "summary.json"))
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path) as f:
    lines = [l for l in f if l.strip()]
  with open(path, "w") as f:
    f.writelines(lines[:-2])  # epoch 3: two of four rows written
  run = report.load_run(workdir)
  assert run.epochs_done == 2 and len(run.rows) == 8
  assert any("epoch 3 is incomplete (2 of 4 rows)" in w for w in run.warnings)


def _write_workdir(path, rows, *, fitness="loss", space=None, lr_range_test=False):
  os.makedirs(path)
  config = {
    "population": len({r["member"] for r in rows}),
    "epochs": 3,
    "fitness": fitness,
    "controller": {"name": "none"},
    "lr_range_test": lr_range_test,
    "space": space or {},
  }
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f)
  with open(os.path.join(path, "metrics.jsonl"), "w") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
  return str(path)


def test_loss_fitness_ranks_min_first_and_nan_last(tmp_path):
  finals = {0: 0.9, 1: float("nan"), 2: 0.3, 3: 0.3, 4: 1.7}
  rows = [
    {"epoch": e, "member": m, "val_loss": v + (2 - e)} for e in (1, 2) for m, v in finals.items()
  ]
  run = report.load_run(_write_workdir(tmp_path / "w", rows))
  assert report.ranking(run) == [2, 3, 0, 4, 1]  # tie 2/3: lower id first; NaN last
  s = report.summarize(run)
  assert s["mode"] == "min" and s["best_member"] == 2 and s["val"] == {"loss": 0.3}
  assert s["ranking"][-1]["fitness"] is None  # NaN is written as null in report.json
  assert s["wall_time_s"] is None and s["status"] == "partial"
  # Rows without hparams (written before they were logged): learning curves only.
  result = report.build_report(run.workdir)
  assert _names(result) == {"learning_curves.png"}
  assert "wall time not recorded" in result["table"]
  json.loads(open(os.path.join(run.workdir, "report.json")).read())  # strict enough to parse


def test_lr_range_plot_marks_diverged_rates(tmp_path):
  rates = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
  curves = {
    1e-4: [2.3, 2.25, 2.2],
    1e-3: [2.0, 1.5, 1.2],
    1e-2: [1.0, 0.5, 0.3],
    1e-1: [2.0, 3.0, 4.0],
    1.0: [5.0, float("nan"), float("nan")],
  }
  rows = [
    {
      "epoch": e + 1,
      "member": m,
      "val_loss": curves[r][e],
      "val_accuracy": 0.5,
      "hparams": {"learning_rate": r, "optimizer": "adam", "model": {"width": 4}},
    }
    for e in range(3)
    for m, r in enumerate(rates)
  ]
  space = {
    "learning_rate": {"type": "float", "lo": 1e-4, "hi": 1.0, "log": True, "points": 5},
    "optimizer": {"type": "fixed", "value": "adam"},
  }
  workdir = _write_workdir(
    tmp_path / "w", rows, fitness="accuracy", space=space, lr_range_test=True
  )
  run = report.load_run(workdir)
  s = report.summarize(run)
  lr = s["lr_range"]
  assert lr["source"] == "metrics.jsonl"
  assert lr["best_rate"] == pytest.approx(1e-2)
  assert lr["diverged"] == [False, False, False, True, True]
  assert s["searched"] == ["learning_rate"]  # fixed dimensions are not searched
  assert s["best_member"] == 0  # every accuracy ties: the lowest id
  img = _image(report.plot_lr_range(run, str(tmp_path / "lr.png"), lr))
  assert _has_colour(img, BEST_RGB), "diverged rates are not marked"


def test_missing_files_raise_one_line_errors(tmp_path):
  with pytest.raises(report.ReportError, match=r"no such directory"):
    report.load_run(tmp_path / "nope")
  (tmp_path / "empty").mkdir()
  with pytest.raises(report.ReportError, match=r"config\.json: missing") as e:
    report.load_run(tmp_path / "empty")
  assert "\n" not in str(e.value)
  (tmp_path / "empty" / "config.json").write_text("{}")
  with pytest.raises(report.ReportError, match=r"metrics\.jsonl: missing"):
    report.load_run(tmp_path / "empty")
  (tmp_path / "empty" / "metrics.jsonl").write_text('{"epoch": 1, "memb')
  with pytest.raises(report.ReportError, match=r"metrics\.jsonl: no complete epoch"):
    report.load_run(tmp_path / "empty")
  (tmp_path / "empty" / "config.json").write_text("{not json")
  with pytest.raises(report.ReportError, match=r"config\.json: not valid JSON"):
    report.load_run(tmp_path / "empty")


# ---------------------------------------------------------------------------
# The command line.


def _cli(*args) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run(
    [sys.executable, "-m", "experiments.report", *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )


@pytest.mark.xdist_group("report_runs")
def test_cli_prints_the_table_and_the_plots(runs, tmp_path):
  workdir = _copy(runs["pbt"], tmp_path / "cli")
  r = _cli(f"--workdir={workdir}")
  assert r.returncode == 0, r.stderr[-3000:]
  best = _best_at_last_epoch(workdir)
  assert f"best member {best} (epoch 3)" in r.stdout
  assert "rank" in r.stdout and "learning_rate" in r.stdout
  for name in ("learning_curves.png", "lineage.png", "parallel_coordinates.png"):
    path = os.path.join(workdir, "plots", name)
    assert path in r.stdout and os.path.exists(path)
  assert os.path.exists(os.path.join(workdir, "report.json"))


def test_cli_missing_workdir_is_one_error_line(tmp_path):
  r = _cli(str(tmp_path / "missing"))  # the positional form
  assert r.returncode == 1
  lines = [l for l in r.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: ") and "missing" in lines[0], r.stderr
  assert r.stdout == ""


def test_a_pbt_halving_run_reports_its_exploits_prunings_and_lineage(tmp_path):
  # PBT with halving rungs both copies and prunes: the table counts both and
  # the lineage plot is drawn, as for a PBT run (they were left out).
  import ml_collections  # pylint: disable=g-import-not-at-top

  from experiments.configs import digits_pbt  # pylint: disable=g-import-not-at-top
  from hpjax import tuner  # pylint: disable=g-import-not-at-top

  c = _tiny(digits_pbt, epochs=3, population=8, report=False)
  c.controller = ml_collections.ConfigDict(
    dict(
      name="pbt_halving",
      pbt=dict(quantile_fraction=0.25),
      halving=dict(grace_period=1, reduction_factor=2, min_members=2),
    )
  )
  workdir = str(tmp_path / "hybrid")
  tuner.run(c, workdir, log=lambda s: None)
  events = [json.loads(l) for l in open(os.path.join(workdir, "lineage.jsonl"))]
  exploits = sum(1 for e in events if "donor" in e and "target" in e)
  pruned = sum(1 for e in events if e.get("event") == "pruned")
  assert exploits and pruned
  s = report.summarize(report.load_run(workdir))
  table = report.format_table(s)
  assert f"pbt: {exploits} exploit events" in table
  assert f"successive halving: {pruned} members pruned" in table
  result = report.build_report(workdir)
  assert "lineage.png" in _names(result)
  _image(os.path.join(workdir, "plots", "lineage.png"))

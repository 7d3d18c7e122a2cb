"""What a run shows and leaves: the writers (table, progress bars, TensorBoard, jsonl)."""

import contextlib
import io
import os
import subprocess
import sys

import numpy as np
import pytest

from hpjax import tuner
from hpjax import writers


def _accumulator(path):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top

  acc = event_accumulator.EventAccumulator(path, size_guidance={"scalars": 0})
  acc.Reload()
  return acc


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  from experiments.configs import digits_pbt  # pylint: disable=g-import-not-at-top

  c = digits_pbt.get_config().to_dict()
  c.update(population=4, epochs=3, progress=False, report=False)
  c["data"]["max_train"] = 300
  c["model"].update(width=4, depth=1, dense=16)
  workdir = str(tmp_path_factory.mktemp("mon"))
  lines = []
  summary = tuner.run(c, workdir, log=lines.append)
  return workdir, summary, "\n".join(lines)


@pytest.mark.xdist_group("monitor_run")
def test_tensorboard_holds_per_member_scalars(run):
  workdir, summary, _ = run
  tb = os.path.join(workdir, "tensorboard")
  assert sorted(os.listdir(tb)) == [f"member_{i:03d}" for i in range(4)]
  acc = _accumulator(os.path.join(tb, "member_002"))
  tags = set(acc.Tags()["scalars"])
  assert {
    "train/loss",
    "train/accuracy",
    "val/loss",
    "val/accuracy",
    "hparams/learning_rate",
    "hparams/batch_size",
  } <= tags
  assert [e.step for e in acc.Scalars("val/accuracy")] == [1, 2, 3]
  # The values are the ones in metrics.jsonl.
  import json  # pylint: disable=g-import-not-at-top

  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  mine = [r for r in rows if r["member"] == 2]
  assert [e.value for e in acc.Scalars("val/accuracy")] == pytest.approx(
    [r["val_accuracy"] for r in mine]
  )
  assert [e.value for e in acc.Scalars("hparams/learning_rate")] == pytest.approx(
    [r["hparams"]["learning_rate"] for r in mine]
  )


@pytest.mark.xdist_group("monitor_run")
def test_tensorboard_hparams_dashboard_entries(run):
  workdir, summary, _ = run
  from tensorboard.plugins.hparams import plugin_data_pb2  # pylint: disable=g-import-not-at-top

  acc = _accumulator(os.path.join(workdir, "tensorboard", "member_001", "hparams"))
  content = acc.PluginTagToContent("hparams")
  assert content, "no HParams plugin data"
  infos = []
  for raw in content.values():
    data = plugin_data_pb2.HParamsPluginData.FromString(raw)
    if data.HasField("session_start_info"):
      infos.append(data.session_start_info)
  assert infos
  hp = infos[0].hparams
  assert hp["optimizer"].string_value in ("sgd", "rmsprop", "adam")
  assert hp["learning_rate"].number_value > 0
  assert "hparam/val_accuracy" in set(acc.Tags()["scalars"])


@pytest.mark.xdist_group("monitor_run")
def test_generation_table_is_printed_each_epoch(run):
  _, summary, text = run
  assert text.count("generation") >= 2
  assert "best member" in text and "member-steps/s" in text
  assert "median" in text and "worst" in text
  assert "replaced 1" in text  # quarter of 4 members


def _record(**kw):
  base = dict(
    epoch=3,
    epochs=10,
    ids=[0, 1, 2, 3],
    train={"train_loss": np.ones(4)},
    val={"accuracy": np.array([0.5, np.nan, 0.9, 0.7]), "loss": np.ones(4)},
    hparams=[{"learning_rate": 0.0123, "optimizer": "adam", "width": 8}] * 4,
    fitness_name="accuracy",
    mode="max",
    generation=2,
    seconds=2.0,
    member_steps=100,
    wall_s=5.0,
    note="replaced 1",
  )
  return writers.EpochRecord(**{**base, **kw})


def test_generation_table_content():
  text = writers.generation_table(_record(), ["learning_rate", "optimizer", "width"])
  assert "epoch   3/10  generation 2  2.0 s  50 member-steps/s  replaced 1" in text
  assert "best 0.9000  median 0.7000  worst 0.5000  (1 diverged)" in text
  assert "best member 2: learning_rate 0.0123  optimizer adam  width 8" in text
  low = writers.generation_table(
    _record(
      epoch=1,
      epochs=1,
      generation=None,
      fitness_name="loss",
      mode="min",
      ids=[0, 1],
      val={"loss": np.array([0.3, 0.1])},
      hparams=[{}, {}],
      note="",
    ),
    [],
  )
  assert "best 0.1000" in low and "worst 0.3000" in low and "generation" not in low
  assert "best member 1" in low


def test_progress_bars_advance_and_close():
  err, out = io.StringIO(), io.StringIO()
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
    c = writers.Console(epochs=4, interval=2, progress=True)
    for epoch in range(1, 5):
      c.epoch(
        _record(
          epoch=epoch,
          epochs=4,
          ids=[0],
          train={"train_loss": np.ones(1)},
          val={"accuracy": np.array([0.5])},
          hparams=[{"learning_rate": 0.1}],
        )
      )
    c.close()
  bars = err.getvalue()
  assert "generations" in bars and "2/2" in bars and "best accuracy=0.5" in bars
  # Tables are written through tqdm while bars are shown, all four of them.
  tables = [l for l in out.getvalue().splitlines() if l.startswith("epoch")]
  assert [t[:9] for t in tables] == ["epoch   1", "epoch   2", "epoch   3", "epoch   4"]


def test_resume_jsonl_drops_later_epochs_and_a_torn_line(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text(
    '{"epoch": 1, "member": 0}\n{"epoch": 2, "member": 0}\n'
    '{"epoch": 3, "member": 0}\n{"epoch": 3, "mem'
  )
  writers.resume_jsonl(str(path), 2)
  assert path.read_text() == '{"epoch": 1, "member": 0}\n{"epoch": 2, "member": 0}\n'
  path.write_text('{"epoch": 1}\nnot json\n{"epoch": 2}\n')
  with pytest.raises(ValueError, match=r"metrics.jsonl: line 2 is not a JSON record"):
    writers.resume_jsonl(str(path), 2)


_FAKE_TORCH = """
import os
open(os.environ["TORCH_MARKER"], "a").write("imported\\n")
Tensor = type("Tensor", (), {})
"""

_WRITE_EVENTS = """
import os, sys
from hpjax import writers
W = writers.summary_writer_class()
assert "torch" not in sys.modules
w = W(os.environ["TB_DIR"])
w.add_scalar("val/accuracy", 0.5, 1)
w.add_hparams({"lr": 0.1, "optimizer": "adam"}, {"hparam/val_accuracy": 0.5}, name="hparams")
w.close()
assert not os.path.exists(os.environ["TORCH_MARKER"]), "tensorboardX imported torch"
import torch  # importable again once tensorboardX is loaded
assert os.path.exists(os.environ["TORCH_MARKER"])
print("ok")
"""


def test_tensorboardx_is_imported_without_torch(tmp_path):
  # A stand-in `torch` package first on the path records whether it is
  # imported: tensorboardX would import it at import time.
  (tmp_path / "torch").mkdir()
  (tmp_path / "torch" / "__init__.py").write_text(_FAKE_TORCH)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(
    os.environ,
    PYTHONPATH=os.pathsep.join([str(tmp_path), root]),
    TORCH_MARKER=str(tmp_path / "marker"),
    TB_DIR=str(tmp_path / "tb"),
    JAX_PLATFORMS="cpu",
  )
  r = subprocess.run(
    [sys.executable, "-c", _WRITE_EVENTS], env=env, capture_output=True, text=True, timeout=300
  )
  assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
  assert os.listdir(tmp_path / "tb")  # the event file was written

"""The population sharded over devices and processes (hpjax.distributed).

Simulated CPU devices must be configured before JAX starts its backend, so
every multi-device check runs in a fresh subprocess (``JAX_NUM_CPU_DEVICES``)
that shares the suite's persistent compilation cache.

Why a tolerance and not bit equality: a sharded group runs the same per-member
program, but each device vmaps over fewer members (and the CPU member chunking
follows the per-device count), so XLA picks other kernel blockings for the
batched matmuls and sums in another order. Member i's keys, data order and
hyperparameters are the same, so results agree to float32 rounding (about
1e-6 relative after two epochs here); a PBT decision could only differ if two
fitness values were within that rounding of each other.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from hpjax import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("HPJAX_TEST_CACHE_DIR", os.path.join(ROOT, ".jax_cache"))
RTOL, ATOL = 1e-4, 1e-6


def _env(devices: int, **extra) -> dict:
  """A subprocess environment: CPU with ``devices`` devices, the suite's cache."""
  return dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    JAX_NUM_CPU_DEVICES=str(devices),
    HPJAX_CACHE_DIR=CACHE,
    HPJAX_CACHE_MIN_SECS="0",
    **extra,
  )


# ---------------------------------------------------------------------------
# In-process: argument checks and padding helpers (no backend start needed).


def test_initialize_single_process_is_a_no_op_and_bad_arguments_are_named():
  assert distributed.initialize() is False
  assert distributed.initialize(num_processes=1) is False
  with pytest.raises(ValueError, match="coordinator_address"):
    distributed.initialize(num_processes=2, process_id=0)
  with pytest.raises(ValueError, match=r"process_id: must be in \[0, 2\), got 2"):
    distributed.initialize("localhost:1234", 2, 2)
  with pytest.raises(ValueError, match="num_processes"):
    distributed.initialize("localhost:1234", 0, 0)


def test_padding_helpers_and_auto_mesh_on_one_device():
  mesh = distributed.population_mesh()
  assert distributed.padded_size(3, None) == 3
  assert distributed.padded_size(3, mesh) == 3 * mesh.size
  assert distributed.pad_index([2, 0, 1], 5) == [2, 0, 1, 2, 2]
  # One device: the plain engine, exactly as without the distributed module.
  assert distributed.resolve_mesh("auto") is None
  assert distributed.resolve_mesh(None) is None
  with pytest.raises(ValueError, match="mesh"):
    distributed.resolve_mesh("all")


# ---------------------------------------------------------------------------
# One process, 4 simulated devices: sharded == unsharded.

_SHARDED_VS_SINGLE = textwrap.dedent("""
    import jax
    import numpy as np
    jax.config.update("jax_compilation_cache_dir", {cache!r})
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    from jax._src import dispatch
    import hpjax
    from hpjax import distributed

    assert jax.device_count() == 4, jax.devices()
    TINY = dict(family="vgg", depth=1, width=4, dense=8)
    data = hpjax.load_dataset("digits", seed=0, max_train=128)
    # Groups of 3 (batch 16) and 1 (batch 32): both padded to 4 on 4 devices.
    members = [
        hpjax.Member(**TINY, batch_size=16, learning_rate=0.01, optimizer="adam"),
        hpjax.Member(**TINY, batch_size=32, learning_rate=0.05, optimizer="sgd"),
        hpjax.Member(**TINY, batch_size=16, learning_rate=0.003, optimizer="rmsprop",
                     activation="tanh", dropout=0.2),
        hpjax.Member(**TINY, batch_size=16, learning_rate=0.02, optimizer="momentum"),
    ]

    def generation(pop, donors):
      train = pop.train_epoch()
      val = pop.evaluate("val")
      hps = pop.hparams()
      new = [dict(h) for h in hps]
      for i, d in enumerate(donors):
        if d != i:  # exploit (across devices) and explore
          new[i] = dict(hps[d], learning_rate=hps[d]["learning_rate"] * 1.2, activation="tanh")
      pop.set_member_hparams(new, donors=donors)
      return train, val

    def run(mesh):
      pop = hpjax.Population(members, data, candidates={{"activation": ("relu", "tanh")}},
                             mesh=mesh, batch_mode="structural")
      out = {{}}
      out["train1"], out["val1"] = generation(pop, [0, 1, 0, 3])  # member 2 copies member 0
      events = []
      listener = lambda name, *a, **k: events.append(name) if name in (
          dispatch.JAXPR_TRACE_EVENT, dispatch.BACKEND_COMPILE_EVENT) else None
      jax.monitoring.register_event_duration_secs_listener(listener)
      try:
        out["train2"], out["val2"] = generation(pop, [3, 1, 2, 3])  # member 0 copies member 3
      finally:
        jax.monitoring.unregister_event_duration_listener(listener)
      assert events == [], f"{{len(events)}} traces/compiles after the first generation"
      out["test2"] = pop.evaluate("test")
      out["hparams"] = pop.hparams()
      out["states"] = jax.tree.map(np.array, pop.checkpoint_states())  # before donation
      pop.compact([3, 2, 1])  # halving: group sizes 2 and 1
      out["train3"] = pop.train_epoch()
      return pop, out

    single, ref = run(None)
    sharded, got = run("auto")
    assert single.mesh is None and sharded.mesh.size == 4
    for g in sharded.groups:
      for leaf in jax.tree.leaves(g.state):
        assert leaf.shape[0] == 4, leaf.shape  # real members + pad members
        assert leaf.sharding.spec == jax.sharding.PartitionSpec("population"), leaf.sharding
    assert got["hparams"] == ref["hparams"]
    for k in ("train1", "val1", "train2", "val2", "test2", "train3"):
      for name in ref[k]:
        np.testing.assert_allclose(got[k][name], ref[k][name], rtol={rtol}, atol={atol},
                                   err_msg=k + "/" + name)
    for a, b in zip(got["states"], ref["states"]):
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert np.shape(x) == np.shape(y)
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol={rtol}, atol={atol})
    # Sharded device states also go through the Checkpointer directly and come
    # back with the template's sharding.
    from hpjax.checkpoint import Checkpointer
    import tempfile
    states = [g.state for g in sharded.groups]
    with tempfile.TemporaryDirectory() as d, Checkpointer(d) as ck:
      ck.save(1, states)
      _, back, _ = ck.restore(states)
    for a, b in zip(back, states):
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.sharding == y.sharding, (x.sharding, y.sharding)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    print("sharded == single OK")
    """)


def test_sharded_over_4_devices_equals_one_device():
  code = _SHARDED_VS_SINGLE.format(cache=CACHE, rtol=RTOL, atol=ATOL)
  r = subprocess.run(
    [sys.executable, "-c", code], cwd=ROOT, env=_env(4), capture_output=True, text=True, timeout=600
  )
  assert r.returncode == 0, r.stderr[-4000:]
  assert "sharded == single OK" in r.stdout


# ---------------------------------------------------------------------------
# The launcher: one process vs two processes (gloo), checkpoints across device counts.

_CONFIG = textwrap.dedent("""
    from experiments.configs import digits_pbt

    def get_config():
      c = digits_pbt.get_config()
      # One structural group of 3 members (batch 32): padded to 4 on 2 and on
      # 4 devices. Seed 0: after epoch 1 member 1 copies member 2 (accuracy
      # 0.08 vs 0.39); on 2 processes x 2 devices they live in different
      # processes. One group, because process 1 of a multi-process run
      # compiles everything itself (JAX writes and shares the persistent
      # cache from process 0 only, and on CPU the keys differ per process).
      c.seed = 0
      c.population = 3
      c.epochs = 2
      c.data.max_train = 128
      c.model.width, c.model.depth, c.model.dense = 4, 1, 8
      del c.space["batch_size"]
      c.tensorboard = False  # not what these processes test: less to write per process
      c.progress = False
      return c
    """)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("config") / "tiny_pbt.py"
  path.write_text(_CONFIG)
  return str(path)


def _cmd(config_file, workdir, *args):
  return [
    sys.executable,
    "-m",
    "experiments.tune",
    f"--config={config_file}",
    f"--workdir={workdir}",
    f"--jax_cache_dir={CACHE}",
    *args,
  ]


def _launch(config_file, workdir, devices, *args):
  """Starts the launcher in one process with ``devices`` CPU devices."""
  return subprocess.Popen(
    _cmd(config_file, workdir, *args),
    cwd=ROOT,
    env=_env(devices),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def _finish(*procs, timeout=600):
  """Waits for all; on a failure or timeout kills the others. Returns outputs."""
  outs = []
  try:
    for p in procs:
      out, err = p.communicate(timeout=timeout)
      outs.append((out, err))
      assert p.returncode == 0, err[-4000:]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.communicate()
  return outs


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _run_record(workdir):
  """What a run leaves: metrics rows (no wall time), lineage, the best member."""
  rows = []
  for line in (workdir / "metrics.jsonl").read_text().splitlines():
    row = json.loads(line)
    row.pop("wall_s", None)
    rows.append(row)
  lineage = [json.loads(l) for l in (workdir / "lineage.jsonl").read_text().splitlines()]
  summary = json.loads((workdir / "summary.json").read_text())
  return rows, lineage, summary


def _assert_same_run(got, want):
  rows, lineage, summary = got
  want_rows, want_lineage, want_summary = want
  assert len(rows) == len(want_rows) == 6
  for a, b in zip(rows, want_rows):
    assert (a["epoch"], a["member"]) == (b["epoch"], b["member"])
    assert a["hparams"] == b["hparams"]
    for k, v in b.items():
      if isinstance(v, float):
        np.testing.assert_allclose(a[k], v, rtol=RTOL, atol=ATOL, err_msg=f"{k} of {b}")
  assert len(lineage) == len(want_lineage)
  for a, b in zip(lineage, want_lineage):
    exact = ("epoch", "target", "donor", "old_hparams", "new_hparams")
    assert {k: a[k] for k in exact} == {k: b[k] for k in exact}
  assert summary["best_member"] == want_summary["best_member"]
  assert summary["hyperparameters"] == want_summary["hyperparameters"]
  np.testing.assert_allclose(
    summary["test"]["accuracy"], want_summary["test"]["accuracy"], rtol=RTOL
  )


def test_launcher_bad_process_flags_are_one_clear_line(config_file, tmp_path):
  r = subprocess.run(
    _cmd(config_file, tmp_path / "run", "--num_processes=2"),
    cwd=ROOT,
    env=_env(1),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert r.returncode == 1
  assert r.stderr.strip().splitlines()[-1] == (
    "error: coordinator_address: required with num_processes=2"
  )
  assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def single_run(config_file, tmp_path_factory):
  """The reference: one process, one device, two epochs straight."""
  workdir = tmp_path_factory.mktemp("single") / "run"
  _finish(_launch(config_file, workdir, 1))
  record = _run_record(workdir)
  assert record[1], "PBT exploited nobody: the test would not cover the gather"
  return record


@pytest.mark.xdist_group("distributed_single")
def test_two_processes_with_gloo_equal_one_process(config_file, single_run, tmp_path):
  workdir = tmp_path / "multi"
  port = _free_port()
  # Process 0 takes flags, process 1 the environment variables.
  p0 = subprocess.Popen(
    _cmd(
      config_file,
      workdir,
      f"--coordinator_address=localhost:{port}",
      "--num_processes=2",
      "--process_id=0",
    ),
    cwd=ROOT,
    env=_env(2),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  p1 = subprocess.Popen(
    _cmd(config_file, workdir),
    cwd=ROOT,
    env=_env(
      2,
      HPJAX_COORDINATOR_ADDRESS=f"localhost:{port}",
      HPJAX_NUM_PROCESSES="2",
      HPJAX_PROCESS_ID="1",
    ),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  (out0, _), (out1, _) = _finish(p0, p1)
  assert "epoch   2/2" in out0 and "best member" in out0
  assert "epoch" not in out1 and "best member" not in out1  # only process 0 reports
  _assert_same_run(_run_record(workdir), single_run)
  # Cross-process exploit: the lineage matches, and so do the exported model and checkpoint.
  assert (workdir / "best" / "model" / "model.json").exists()
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [
    "1",
    "2",
  ]


@pytest.mark.xdist_group("distributed_single")
def test_checkpoint_of_4_devices_resumes_on_1_and_on_2(config_file, single_run, tmp_path):
  four = tmp_path / "four"
  _finish(_launch(config_file, four, 4))
  _assert_same_run(_run_record(four), single_run)
  # Resume from the checkpoint of epoch 1 (taken after its PBT decision): drop
  # the newest step, relaunch on 1 and on 2 devices; epoch 2 is trained again.
  resumed = {1: tmp_path / "one", 2: tmp_path / "two"}
  for workdir in resumed.values():
    shutil.copytree(four, workdir)
    shutil.rmtree(workdir / "checkpoints" / "2")
  procs = [_launch(config_file, resumed[d], d) for d in (1, 2)]
  for out, _ in _finish(*procs):
    assert "resuming from the checkpoint of epoch 1" in out
  for workdir in resumed.values():
    _assert_same_run(_run_record(workdir), single_run)

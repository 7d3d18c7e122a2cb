"""Smoke test of experiments/benchmark.py: its hpjax-only parts at tiny sizes.

Runs in-process (one compiled epoch per P, at 8x8), with the memory part's
child processes sharing the suite's compilation cache; needs neither PyTorch
nor Optuna.
"""

from __future__ import annotations

import json
import math

import jax
import pytest

from experiments import benchmark


def _tiny(**changes) -> benchmark.Options:
  base = dict(populations=(1, 2), workloads=("digits8",), steps={"digits8": 2}, min_time=0.0,
              min_reps=2, alone_members=2, torch="off", matmul_size=256, matmul_reps=2,
              memory_workload="digits8",
              # JAX fixes its persistent cache at the first compile; the
              # children must use the one this process has.
              cache_dir=jax.config.jax_compilation_cache_dir)
  base.update(changes)
  return benchmark.Options(**base)


def test_benchmark_hpjax_parts_give_sane_numbers(tmp_path):
  # One memory child (P=2): a process start costs more than all the rest.
  result = benchmark.run(_tiny(parts=("throughput", "flops", "memory"), memory_populations=(2,)),
                         log=lambda _: None)
  path = tmp_path / "bench.json"
  path.write_text(json.dumps(result))
  result = json.loads(path.read_text())  # what --out writes: plain JSON

  assert result["matmul"]["flops_per_s"] > 0
  (w,) = result["workloads"]
  assert w["name"] == "digits8" and "torch" not in w and "torch_note" in w
  flops = w["flops"]["flops_per_member_step"]
  # The bench CNN at 8x8, batch 32: about 20 MFLOP per training step.
  assert 1e6 < flops < 1e9
  rows = {r["population"]: r for r in w["rows"]}
  assert set(rows) == {1, 2}
  for r in rows.values():
    assert r["member_steps_per_s"] > 0 and math.isfinite(r["member_steps_per_s"])
    assert 0.0 < r["fraction_of_matmul"] <= 1.0
    assert r["compile_s"] > 0 and len(r["call_s"]) >= 2
  # Population state is linear in P: two members hold twice one's bytes.
  assert rows[2]["state_bytes"] == 2 * rows[1]["state_bytes"]

  (mem,) = result["memory"]["rows"]
  assert mem["population"] == 2 and mem["state_bytes"] == rows[2]["state_bytes"]
  assert mem["peak_rss_bytes"] > mem["state_bytes"] > 0

  table = benchmark.markdown(result)
  assert "| hpjax population | 2 |" in table and "**Memory**" in table


def test_linearity_and_targets():
  rows = [{"population": p, "state_bytes": 1000 * p, "peak_rss_bytes": 10**6 + 2000 * p,
           "rss_after_bytes": 3000 * p + 10, "rss_before_bytes": 10} for p in (1, 8, 32)]
  lin = benchmark._linearity(rows)  # pylint: disable=protected-access
  assert abs(lin["state_bytes"]["bytes_per_member"] - 1000) < 1e-6
  assert lin["state_bytes"]["max_relative_residual"] < 1e-9
  assert abs(lin["peak_rss_bytes"]["intercept_bytes"] - 10**6) < 1e-3
  result = {"memory": {"linearity": lin}, "compile": {
      "cold": {"compile_s": 12.0}, "warm": {"compile_s": 4.0}}}
  met = {t["target"]: t["met"] for t in benchmark.targets(result)}
  assert met == {"compile of the default config, cold cache": True,
                 "compile of the default config, warm cache": False,
                 "population state linear in P (max relative residual of a line fit)": True}


def test_benchmark_compile_child_in_process():
  # The smallest config that still takes the tuner's path (compiles dominate).
  out = benchmark.child_compile(_tiny(compile_overrides=(
      "population=2", "model.width=4", "model.depth=1", "model.dense=8", "data.max_train=200",
      "space.batch_size.values=(32,)", "space.activation.values=('relu',)",
      "space.optimizer.values=('sgd',)")))
  assert out["members"] == 2 and out["groups"] == 1
  assert out["build_s"] > 0 and out["first_epoch_s"] > 0 and out["steady_epoch_s"] > 0
  assert out["maxrss_bytes"] > 0
  assert set(out["jax_events"]) >= {"trace_s", "backend_compile_s", "cache_hits"}


def test_stacked_member_states_are_the_population_state(digits):
  # The benchmark builds a P-member state from one-member inits (one compiled
  # init for every P); it must be the state hpjax.Population builds.
  import chex  # pylint: disable=g-import-not-at-top
  import hpjax  # pylint: disable=g-import-not-at-top
  opts = _tiny()
  members = benchmark._members(2, opts.batch_size)  # pylint: disable=protected-access
  single = benchmark.single_member_population(digits, dict(), opts)
  stacked = benchmark.population_state(single, members)
  real = hpjax.Population(members, digits, candidates={"activation": benchmark.ACTS}).groups[0].state
  chex.assert_trees_all_equal_shapes_and_dtypes(stacked, real)
  chex.assert_trees_all_close(stacked, real, rtol=1e-6, atol=1e-7)


def test_benchmark_devices_part_scales_over_simulated_devices():
  # Two children: the plain engine on one device, and 3 members split over
  # 2 simulated CPU devices (padded to 4, two per device).
  result = benchmark.run(_tiny(parts=("devices",), device_counts=(2, 1), device_population=3,
                               device_workload="digits8", device_rounds=1),
                         log=lambda _: None)
  dev = result["devices"]
  assert dev["backend"] == "cpu" and dev["simulated"] and "sharing" in dev["note"]
  rows = {r["devices"]: r for r in dev["rows"]}
  assert list(rows) == [1, 2]  # sorted
  assert rows[1]["padded_population"] == 3 and rows[1]["members_per_device"] == 3
  assert rows[2]["padded_population"] == 4 and rows[2]["members_per_device"] == 2
  for r in rows.values():
    assert r["population"] == 3 and r["platform"] == "cpu"
    assert r["member_steps_per_s"] > 0 and math.isfinite(r["member_steps_per_s"])
    assert len(r["call_s"]) >= 2
  assert rows[1]["speedup"] == 1.0 and rows[1]["efficiency"] == 1.0
  assert rows[2]["speedup"] == rows[2]["member_steps_per_s"] / rows[1]["member_steps_per_s"]
  assert rows[2]["efficiency"] == rows[2]["speedup"] / 2
  assert "**Scaling over devices**" in benchmark.markdown(result)


def test_benchmark_devices_child_refuses_more_devices_than_present():
  with pytest.raises(ValueError, match="--child_devices: 2 devices asked for, 1 present"):
    benchmark.child_devices(_tiny(device_workload="digits8", device_population=2), 2)

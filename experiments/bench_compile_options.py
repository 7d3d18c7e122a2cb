r"""XLA compiler options for the training and evaluation programs, side by side.

Why ``hpjax.engine.STEP_COMPILER_OPTIONS`` holds what it holds. A config's
population is built as a run builds it (``hpjax.tuner.from_config``, then
``build_population``); its first group's ``train_epoch`` and ``evaluate``
are lowered once and compiled with each option set in turn, each in a fresh
process without a persistent compilation cache, then called three times on
copies of the state (best call kept); a hash of the outputs shows whether an
option set changes the program's numbers::

  python -m experiments.bench_compile_options --rounds=2
  python -m experiments.bench_compile_options --sets=level3,level2 --program=evaluate

The option sets are named in :data:`SETS`; ``level3`` is XLA's default.
Rounds run every set once each, in turns, so a drift of the shared
machine's speed reaches every set alike.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time

from absl import app
from absl import flags
import numpy as np

SETS = {
  "level3": {"xla_backend_optimization_level": 3},
  "level2": {"xla_backend_optimization_level": 2},
  "level1": {"xla_backend_optimization_level": 1},
  "level0": {"xla_backend_optimization_level": 0},
  "level2_no_fusion_emitters": {
    "xla_backend_optimization_level": 2,
    "xla_cpu_use_fusion_emitters": False,
  },
  "level2_no_expensive_llvm": {
    "xla_backend_optimization_level": 2,
    "xla_llvm_disable_expensive_passes": True,
  },
  "level2_xnn_dot": {
    "xla_backend_optimization_level": 2,
    "xla_cpu_experimental_xnn_fusion_type": "LIBRARY_FUSION_TYPE_DOT",
  },
  "level2_ynn_dot": {
    "xla_backend_optimization_level": 2,
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT",
  },
  "level2_onednn_dot": {
    "xla_backend_optimization_level": 2,
    "xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_DOT",
  },
  "level2_xnn_greedy": {
    "xla_backend_optimization_level": 2,
    "xla_cpu_experimental_xnn_graph_fusion_mode": "XNN_GRAPH_FUSION_MODE_GREEDY",
  },
  "level2_preset1": {"xla_backend_optimization_level": 2, "xla_cpu_opt_preset": 1},
  "level2_preset2": {"xla_backend_optimization_level": 2, "xla_cpu_opt_preset": 2},
  "level2_split8": {"xla_backend_optimization_level": 2, "xla_cpu_parallel_codegen_split_count": 8},
  "level2_concurrency_scheduler": {
    "xla_backend_optimization_level": 2,
    "xla_cpu_enable_concurrency_optimized_scheduler": True,
  },
  "level2_no_emitter_verification": {
    "xla_backend_optimization_level": 2,
    "xla_cpu_emitter_verification_level": 0,
  },
}

_CONFIG = flags.DEFINE_string(
  "config", "experiments/configs/digits28_pbt.py", "The config whose population is compiled."
)
_OVERRIDES = flags.DEFINE_multi_string("override", [], "FIELD=VALUE changes to the config.")
_SETS = flags.DEFINE_list("sets", ["level3", "level2", "level1"], f"Option sets of {list(SETS)}.")
_PROGRAM = flags.DEFINE_enum("program", "train_epoch", ["train_epoch", "evaluate"], "The program.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Turns over the option sets.")
_CHILD = flags.DEFINE_string("child", None, "Internal: time one option set in this process.")

_MARK = "RESULT "


def child(name: str) -> dict[str, float]:
  """Compile and call the program with option set ``name`` (this process, no cache)."""
  import jax  # pylint: disable=g-import-not-at-top

  jax.config.update("jax_enable_compilation_cache", False)
  from experiments import bench_lib  # pylint: disable=g-import-not-at-top
  from hpjax import tuner  # pylint: disable=g-import-not-at-top

  pop = tuner.build_population(
    tuner.from_config(bench_lib.load_config(_CONFIG.value, _OVERRIDES.value))
  )
  g = pop.groups[0]
  args = pop._train if _PROGRAM.value == "train_epoch" else pop._eval["val"]  # pylint: disable=protected-access
  fn = getattr(g.fns, _PROGRAM.value)
  lowered = fn.lower(g.state, *args)
  start = time.perf_counter()
  compiled = lowered.compile(compiler_options=SETS[name])
  compile_s = time.perf_counter() - start
  calls = []
  for _ in range(3):
    state = jax.block_until_ready(jax.tree.map(lambda a: a.copy(), g.state))
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(state, *args))
    calls.append(time.perf_counter() - start)
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(out):
    digest.update(np.asarray(leaf).tobytes())
  return {"compile_s": compile_s, "call_s": min(calls), "digest": digest.hexdigest()[:12]}


def main(argv):
  del argv
  if _CHILD.value:
    print(_MARK + json.dumps(child(_CHILD.value)), flush=True)
    return
  unknown = [s for s in _SETS.value if s not in SETS]
  if unknown:
    raise app.UsageError(f"--sets: unknown value {unknown[0]!r}; allowed: {', '.join(SETS)}")
  rows = {s: [] for s in _SETS.value}
  for r in range(_ROUNDS.value):
    for s in _SETS.value:
      cmd = [sys.executable, "-m", "experiments.bench_compile_options", f"--child={s}"]
      cmd += [f"--config={_CONFIG.value}", f"--program={_PROGRAM.value}"]
      cmd += [f"--override={o}" for o in _OVERRIDES.value]
      out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
      result = json.loads([l for l in out.splitlines() if l.startswith(_MARK)][-1][len(_MARK) :])
      rows[s].append(result)
      print(
        f"round {r + 1}: {s}: compile {result['compile_s']:.2f} s, call {result['call_s']:.3f} s,"
        f" outputs {result['digest']}"
      )
  base = _SETS.value[0]
  best = {s: {k: min(x[k] for x in v) for k in ("compile_s", "call_s")} for s, v in rows.items()}
  print(f"\n{_PROGRAM.value} of {_CONFIG.value}, best of {_ROUNDS.value} rounds (ratios vs {base})")
  print("| options | compile | call | compile ratio | speed ratio |")
  print("| --- | --- | --- | --- | --- |")
  for s, b in best.items():
    c, t = b["compile_s"] / best[base]["compile_s"], best[base]["call_s"] / b["call_s"]
    print(f"| {s} | {b['compile_s']:.2f} s | {b['call_s']:.3f} s | {c:.2f} | {t:.2f} |")


if __name__ == "__main__":
  app.run(main)

r"""Engine throughput and compile time of two commits side by side, in turns in one run.

The machine is shared and its speed drifts, so a ratio between two versions
is only meaningful when both are timed in the same window. This runs the
benchmark's throughput part (``experiments/benchmark.py --parts=throughput
--torch=off``) and its compile part (a fresh process with a new persistent
cache builds ``--compile_config``'s population and trains two epochs: cold,
then warm) of the base commit and of this working tree in turns, round after
round, and prints each version's best figures and the ratios::

  python -m experiments.compare_commits --base=9adb08c \
      --cases=digits28:32,digits8:128 --rounds=2 --out=/tmp/commits.json

``--base`` is checked out into a temporary git worktree (removed at the
end); each case is ``WORKLOAD:P``. Both versions run their own benchmark
code on their own engine, with their own defaults for everything not named
here (batch size 32, the workload's steps per call).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

from absl import app
from absl import flags

_BASE = flags.DEFINE_string("base", None, "The commit to compare against.", required=True)
_CASES = flags.DEFINE_list(
  "cases", ["digits28:32", "digits8:128"], "WORKLOAD:P pairs, each timed in both versions."
)
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Turns per version (each version runs once per turn).")
_COMPILE = flags.DEFINE_string(
  "compile_config",
  "experiments/configs/digits28_pbt.py",
  "Config (relative to the repository) whose compile time is compared; empty: skip.",
)
_OUT = flags.DEFINE_string("out", None, "Write every measurement and the ratios as JSON here.")


def parse_cases(cases: list[str]) -> list[tuple[str, int]]:
  """``["digits28:32"]`` -> ``[("digits28", 32)]``, with a one-line error on bad input."""
  out = []
  for case in cases:
    name, _, p = case.partition(":")
    if not name or not p.isdigit() or int(p) < 1:
      raise ValueError(f"--cases: expected WORKLOAD:P with P a positive integer, got {case!r}")
    out.append((name, int(p)))
  return out


def rates(result: dict, cases: list[tuple[str, int]]) -> dict[str, float]:
  """member-steps/s of each case in one benchmark JSON (old or new layout)."""
  found = {}
  for entry in result.get("workloads", []):
    for row in entry.get("rows", []):
      key = f"{entry['name']}:{row['population']}"
      if (entry["name"], row["population"]) in cases and "member_steps_per_s" in row:
        found[key] = max(found.get(key, 0.0), row["member_steps_per_s"])
  return found


def run_tree(tree: str, cases: list[tuple[str, int]], scratch: str) -> dict[str, float]:
  """One benchmark run per workload in ``tree``; the rates of every case."""
  measured = {}
  for name in dict.fromkeys(n for n, _ in cases):
    pops = ",".join(str(p) for n, p in cases if n == name)
    out = os.path.join(scratch, "bench.json")
    cmd = [
      sys.executable,
      "-m",
      "experiments.benchmark",
      "--parts=throughput",
      "--torch=off",
      f"--workloads={name}",
      f"--populations={pops}",
      f"--out={out}",
    ]
    env = {**os.environ, "PYTHONPATH": tree}
    subprocess.run(cmd, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
      measured.update(rates(json.load(f), cases))
  return measured


def run_compile(tree: str, scratch: str) -> dict[str, float]:
  """The compile part in ``tree``: cold and warm compile seconds, JAX's own cold compile time."""
  out = os.path.join(scratch, "compile.json")
  cmd = [
    sys.executable,
    "-m",
    "experiments.benchmark",
    "--parts=compile",
    f"--compile_config={_COMPILE.value}",
    f"--out={out}",
  ]
  subprocess.run(
    cmd, cwd=tree, env={**os.environ, "PYTHONPATH": tree}, check=True, stdout=subprocess.DEVNULL
  )
  with open(out) as f:
    c = json.load(f)["compile"]
  return {
    "compile_cold_s": c["cold"]["compile_s"],
    "compile_warm_s": c["warm"]["compile_s"],
    "jax_compile_cold_s": c["cold"]["jax_events"]["backend_compile_s"],
    "first_epoch_cold_s": c["cold"]["first_epoch_s"],
    # Wall time JAX spent tracing, lowering or compiling (versions from 8b10e88 on).
    **{
      f"compile_wall_{k}_s": c[k]["jax_events"]["compile_wall_s"]
      for k in ("cold", "warm")
      if "compile_wall_s" in c[k]["jax_events"]
    },
  }


def main(argv):
  del argv
  cases = parse_cases(_CASES.value)
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  head = subprocess.run(
    ["git", "rev-parse", "--short", "HEAD"], cwd=here, check=True, capture_output=True, text=True
  ).stdout.strip()
  dirty = subprocess.run(
    ["git", "status", "--porcelain", "--untracked-files=no"],
    cwd=here,
    check=True,
    capture_output=True,
    text=True,
  ).stdout.strip()
  head += " + uncommitted changes" if dirty else ""
  with tempfile.TemporaryDirectory(prefix="hpjax_compare_") as scratch:
    base_tree = os.path.join(scratch, "base")
    subprocess.run(
      ["git", "worktree", "add", "--detach", base_tree, _BASE.value],
      cwd=here,
      check=True,
      capture_output=True,
    )
    try:
      turns = []
      for r in range(_ROUNDS.value):
        turn = {"load_avg": list(os.getloadavg())}
        for version, tree in (("base", base_tree), ("head", here)):
          turn[version] = run_tree(tree, cases, scratch)
          if _COMPILE.value:
            turn[version].update(run_compile(tree, scratch))
        turns.append(turn)
        print(
          f"round {r + 1}: "
          + ", ".join(
            f"{k} base {turn['base'][k]:.1f} head {turn['head'][k]:.1f}"
            for k in turn["head"]
            if k in turn["base"]
          ),
          flush=True,
        )
    finally:
      subprocess.run(
        ["git", "worktree", "remove", "--force", base_tree],
        cwd=here,
        check=False,
        capture_output=True,
      )
  summary = {}
  print(f"\n| case | base {_BASE.value} | head {head} | head / base |\n| --- | --- | --- | --- |")
  for name, p in cases:  # member-steps/s: the best turn of each version
    key = f"{name}:{p}"
    best = {v: max(t[v].get(key, 0.0) for t in turns) for v in ("base", "head")}
    ratio = best["head"] / best["base"] if best["base"] else float("nan")
    summary[key] = {**best, "ratio": ratio}
    print(
      f"| {name}, P={p}, member-steps/s | {best['base']:.1f} | {best['head']:.1f} | {ratio:.3f} |"
    )
  if _COMPILE.value:  # seconds: the best (smallest) turn of each version, and the median
    keys = ("compile_cold_s", "jax_compile_cold_s", "compile_warm_s", "first_epoch_cold_s")
    keys += ("compile_wall_cold_s", "compile_wall_warm_s")
    for key in keys:
      if not all(key in t[v] for t in turns for v in ("base", "head")):
        continue  # a version whose benchmark does not measure it
      best = {v: min(t[v][key] for t in turns) for v in ("base", "head")}
      ratio = best["head"] / best["base"]
      median = {v: statistics.median(t[v][key] for t in turns) for v in ("base", "head")}
      summary[key] = {**best, "ratio": ratio, "median": median}
      print(f"| {_COMPILE.value}: {key} | {best['base']:.1f} | {best['head']:.1f} | {ratio:.3f} |")
      if len(turns) > 2:
        print(
          f"| {_COMPILE.value}: {key}, median of {len(turns)} | {median['base']:.1f} |"
          f" {median['head']:.1f} | {median['head'] / median['base']:.3f} |"
        )
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump({"base": _BASE.value, "head": head, "turns": turns, "best": summary}, f, indent=1)


if __name__ == "__main__":
  app.run(main)

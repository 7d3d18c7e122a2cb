"""Bad input and faults through the real launcher: one line, a non-zero exit, the workdir kept.

The rule every case here checks (docs/bad_inputs.md lists them all, with the
cases other test files cover): one ``error:`` line on stderr that names the
field or the file and what is wrong, a non-zero exit status, no traceback,
nothing trained, and the workdir as it was (absent when it did not exist).
Each case runs ``python -m experiments.tune`` (or ``experiments.report``) as
a subprocess, on configs small enough to stop within seconds.
"""

import configparser
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "experiments", "configs")
SWEEP = os.path.join(CONFIGS, "digits_sweep.py")
FROM_JSON = os.path.join(CONFIGS, "from_json.py")
TINY = [
  "--config.population=2",
  "--config.data.max_train=100",
  "--config.model.width=4",
  "--config.model.depth=1",
  "--config.model.dense=16",
  "--config.report=False",
  "--config.tensorboard=False",
]
# The same run as a JSON config (with from_json.py).
TINY_JSON = {
  "population": 2,
  "epochs": 1,
  "data": {"max_train": 100},
  "model": {"width": 4, "depth": 1, "dense": 16},
  "report": False,
  "tensorboard": False,
}

# Stands in for a file the user may not write (tests run as root, for whom
# chmod stops nothing): open() of $HPJAX_TEST_READ_ONLY_FILE (a base name) for
# writing raises the PermissionError the kernel raises; then the launcher runs.
_READ_ONLY_FILE_LAUNCHER = textwrap.dedent("""\
    import builtins, errno, os, runpy, sys
    name = os.environ["HPJAX_TEST_READ_ONLY_FILE"]
    real_open = builtins.open

    def open_(file, mode="r", *args, **kwargs):
      if (isinstance(file, (str, os.PathLike)) and os.path.basename(os.fspath(file)) == name
          and any(c in mode for c in "wax+")):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(file))
      return real_open(file, mode, *args, **kwargs)

    builtins.open = open_
    sys.argv[0] = "tune"
    runpy.run_module("experiments.tune", run_name="__main__", alter_sys=True)
    """)


def _env(**extra):
  """The launcher's environment in tests: CPU, the suite's compilation cache."""
  cache = os.environ.get("HPJAX_TEST_CACHE_DIR", os.path.join(ROOT, ".jax_cache"))
  path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
  return dict(
    os.environ,
    HPJAX_CACHE_MIN_SECS="0",
    HPJAX_CACHE_DIR=cache,
    JAX_PLATFORMS="cpu",
    PYTHONPATH=path,
    **extra,
  )


def _tune(*args, launcher=None, env=None, config=SWEEP, tiny=True):
  """Runs the launcher to its end; returns the CompletedProcess."""
  argv = [sys.executable, *(["-c", launcher] if launcher else ["-m", "experiments.tune"])]
  if config is not None:
    argv.append(f"--config={config}")
  argv += [*(TINY if tiny and config == SWEEP else []), *args]
  return subprocess.run(
    argv, cwd=ROOT, env=env or _env(), capture_output=True, text=True, timeout=600
  )


def _one_error(r, *words):
  """The run failed with exactly one stderr line, ``error: ...`` holding ``words``."""
  assert r.returncode == 1, (r.returncode, r.stderr[-3000:])
  lines = [l for l in r.stderr.splitlines() if l.strip()]
  assert len(lines) == 1, r.stderr[-3000:]
  assert lines[0].startswith("error: "), lines[0]
  assert "Traceback" not in r.stderr
  for w in words:
    assert w in lines[0], (w, lines[0])
  return lines[0]


def _snapshot(path):
  """Every file and directory under ``path``: size, mtime and content digest."""
  out = {}
  for root, dirs, files in os.walk(path):
    for name in dirs + files:
      full = os.path.join(root, name)
      st = os.lstat(full)
      digest = None
      if os.path.isfile(full) and not os.path.islink(full):
        with open(full, "rb") as f:
          digest = hashlib.sha256(f.read()).hexdigest()
      out[os.path.relpath(full, path)] = (st.st_size, st.st_mtime_ns, digest)
  return out


def _json_config(tmp_path, values, name="config.json"):
  path = tmp_path / name
  path.write_text(values if isinstance(values, str) else json.dumps(values))
  return f"{FROM_JSON}:{path}"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """A finished one-epoch run of the tiny sweep; tests resume copies of it."""
  workdir = tmp_path_factory.mktemp("bad_input") / "run"
  r = _tune(f"--workdir={workdir}", "--config.epochs=1")
  assert r.returncode == 0, r.stderr[-3000:]
  return workdir


def _copy(finished, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(finished, workdir)
  return workdir


# ---------------------------------------------------------------------------
# 4. Files that cannot be written.


@pytest.mark.xdist_group("bad_input_run")
@pytest.mark.parametrize("name", ["metrics.jsonl", "lineage.jsonl"])
def test_unwritable_log_on_resume_is_one_line_naming_it(finished, tmp_path, name):
  workdir = _copy(finished, tmp_path)
  before = _snapshot(workdir)
  r = _tune(
    f"--workdir={workdir}",
    "--config.epochs=2",
    launcher=_READ_ONLY_FILE_LAUNCHER,
    env=_env(HPJAX_TEST_READ_ONLY_FILE=name),
  )
  _one_error(r, str(workdir / name), "Permission denied")
  assert "epoch   2" not in r.stdout
  assert _snapshot(workdir) == before
  # A directory where the log should be: the same line, no patching.
  (workdir / name).unlink()
  (workdir / name).mkdir()
  before = _snapshot(workdir)
  r = _tune(f"--workdir={workdir}", "--config.epochs=2")
  _one_error(r, str(workdir / name), "Is a directory")
  assert _snapshot(workdir) == before


def test_os_error_during_a_run_names_the_file_and_the_reason(tmp_path):
  # A full disk under metrics.jsonl (/dev/full refuses every write with
  # ENOSPC): the write after the first epoch fails. The OSError of a write
  # names no file; the writer adds it.
  if not os.path.exists("/dev/full"):
    pytest.skip("no /dev/full")
  workdir = tmp_path / "run"
  workdir.mkdir()
  os.symlink("/dev/full", workdir / "metrics.jsonl")
  r = _tune(f"--workdir={workdir}", "--config.epochs=1")
  _one_error(r, f"{workdir / 'metrics.jsonl'}: No space left on device")


# ---------------------------------------------------------------------------
# 5. Damaged run logs.


@pytest.mark.xdist_group("bad_input_run")
@pytest.mark.parametrize("name", ["metrics.jsonl", "lineage.jsonl"])
def test_bad_middle_line_of_a_log_names_file_and_line(finished, tmp_path, name):
  workdir = _copy(finished, tmp_path)
  lines = (workdir / "metrics.jsonl").read_text().splitlines(keepends=True)
  assert len(lines) == 2
  if name == "metrics.jsonl":
    (workdir / name).write_text(lines[0] + "{not json\n" + lines[1])
  else:
    (workdir / name).write_text('{"epoch": 1, "event": "x"}\n[1, 2]\n{"epoch": 1}\n')
  before = _snapshot(workdir)
  r = _tune(f"--workdir={workdir}", "--config.epochs=2")
  _one_error(r, f"{workdir / name}: line 2 is not a JSON record of an epoch")
  assert _snapshot(workdir) == before  # neither log rewritten


@pytest.mark.xdist_group("bad_input_run")
def test_torn_last_line_is_dropped_on_resume(finished, tmp_path):
  workdir = _copy(finished, tmp_path)
  with open(workdir / "metrics.jsonl", "a") as f:
    f.write('{"epoch": 2, "member": 0, "lo')  # a writer killed mid-line
  r = _tune(f"--workdir={workdir}", "--config.epochs=2")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "resuming from the checkpoint of epoch 1" in r.stdout
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [row["epoch"] for row in rows] == [1, 1, 2, 2]


# ---------------------------------------------------------------------------
# 6. Loading the config file.


@pytest.mark.parametrize(
  "kind", ["missing", "syntax", "raises", "json_missing", "json_corrupt", "not_python_dir"]
)
def test_config_file_that_cannot_be_loaded_is_one_line(tmp_path, kind):
  bad = tmp_path / "bad.py"
  if kind == "missing":
    config, words = str(tmp_path / "nope.py"), [str(tmp_path / "nope.py"), "No such file"]
  elif kind == "syntax":
    bad.write_text("def get_config(:\n  pass\n")
    config, words = str(bad), [f"{bad}, line 1", "not valid Python"]
  elif kind == "raises":
    bad.write_text("import ml_collections\n\n\ndef get_config():\n  return undefined_name\n")
    config, words = str(bad), [f"{bad}, line 5", "NameError", "undefined_name"]
  elif kind == "json_missing":
    config = f"{FROM_JSON}:{tmp_path / 'nope.json'}"
    words = [str(tmp_path / "nope.json"), "No such file"]
  elif kind == "json_corrupt":
    config = _json_config(tmp_path, '{"population": 4,')
    words = [str(tmp_path / "config.json"), "not valid JSON"]
  else:
    config, words = str(tmp_path), [str(tmp_path), "Is a directory"]
  r = _tune(f"--workdir={tmp_path / 'run'}", config=config)
  line = _one_error(r, "--config", *words)
  assert "FATAL" not in line and "Flags parsing error" not in r.stderr
  assert not (tmp_path / "run").exists()


def test_config_in_a_package_imports_its_siblings_from_any_directory(tmp_path):
  # hpjax-tune is not run from the directory holding the configs' package:
  # a config file inside a package imports its siblings by package name.
  pkg = tmp_path / "my_configs"
  pkg.mkdir()
  (pkg / "__init__.py").write_text("")
  (pkg / "base.py").write_text("POPULATION = 0\n")
  (pkg / "run.py").write_text(
    textwrap.dedent("""\
      import ml_collections
      from my_configs import base

      def get_config():
        return ml_collections.ConfigDict({"population": base.POPULATION})
      """)
  )
  r = _tune(f"--workdir={tmp_path / 'run'}", config=str(pkg / "run.py"))
  _one_error(r, "config.population: must be >= 1, got 0")  # loaded: the sibling was found


# ---------------------------------------------------------------------------
# 7. Messages that say what is wrong.


def test_no_field_only_for_a_real_unknown_override(tmp_path):
  workdir = tmp_path / "run"
  r = _tune(f"--workdir={workdir}", config=_json_config(tmp_path, [1, 2, 3]))
  _one_error(r, str(tmp_path / "config.json"), "must hold a JSON object", "not a JSON array")
  r = _tune(f"--workdir={workdir}", "--config.eval_batch_size=-5")
  _one_error(r, "config.eval_batch_size: must be >= 1, got -5")
  r = _tune(f"--workdir={workdir}", "--config.data.sourse=mnist")
  _one_error(r, "--config: no field 'data.sourse'; did you mean 'data.source'?")
  r = _tune(f"--workdir={workdir}", "--config.population=abc")
  _one_error(r, "--config.population=abc", "invalid literal")
  assert not workdir.exists()
  # A JSON config with a few fields is valid: the rest take their defaults,
  # and can be overridden on the command line too.
  r = _tune(
    f"--workdir={workdir}",
    "--config.seed=3",
    config=_json_config(tmp_path, dict(TINY_JSON, population=1)),
  )
  assert r.returncode == 0, r.stderr[-3000:]
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["seed"] == 3 and saved["population"] == 1 and saved["batch_size"] == 32


# ---------------------------------------------------------------------------
# 8. Unknown keys in a JSON config.


@pytest.mark.parametrize(
  "values, message",
  [
    ({"populaton": 8}, "config.populaton: unknown field; did you mean 'population'?"),
    ({"data": {"sourse": "digits"}}, "config.data.sourse: unknown field; did you mean 'source'?"),
  ],
)
def test_unknown_key_in_a_json_config_has_a_hint(tmp_path, values, message):
  r = _tune(f"--workdir={tmp_path / 'run'}", config=_json_config(tmp_path, values))
  _one_error(r, message)
  assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------
# 9. Values: types, bounds, non-finite numbers, arrays that cannot fit.


@pytest.mark.parametrize(
  "values, words",
  [
    ({"epochs": "two"}, ["config.epochs: must be an integer >= 1, got 'two'"]),
    ({"epochs": float("inf")}, ["config.epochs: must be an integer >= 1, got inf"]),
    (
      {"schedule": {"kind": "warmup_cosine", "warmup_epochs": -1.0}},
      ["config.schedule.warmup_epochs: must be in [0, inf), got -1"],
    ),
    (
      {"schedule": {"kind": "cosine", "alpha": -0.5}},
      ["config.schedule.alpha: must be in [0, 1], got -0.5"],
    ),
    (
      {"data": {"val_fraction": float("nan")}},
      ["config.data.val_fraction: must be a finite number", "got nan"],
    ),
    (
      {"data": {"image_size": 100000}},
      ["config.data.image_size: 100000 makes each image", "more than this machine's memory"],
    ),
    (
      {"eval_batch_size": 10**12},
      [
        "config.eval_batch_size: 1000000000000 pads the validation and test splits",
        "more than this machine's memory",
      ],
    ),
  ],
)
def test_bad_value_is_refused_before_anything_is_built(tmp_path, values, words):
  r = _tune(f"--workdir={tmp_path / 'run'}", config=_json_config(tmp_path, values))
  _one_error(r, *words)
  assert "population:" not in r.stdout and "digits:" not in r.stdout  # nothing loaded or built
  assert not (tmp_path / "run").exists()


# What the estimates cannot see (the population's states) fails when it is
# allocated: the child makes building the population fail as it would.
_OUT_OF_MEMORY_LAUNCHER = textwrap.dedent("""\
    import os, runpy, sys
    import jax
    from hpjax import tuner

    def build_population(exp):
      if os.environ["HPJAX_TEST_OOM"] == "host":
        raise MemoryError()
      raise jax.errors.JaxRuntimeError(
          "RESOURCE_EXHAUSTED: Out of memory allocating 4000000000 bytes.")

    tuner.build_population = build_population
    sys.argv[0] = "tune"
    runpy.run_module("experiments.tune", run_name="__main__", alter_sys=True)
    """)


@pytest.mark.parametrize(
  "kind, words",
  [
    ("host", ["out of memory (MemoryError"]),
    (
      "device",
      [
        "out of memory (JaxRuntimeError: RESOURCE_EXHAUSTED: Out of memory allocating "
        "4000000000 bytes."
      ],
    ),
  ],
)
def test_memory_that_runs_out_anyway_is_one_line(tmp_path, kind, words):
  r = _tune(
    f"--workdir={tmp_path / 'run'}", launcher=_OUT_OF_MEMORY_LAUNCHER, env=_env(HPJAX_TEST_OOM=kind)
  )
  _one_error(r, *words, "lower config.population, data.image_size, batch_size or eval_batch_size")
  assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------
# 11. Checkpoint settings.


@pytest.mark.parametrize("field", ["keep", "every"])
def test_checkpoint_keep_or_every_zero_names_the_field(tmp_path, field):
  r = _tune(f"--workdir={tmp_path / 'run'}", f"--config.checkpoint.{field}=0")
  _one_error(r, f"config.checkpoint.{field}: must be >= 1, got 0")
  assert "population:" not in r.stdout  # before the model is built
  assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------
# 13. A damaged config.json in the workdir.


@pytest.mark.xdist_group("bad_input_run")
def test_corrupt_config_json_in_the_workdir_names_it(finished, tmp_path):
  workdir = _copy(finished, tmp_path)
  (workdir / "config.json").write_text('{"seed": 0, "population": ')
  before = _snapshot(workdir)
  r = _tune(f"--workdir={workdir}", "--config.epochs=2")
  _one_error(r, f"{workdir / 'config.json'}: cannot be read as JSON", "new --workdir")
  assert "population:" not in r.stdout  # refused before the model is built
  assert _snapshot(workdir) == before


# ---------------------------------------------------------------------------
# 14. Ctrl-C.


def _handlers_installed(pid):
  """Whether the process catches SIGTERM (the launcher's first statement installs it)."""
  try:
    with open(f"/proc/{pid}/status") as f:
      for line in f:
        if line.startswith("SigCgt:"):
          return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
  except OSError:
    pass
  return False


def test_ctrl_c_during_imports_is_one_line(tmp_path):
  if not os.path.exists("/proc/self/status"):
    pytest.skip("needs /proc to see when the handler is installed")
  workdir = tmp_path / "run"
  proc = subprocess.Popen(
    [sys.executable, "-m", "experiments.tune", f"--config={SWEEP}", f"--workdir={workdir}", *TINY],
    cwd=ROOT,
    env=_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  deadline = time.time() + 60
  while not _handlers_installed(proc.pid) and proc.poll() is None and time.time() < deadline:
    time.sleep(0.002)
  proc.send_signal(signal.SIGINT)  # `import hpjax` (JAX) takes seconds: it lands there
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, err[-3000:]
  assert err.splitlines() == ["SIGINT: stopped while starting; nothing was written"], err
  assert not out and not workdir.exists()


def test_second_ctrl_c_stops_at_once_with_the_checkpoint_intact(tmp_path):
  workdir = tmp_path / "run"
  # Epochs of a few seconds: both signals land inside epoch 2, after the
  # checkpoint of epoch 1 is complete (waited for, below).
  args = [
    f"--workdir={workdir}",
    "--config.population=6",
    "--config.epochs=3",
    "--config.data.image_size=32",
    "--config.model.width=8",
    "--config.model.depth=1",
    "--config.model.dense=16",
    "--config.batch_size=16",
    "--config.report=False",
    "--config.tensorboard=False",
  ]
  proc = subprocess.Popen(
    [sys.executable, "-m", "experiments.tune", f"--config={SWEEP}", *args],
    cwd=ROOT,
    env=_env(PYTHONUNBUFFERED="1"),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  for line in proc.stdout:
    if line.startswith("epoch   1/3"):
      break
  # The first signal lands in epoch 2, once epoch 1's checkpoint is complete
  # (a signal before the loop's check after epoch 1 would stop after epoch 1).
  deadline = time.time() + 60
  while not (workdir / "checkpoints" / "1").is_dir() and time.time() < deadline:
    time.sleep(0.01)
  proc.send_signal(signal.SIGINT)  # the first: finish the epoch, then save
  for line in proc.stdout:
    if "finishing the current epoch" in line:
      break
  proc.send_signal(signal.SIGINT)  # the second, inside epoch 2: at once
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 130, err[-3000:]
  assert err.splitlines() == [
    f"SIGINT: stopped at once; the checkpoint of epoch 1 in {workdir} "
    "is intact: relaunch the same command to resume"
  ], err
  assert not (workdir / "checkpoints" / "2").exists()  # stopped inside epoch 2
  r = _tune(*args, config=SWEEP, tiny=False)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "resuming from the checkpoint of epoch 1" in r.stdout


# ---------------------------------------------------------------------------
# 16. The command line.


def test_command_line_mistakes_are_one_line(tmp_path):
  r = _tune(f"--workdir={tmp_path / 'run'}", "stray")
  _one_error(r, "unexpected arguments: stray")
  assert "USAGE" not in r.stdout + r.stderr
  r = _tune(config=None)
  _one_error(r, "missing required flags: --config, --workdir")
  regular = tmp_path / "file.txt"
  regular.write_text("not a workdir")
  r = subprocess.run(
    [sys.executable, "-m", "experiments.report", str(regular)],
    cwd=ROOT,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=300,
  )
  _one_error(r, f"{regular}: not a directory")
  r = subprocess.run(
    [sys.executable, "-m", "experiments.report", str(tmp_path), "extra"],
    cwd=ROOT,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=300,
  )
  _one_error(r, "unexpected arguments: extra")


@pytest.mark.parametrize(
  "module, flags",
  [
    ("tune", ["--config", "--workdir", "--seed", "--jax_cache_dir", "--num_processes"]),
    ("report", ["--workdir", "--top"]),
  ],
)
def test_console_script_help_lists_the_flags(module, flags):
  # What pip's console-script wrapper runs (setup.cfg points it at hpjax.cli).
  wrapper = (
    f"import sys; from hpjax.cli.{module} import run; "
    f"sys.argv[0] = 'hpjax-{module}'; sys.exit(run())"
  )
  r = subprocess.run(
    [sys.executable, "-c", wrapper, "--help"],
    cwd=ROOT,
    env=_env(),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert "Traceback" not in r.stderr, r.stderr[-3000:]  # absl's --help exits with status 1
  listed = [l.split(":")[0].strip() for l in r.stdout.splitlines() if l.startswith("  --")]
  assert set(flags) <= set(listed), r.stdout
  assert "hpjax-" in r.stdout  # the module's usage, not an empty docstring


def test_installed_distribution_claims_only_hpjax():
  cfg = configparser.ConfigParser()
  cfg.read(os.path.join(ROOT, "setup.cfg"))
  include = cfg["options.packages.find"]["include"].split()
  assert include == ["hpjax", "hpjax.*"]
  scripts = dict(
    line.split(" = ")
    for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines()
  )
  assert scripts == {"hpjax-tune": "hpjax.cli.tune:run", "hpjax-report": "hpjax.cli.report:run"}

"""The tree's own rules: one formatter and linter (ruff, configured in
pyproject.toml) and no reference to a file outside the repository.

ruff is in the ``test`` extra, so a missing ruff is a failure, not a skip.
"""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ruff(*args: str) -> subprocess.CompletedProcess:
  try:
    import ruff  # noqa: F401  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise AssertionError(
      "ruff is not installed: it is in the test extra (pip install -e '.[test]')"
    ) from None
  return subprocess.run(
    [sys.executable, "-m", "ruff", *args, "--no-cache", "."],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )


def test_ruff_format():
  result = _ruff("format", "--check")
  assert result.returncode == 0, (
    "not formatted as `ruff format` would (run `ruff format .`):\n" + result.stdout + result.stderr
  )


def test_ruff_check():
  result = _ruff("check", "--output-format=concise")
  assert result.returncode == 0, (
    "`ruff check` found problems (`ruff check --fix .` fixes the safe ones):\n"
    + result.stdout
    + result.stderr
  )


# Written so that this file does not match itself.
_OUTSIDE = re.compile(r"DESIGN\.md|\.\./shared")


def _tree_files():
  """Every file of the tree, less hidden folders (.git, .ci, caches) and build output."""
  skip = {"__pycache__", "build", "dist", "runs"}
  for top, dirs, files in os.walk(ROOT):
    dirs[:] = [
      d for d in dirs if not d.startswith(".") and d not in skip and not d.endswith(".egg-info")
    ]
    for name in files:
      yield os.path.join(top, name)


def test_no_reference_to_files_outside_the_repository():
  found = []
  for path in _tree_files():
    try:
      with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    except UnicodeDecodeError:
      continue  # not text
    for number, line in enumerate(lines, 1):
      if _OUTSIDE.search(line):
        found.append(f"{os.path.relpath(path, ROOT)}:{number}: {line.strip()}")
  assert not found, "references to files outside the repository:\n" + "\n".join(found)

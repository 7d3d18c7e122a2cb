"""The tree's own rules: one formatter and linter (ruff, configured in
pyproject.toml).

ruff is in the ``test`` extra, so a missing ruff is a failure, not a skip.
"""

import os
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

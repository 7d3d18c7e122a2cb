"""The tree's own rules: one formatter and linter (ruff, configured in
pyproject.toml), no reference to a file outside the repository, and no
function in hpjax/ longer than 80 lines (plotting aside).

ruff is in the ``test`` extra, so a missing ruff is a failure, not a skip.
"""

import ast
import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ruff(*args: str, problem: str) -> None:
  """Runs ruff on the tree (its settings: pyproject.toml); fails with its report."""
  if importlib.util.find_spec("ruff") is None:
    pytest.fail("ruff is not installed: it is in the test extra (pip install -e '.[test]')")
  result = subprocess.run(
    [sys.executable, "-m", "ruff", *args, "--no-cache", "."],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  if result.returncode:
    pytest.fail(f"{problem}:\n{result.stdout}{result.stderr}", pytrace=False)


def test_ruff_format():
  _ruff("format", "--check", problem="not formatted as `ruff format .` would")


def test_ruff_check():
  _ruff(
    "check",
    "--output-format=concise",
    problem="`ruff check` found problems (`ruff check --fix .` fixes the safe ones)",
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
  if found:
    pytest.fail("references to files outside the repository:\n" + "\n".join(found), pytrace=False)


# A function of hpjax/ longer than this (``def`` to its last line, docstring
# included) is split into helpers; plotting code is exempt.
_MAX_FUNCTION_LINES = 80
_LENGTH_EXEMPT = {os.path.join("hpjax", "report", "plots.py")}


def test_no_long_functions_in_hpjax():
  too_long = []
  for top, _, files in os.walk(os.path.join(ROOT, "hpjax")):
    for name in sorted(files):
      path = os.path.join(top, name)
      rel = os.path.relpath(path, ROOT)
      if not name.endswith(".py") or rel in _LENGTH_EXEMPT:
        continue
      with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), rel)
      for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
          lines = node.end_lineno - node.lineno + 1
          if lines > _MAX_FUNCTION_LINES:
            too_long.append(f"{rel}:{node.lineno} {node.name}: {lines} lines")
  if too_long:
    pytest.fail(f"over {_MAX_FUNCTION_LINES} lines:\n" + "\n".join(too_long), pytrace=False)

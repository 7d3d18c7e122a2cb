"""The README's examples run and print what they promise."""

import contextlib
import io
import os
import re

README = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")


def _example(name: str) -> str:
  """The python block after the README's ``<!-- readme-example: NAME; ... -->`` marker."""
  text = open(README).read()
  marker = text.index(f"<!-- readme-example: {name};")
  match = re.search(r"```python\n(.*?)```", text[marker:], re.S)
  assert match, f"README lost its python example {name!r}"
  return match.group(1)


def _run(code: str) -> str:
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile(code, "README.md", "exec"), {})  # pylint: disable=exec-used
  return out.getvalue()


def test_readme_example_trains_16_members():
  code = _example("library")
  assert 15 <= len(code.strip().splitlines()) <= 25
  lines = [l for l in _run(code).splitlines() if l.startswith("member")]
  assert len(lines) == 16
  accs = [float(l.rsplit(" ", 1)[1]) for l in lines]
  assert all(0.0 <= a <= 1.0 for a in accs)
  assert max(accs) > 0.8  # three epochs of digits: the good members have learned


def test_readme_own_model_example_tunes_the_users_cnn():
  code = _example("own-model")
  assert len(code.strip().splitlines()) <= 40
  # Stock flax layers and hpjax's fast ones, behind one import line: a move
  # of those layers is a one-line change.
  assert sum("from hpjax import nn" in line for line in code.splitlines()) == 1
  out = _run(code)
  best = next(l for l in out.splitlines() if l.startswith("best:"))
  gain, error = (float(v) for v in best.split()[1:])
  assert 0.5 <= gain <= 2.0 and error < 0.2  # the user's metric, minimised
  assert "fitness val error (min)" in out and "pbt: " in out
  assert "val_error" in out  # the dataframe's column, per epoch
  predicted, true = re.search(r"predicted: \[(.*)\] true: \[(.*)\]", out).groups()
  hits = sum(a == b for a, b in zip(predicted.split(), true.split()))
  assert hits >= 7  # three epochs of digits: the best model mostly right


def test_readme_commands_match_ci():
  text = open(README).read()
  ci = open(os.path.join(os.path.dirname(README), ".ci", "run")).read()
  cmd = re.search(r"README_TEST_COMMAND='(.*)'", ci).group(1)
  assert cmd in text
  assert "python -m experiments.tune --config=experiments/configs/digits_pbt.py" in text

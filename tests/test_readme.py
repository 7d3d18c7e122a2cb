"""The README's library example runs and prints what it promises."""

import contextlib
import io
import os
import re

README = os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")


def _example() -> str:
  text = open(README).read()
  marker = text.index("<!-- readme-example")
  match = re.search(r"```python\n(.*?)```", text[marker:], re.S)
  assert match, "README lost its python example"
  return match.group(1)


def test_readme_example_trains_16_members():
  code = _example()
  assert 15 <= len(code.strip().splitlines()) <= 25
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile(code, "README.md", "exec"), {})  # pylint: disable=exec-used
  lines = [l for l in out.getvalue().splitlines() if l.startswith("member")]
  assert len(lines) == 16
  accs = [float(l.rsplit(" ", 1)[1]) for l in lines]
  assert all(0.0 <= a <= 1.0 for a in accs)
  assert max(accs) > 0.8  # three epochs of digits: the good members have learned


def test_readme_commands_match_ci():
  text = open(README).read()
  ci = open(os.path.join(os.path.dirname(README), ".ci", "run")).read()
  cmd = re.search(r"README_TEST_COMMAND='(.*)'", ci).group(1)
  assert cmd in text
  assert "python -m experiments.tune --config=experiments/configs/digits_pbt.py" in text

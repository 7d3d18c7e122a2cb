"""What the launchers share: one-line errors, config files, flags, signals.

The rule every launcher follows for bad input and faults: one ``error:``
line on stderr that names the field or file and what is wrong, a non-zero
exit status, no traceback, and the workdir left as it was.

* :func:`load_config_file` reads ``--config=FILE[:ARG]`` itself (instead of
  ml_collections' loader, whose failures are tracebacks): a missing file, a
  syntax error or an exception in ``get_config`` is one line naming the file
  (and the line). A config file inside a package (``experiments/configs/``)
  may import its siblings by package name from any working directory.
* :func:`flags_parser` parses the command line for ``absl.app.run``: a bad
  flag value, an unknown flag, an override of a field the config does not
  have (with the closest field's name) or a stray argument is one line.
* :func:`os_error_line` is how an ``OSError`` the operating system raised
  during a run is reported: the file and the system's reason.
* :class:`Stopped`, :func:`stop_at_once`: SIGINT/SIGTERM outside the epoch
  loop (whose own handler, :class:`hpjax.loop.StopOnSignal`, finishes the
  epoch first) stops the launcher at once with status 128 + the signal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import difflib
import importlib.util
import os
import re
import signal
import sys
import traceback
from typing import Any

from absl import flags
from ml_collections import config_dict


class ConfigFileError(Exception):
  """A config file cannot be loaded; the message is one line naming it.

  Not a ValueError: absl wraps those in a multi-line "Flags parsing error".
  """


class Stopped(SystemExit):
  """SIGINT or SIGTERM stopped the launcher at once.

  A ``SystemExit`` (exit status 128 + the signal number): ``finally`` blocks
  run (writers and the checkpointer close; a checkpoint being written is
  finished), and nothing mistakes it for an error of the run.

  Attributes:
    signum: the signal.
    name: its name (``SIGINT``).
  """

  def __init__(self, signum: int):
    super().__init__(128 + int(signum))
    self.signum = int(signum)
    self.name = signal.Signals(signum).name


def _raise_stopped(signum, frame):
  del frame
  raise Stopped(signum)


def exit_while_starting(signum, frame):
  """A signal handler for a launcher's imports: one line, then exit 128 + signum."""
  del frame
  print(
    f"{signal.Signals(signum).name}: stopped while starting; nothing was written",
    file=sys.stderr,
    flush=True,
  )
  raise SystemExit(128 + signum)


def install(handler: Callable) -> None:
  """Makes ``handler`` the SIGINT and SIGTERM handler (main thread only)."""
  import threading  # pylint: disable=g-import-not-at-top

  if threading.current_thread() is threading.main_thread():
    for sig in (signal.SIGINT, signal.SIGTERM):
      signal.signal(sig, handler)


def stop_at_once() -> None:
  """SIGINT/SIGTERM raise :class:`Stopped` from now on.

  The epoch loop's :class:`hpjax.loop.StopOnSignal` takes over while it
  trains (the first signal finishes the epoch and saves a checkpoint) and
  hands a second signal back to this handler: the run stops at once.
  """
  install(_raise_stopped)


def ignore_signals_while_exiting() -> None:
  """SIGINT/SIGTERM are ignored from now on: the launcher is already exiting.

  A signal that lands after the run has ended (its status decided, the
  interpreter running its exit handlers) has nothing left to stop; raising
  then would only print a traceback from inside those handlers.
  """
  install(signal.SIG_IGN)


def error(message: str) -> None:
  """Prints ``error: message`` (one line) to stderr."""
  print(f"error: {message}", file=sys.stderr, flush=True)


def first_line(text: str) -> str:
  lines = [line.strip() for line in str(text).splitlines() if line.strip()]
  return lines[0] if lines else ""


# ---------------------------------------------------------------------------
# OS errors.


def is_os_fault(e: BaseException) -> bool:
  """Whether ``e`` is the operating system refusing something (an errno), not a bug."""
  return isinstance(e, OSError) and e.errno is not None and bool(e.strerror)


def os_error_line(e: OSError) -> str:
  """``FILE: reason`` of an OSError the system raised (``reason`` alone without a file)."""
  where = e.filename if e.filename is not None else None
  text = e.strerror or first_line(e)
  if where is None:
    return text
  if e.filename2 is not None:
    return f"{os.fsdecode(where)} -> {os.fsdecode(e.filename2)}: {text}"
  return f"{os.fsdecode(where)}: {text}"


def is_out_of_memory(e: BaseException) -> bool:
  """A host MemoryError, or XLA's RESOURCE_EXHAUSTED (an allocation that failed)."""
  if isinstance(e, MemoryError):
    return True
  return type(e).__name__ == "JaxRuntimeError" and str(e).startswith("RESOURCE_EXHAUSTED")


# ---------------------------------------------------------------------------
# Workdirs.


def newest_checkpoint(workdir: str) -> int | None:
  """The newest complete checkpoint step in ``WORKDIR/checkpoints`` (None: none)."""
  try:
    names = os.listdir(os.path.join(workdir, "checkpoints"))
  except OSError:
    return None
  steps = [int(n) for n in names if n.isdigit()]  # orbax commits a step by renaming to its number
  return max(steps) if steps else None


def remove_if_empty(path: str) -> None:
  """Removes ``path`` if it holds no data: only empty files and directories.

  For a workdir this launch created and left before writing anything: a
  failed launch leaves no directory behind. A single byte anywhere keeps it.
  """
  if not os.path.isdir(path) or os.path.islink(path):
    return
  found = []
  for root, dirs, files in os.walk(path):
    for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
      full = os.path.join(root, name)
      if os.path.islink(full) or not os.path.isfile(full) or os.path.getsize(full) > 0:
        return
      found.append(full)
  try:
    for full in found:
      os.remove(full)
    for root, dirs, _ in os.walk(path, topdown=False):
      for d in dirs:
        os.rmdir(os.path.join(root, d))
    os.rmdir(path)
  except OSError:
    pass  # what could not be removed stays


# ---------------------------------------------------------------------------
# Config files.


def _package_root(directory: str) -> str | None:
  """The directory above the outermost package holding ``directory`` (None: not a package)."""
  root = None
  while os.path.isfile(os.path.join(directory, "__init__.py")):
    root = os.path.dirname(directory)
    if root == directory:
      break
    directory = root
  return root


def _where(e: BaseException, path: str) -> str:
  """``, line N`` of the innermost frame of ``e`` in the config file ``path``."""
  line = None
  for frame in traceback.extract_tb(e.__traceback__):
    if os.path.abspath(frame.filename) == path:
      line = frame.lineno
  return f", line {line}" if line else ""


def load_config_file(spec: str, name: str = "config") -> config_dict.ConfigDict:
  """The ConfigDict of ``--config=FILE[:ARG]``: ``FILE``'s ``get_config(ARG)``.

  Args:
    spec: ``FILE`` or ``FILE:ARG`` (everything after the first colon is the
      argument).
    name: the flag's name, for messages.

  Returns:
    The config (a mapping becomes a ConfigDict).

  Raises:
    ConfigFileError: one line naming the file (and the line) and the problem.
  """
  path, has_arg, arg = spec.partition(":")
  flag = f"--{name}"
  if not path:
    raise ConfigFileError(f"{flag}: no config file given (--{name}=FILE.py)")
  full = os.path.abspath(path)
  try:
    with open(full, "rb") as f:
      source = f.read()
  except OSError as e:
    raise ConfigFileError(f"{flag}: cannot read {path!r}: {e.strerror}") from None
  try:
    code = compile(source, full, "exec")
  except (SyntaxError, ValueError) as e:
    where = f", line {e.lineno}" if getattr(e, "lineno", None) else ""
    raise ConfigFileError(
      f"{flag}: {path}{where}: not valid Python: {getattr(e, 'msg', None) or e}"
    ) from None
  # A config inside a package (experiments/configs/x.py) imports its siblings
  # by package name (experiments.configs.common), wherever it is launched from.
  root = _package_root(os.path.dirname(full))
  if root is not None and root not in sys.path:
    sys.path.insert(0, root)
  module_name = f"{name}_config"
  spec_ = importlib.util.spec_from_loader(module_name, loader=None, origin=full)
  module = importlib.util.module_from_spec(spec_)
  module.__file__ = full
  sys.modules[module_name] = module
  try:
    exec(code, module.__dict__)  # pylint: disable=exec-used
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
      raise ConfigFileError(f"{flag}: {path} defines no get_config() function")
    config = get_config(arg) if has_arg else get_config()
  except ConfigFileError:
    raise
  except ValueError as e:
    # A config's own message for its user (from_json.py's, for one).
    text = first_line(e)
    raise ConfigFileError(text if text.startswith(flag) else f"{flag}: {path}: {text}") from None
  except Exception as e:  # noqa: BLE001
    # The user's own code failed: where, and what, on one line.
    raise ConfigFileError(
      f"{flag}: {path}{_where(e, full)}: {type(e).__name__}: {first_line(e)}"
    ) from None
  if isinstance(config, Mapping) and not isinstance(config, config_dict.ConfigDict):
    config = config_dict.ConfigDict(dict(config))
  if not isinstance(config, config_dict.ConfigDict):
    raise ConfigFileError(
      f"{flag}: {path}: get_config() must return a ConfigDict or a dict, "
      f"got {type(config).__name__}"
    )
  return config


class _ConfigFileParser(flags.ArgumentParser):
  """Loads ``--config`` with :func:`load_config_file`; remembers the result."""

  def __init__(self, name: str, lock_config: bool = True):
    self.name = name
    self._lock_config = lock_config
    self.loaded: config_dict.ConfigDict | None = None

  def parse(self, argument):
    config = load_config_file(argument, self.name)
    if self._lock_config:
      config.lock()
    self.loaded = config
    return config

  def flag_type(self):
    return "config object"


def define_config_file(name: str, help_string: str) -> flags.FlagHolder:
  """``config_flags.DEFINE_config_file`` (overrides and all) with one-line load errors."""
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  holder = config_flags.DEFINE_config_file(name, None, help_string, lock_config=True)
  flags.FLAGS[name].parser = _ConfigFileParser(name)
  return holder


# ---------------------------------------------------------------------------
# The command line.


def _overrides(argv: Sequence[str], name: str) -> list[str]:
  """The dotted fields ``--NAME.a.b=...`` (or ``--noNAME.a``) that ``argv`` overrides."""
  out = []
  for arg in argv:
    m = re.match(rf"^--?(?:no)?{re.escape(name)}\.([^=]+)", arg)
    if m:
      out.append(m.group(1))
  return out


def _missing_field(config: Any, field: str) -> str | None:
  """Why ``field`` is not in ``config`` (one line), or None when it is there."""
  node, done = config, []
  for part in field.split("."):
    keys = list(node.keys()) if isinstance(node, (Mapping, config_dict.ConfigDict)) else None
    if keys is None:
      return (
        f"no field {field!r}: {'.'.join(done)!r} is a {type(node).__name__}, not a group of fields"
      )
    if part not in keys:
      known = _known_field(".".join([*done, part]))
      if known:
        return (
          f"the config file does not set {'.'.join([*done, part])!r}, so it cannot be "
          "overridden on the command line; set it in the config file"
        )
      close = difflib.get_close_matches(part, [str(k) for k in keys], n=1)
      near = ".".join([*done, close[0]]) if close else None
      return f"no field {'.'.join([*done, part])!r}" + (f"; did you mean {near!r}?" if near else "")
    node = node[part]
    done.append(part)
  return None


def _known_field(field: str) -> bool:
  """Whether ``field`` is one of the launcher's config fields (hpjax.config)."""
  from hpjax import config as config_lib  # pylint: disable=g-import-not-at-top

  node = config_lib.defaults()
  for part in field.split("."):
    if not isinstance(node, dict) or part not in node:
      return False
    node = node[part]
  return True


def flags_parser(
  max_args: int = 0, config_flag: str | None = None
) -> Callable[[list[str]], list[str]]:
  """A ``flags_parser`` for ``absl.app.run`` whose every failure is one line.

  Args:
    max_args: positional arguments allowed after the program name.
    config_flag: the name of a :func:`define_config_file` flag, whose
      overrides of missing fields are reported by name.

  Returns:
    The parser: ``argv -> argv`` with the flags removed; on bad input it
    prints one ``error:`` line and exits with status 1.
  """

  def parse(argv: list[str]) -> list[str]:
    try:
      rest = flags.FLAGS(argv)
    except ConfigFileError as e:
      _fail(str(e))
    except flags.Error as e:
      _fail(_flag_error(e))
    except (AttributeError, KeyError, TypeError, ValueError):
      # ml_collections resolves --config.a.b overrides against the loaded
      # config and raises these for a field it does not have; anything else
      # is a bug and keeps its traceback.
      if config_flag is None:
        raise
      parser = flags.FLAGS[config_flag].parser
      config = getattr(parser, "loaded", None)
      for field in _overrides(argv, config_flag) if config is not None else ():
        why = _missing_field(config, field)
        if why:
          _fail(
            f"--{config_flag}: {why}"
            if why.startswith("no field")
            else f"--{config_flag}.{field}: {why}"
          )
      raise
    if len(rest) - 1 > max_args:
      extra = " ".join(rest[1 + max_args :])
      _fail(f"unexpected arguments: {extra} (flags are --name=value; see --help)")
    return rest

  return parse


def _flag_error(e: Exception) -> str:
  """absl's flag error as one line: ``--flag=value: what is wrong``."""
  text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
  missing = re.findall(r"Flag (--\w+) must have a value other than None", text)
  if missing:
    return (
      f"missing required flag{'s' if len(missing) > 1 else ''}: {', '.join(missing)} (see --help)"
    )
  return re.sub(r"^flag (--\S+?)=", r"\1=", text)


def _fail(message: str) -> None:
  error(message)
  raise SystemExit(1)


def show_flags_in_help(module_name: str) -> None:
  """Lists ``module_name``'s flags under ``--help`` whatever the main module is.

  absl's ``--help`` shows the docstring of ``__main__`` and the flags of the
  module named by ``sys.argv[0]``; a console script (``hpjax-tune``) or a
  thin ``experiments/`` main has neither of its own.
  """
  main = sys.modules.get("__main__")
  if module_name == "__main__":
    return  # run as `python -m hpjax.cli.tune`: absl finds them itself
  for flag in flags.FLAGS.get_key_flags_for_module(module_name):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  if main is not None and main is not sys.modules[module_name]:
    main.__doc__ = sys.modules[module_name].__doc__

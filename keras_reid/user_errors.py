"""One-line errors for the user's mistakes in the `python -m` entry points.

An entry point wraps its absl `main` with `one_line_errors`: a missing file,
a bad value or an unknown key (what the library raises as OSError,
ValueError or KeyError, each naming the thing and the fix) is printed as one
line and the command exits with status 1; any other exception is a bug and
keeps its traceback. A full disk (or a quota, or a file size limit) is the
user's too, whichever library hit it: TensorFlow reports it with its own
error types (ResourceExhaustedError, OutOfRangeError), which carry the
system's message ("No space left on device") and the file. `--verbosity=1`
(absl's debug level) shows the traceback of a user error too.

An entry point with a config flag calls `exit_on_bad_config_override` before
defining it: a `--config.<key>=VALUE` naming no key of the config is one
line naming the closest key, where ml_collections would raise a traceback
while parsing the flag (at its definition when --config is not given, so
before `main` runs).
"""

from __future__ import annotations

import difflib
import errno
import functools
import os
import re
import sys
from typing import Any, Callable, Optional, Sequence

from absl import flags
from absl import logging
from ml_collections import config_dict
from ml_collections.config_flags import config_flags
from ml_collections.config_flags import config_path

# The exception types that report a user's mistake, not a bug.
USER_ERRORS = (OSError, ValueError, KeyError)


# A write refused for want of space: the disk or a quota is full, or the
# file would pass a size limit (ulimit -f, the file system's largest file).
_NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_NO_SPACE_TEXTS = tuple(os.strerror(n) for n in _NO_SPACE_ERRNOS)
_NO_SPACE_HINT = ("the disk or a quota is full, or the file passes a size "
                  "limit: free some space or write elsewhere; what was "
                  "written before is kept")


def _no_space(error: BaseException) -> bool:
  """Whether `error` is a write that failed for want of space."""
  if isinstance(error, OSError) and error.errno in _NO_SPACE_ERRNOS:
    return True
  # TensorFlow's errors carry the system's message, not an errno.
  return (type(error).__module__.startswith("tensorflow")
          and any(text in str(error) for text in _NO_SPACE_TEXTS))


def _message(error: BaseException) -> str:
  # KeyError's str() is the repr of its key; its message is args[0].
  if isinstance(error, KeyError) and error.args:
    return str(error.args[0])
  text = str(error)
  # TensorFlow prefixes an op's error with the function it ran in.
  text = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", text)
  if _no_space(error):
    text = f"{text} ({_NO_SPACE_HINT})"
  return text


def one_line_errors(main: Callable[[Sequence[str]], None]
                    ) -> Callable[[Sequence[str]], None]:
  """Wraps an absl main: USER_ERRORS and a full disk become "error: ..."
  and exit status 1."""
  @functools.wraps(main)
  def wrapped(argv: Sequence[str]) -> None:
    try:
      main(argv)
    except Exception as e:  # pylint: disable=broad-except
      if (not (isinstance(e, USER_ERRORS) or _no_space(e))
          or logging.get_verbosity() >= logging.DEBUG):
        raise
      print(f"error: {_message(e)} (--verbosity=1 shows the traceback)",
            file=sys.stderr, flush=True)
      sys.exit(1)
  return wrapped


def _config_fields(node: Any, prefix: str = "") -> list[str]:
  """Every dotted key of a config that holds a value (not a section)."""
  keys = []
  for key, value in node.items():
    if hasattr(value, "items"):
      keys.extend(_config_fields(value, f"{prefix}{key}."))
    else:
      keys.append(prefix + key)
  return keys


def _closest_key(config: Any, fields: Sequence[str]
                 ) -> tuple[Optional[str], Any, str]:
  """The key of `config` closest to the mistyped path `fields`.

  Each part is matched among the keys of its own section (difflib): matching
  the whole dotted path would prefer any key sharing a long prefix
  (stages.synthetic.<anything>). A last part that belongs to another
  section (train.image_height) is then looked up among every field's name.

  Returns:
    (the closest dotted key or None, the deepest section the parts lead to,
    that section's dotted key).
  """
  section, section_path = config, []
  node, path = config, []
  for field in fields:
    if not hasattr(node, "items"):
      break
    section, section_path = node, list(path)
    names = [field] if field in node else difflib.get_close_matches(
        field, list(node), n=1)
    if not names:
      break
    node = node[names[0]]
    path.append(names[0])
  else:
    return ".".join(path), section, ".".join(section_path)
  fields_by_name: dict[str, list[str]] = {}
  for key in _config_fields(config):
    fields_by_name.setdefault(key.rsplit(".", 1)[-1], []).append(key)
  names = difflib.get_close_matches(fields[-1], list(fields_by_name), n=1)
  if names:
    # Of the fields of that name (step2_lr of each stage), the one whose
    # path is closest to what was typed.
    return difflib.get_close_matches(".".join(fields),
                                     fields_by_name[names[0]], n=1,
                                     cutoff=0)[0], section, ".".join(
                                         section_path)
  return None, section, ".".join(section_path)


def _config_file(argv: Sequence[str], flag: str,
                 default: Optional[str]) -> Optional[str]:
  """The value of the last --<flag>=PATH (or --<flag> PATH), else default."""
  path = default
  for i, arg in enumerate(argv):
    if arg in (f"-{flag}", f"--{flag}") and i + 1 < len(argv):
      path = argv[i + 1]
    elif re.match(rf"^--?{flag}=", arg):
      path = arg.split("=", 1)[1]
  return path


def bad_config_override(argv: Sequence[str], default_config: Optional[str]
                        = None, flag: str = "config") -> Optional[str]:
  """Why a --<flag>.<key> override of argv names no key of its config.

  Args:
    argv: the command line (sys.argv); --flagfile files are read.
    default_config: the config file used when argv gives no --<flag>.
    flag: the config flag's name.

  Returns:
    None when every override names a key, or when the config cannot be
    loaded (the flag's own parsing then says why); else the message for the
    first bad one, e.g. "--config.trian.lr: no such key; did you mean
    --config.train.lr?".
  """
  try:
    argv = flags.FLAGS.read_flags_from_files(list(argv), force_gnu=False)
  except flags.Error:
    return None
  # As ml_collections reads them: --config.a.b=1, --config.a.b 1,
  # --config.flag, --noconfig.flag.
  overrides = [arg.split("=", 1)[0].split(".", 1)[1] for arg in argv[1:]
               if re.match(rf"^--?(no)?{flag}\.", arg)]
  path = _config_file(argv, flag, default_config)
  if not overrides or not path:
    return None
  try:
    config = config_flags.ConfigFileFlagParser(name=flag).parse(path)
  except Exception:  # pylint: disable=broad-except
    # A config that does not load fails again, with its own message, when
    # the flag parses it.
    return None
  if not isinstance(config, (config_dict.ConfigDict, dict)):
    return None  # ml_collections' stand-in for a file it could not load.
  for override in overrides:
    fields = config_path.split(override)
    if not all(isinstance(f, str) for f in fields):
      continue  # An index (--config.a[0]=...) is the flag's to check.
    node = config
    for depth, field in enumerate(fields):
      if not hasattr(node, "items"):
        parent = ".".join(fields[:depth])
        return (f"--{flag}.{override}: --{flag}.{parent} is a value "
                f"({node!r}), not a section; set --{flag}.{parent}=VALUE.")
      if field not in node:
        break
      node = node[field]
    else:
      continue
    closest, section_node, section = _closest_key(config, fields)
    if closest:
      return (f"--{flag}.{override}: no such key; did you mean "
              f"--{flag}.{closest}?")
    where = f"--{flag}.{section}" if section else f"--{flag}"
    return (f"--{flag}.{override}: no such key; the keys of {where} are "
            f"{sorted(section_node)}.")
  return None


def exit_on_bad_config_override(default_config: Optional[str] = None,
                                flag: str = "config",
                                argv: Optional[Sequence[str]] = None) -> None:
  """Prints `bad_config_override`'s message as one "error: ..." line and
  exits with status 1; returns when every --<flag>.<key> of argv (default
  sys.argv) is a key of the config."""
  message = bad_config_override(sys.argv if argv is None else argv,
                                default_config, flag)
  if message:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(1)

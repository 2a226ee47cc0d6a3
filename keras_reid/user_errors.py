"""One-line errors for the user's mistakes in the `python -m` entry points.

An entry point wraps its absl `main` with `one_line_errors`: a missing file,
a bad value or an unknown key (what the library raises as OSError,
ValueError or KeyError, each naming the thing and the fix) is printed as one
line and the command exits with status 1; any other exception is a bug and
keeps its traceback. `--verbosity=1` (absl's debug level) shows the
traceback of a user error too.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable, Sequence

from absl import logging

# The exception types that report a user's mistake, not a bug.
USER_ERRORS = (OSError, ValueError, KeyError)


def one_line_errors(main: Callable[[Sequence[str]], None]
                    ) -> Callable[[Sequence[str]], None]:
  """Wraps an absl main: USER_ERRORS become "error: ..." and exit status 1."""
  @functools.wraps(main)
  def wrapped(argv: Sequence[str]) -> None:
    try:
      main(argv)
    except USER_ERRORS as e:
      if logging.get_verbosity() >= logging.DEBUG:
        raise
      # KeyError's str() is the repr of its key; its message is args[0].
      message = e.args[0] if isinstance(e, KeyError) and e.args else e
      print(f"error: {message} (--verbosity=1 shows the traceback)",
            file=sys.stderr, flush=True)
      sys.exit(1)
  return wrapped

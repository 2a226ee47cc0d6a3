"""Progress of long loops: training iterations, embedding images, GRDL, export.

`make_progress(target, unit, ...)` returns Keras's Progbar on a terminal and a
`PercentProgress` otherwise. Progbar redraws one line in place; written to a
log file or a pipe it would leave a line per update (thousands per step), so
a file gets one line every 10 % instead, with the rate, the elapsed time and
the time left:

    400/1000 iterations (40%) - 2.1 it/s - elapsed 3:10 - ETA 4:45 - loss: 4.1589

A loop that is usually quick (embedding a small query set) passes `delay`: no
line until it has run that long, so only the slow runs report.

TensorFlow-free: Keras is imported only to draw the terminal bar.
"""

from __future__ import annotations

import numbers
import sys
import time
from typing import Callable, Optional, Sequence

# What "more than a few seconds" means for the loops that report only when
# slow (feature extraction, image loading, pair scoring, GRDL, export).
SLOW_SECONDS = 5.0

Values = Optional[Sequence[tuple[str, object]]]


def format_duration(seconds: float) -> str:
  """1:05 for 65 s, 1:01:05 from an hour on (rounded to the second)."""
  total = max(0, int(round(seconds)))
  hours, rest = divmod(total, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f"{hours}:{minutes:02d}:{secs:02d}"
  return f"{minutes}:{secs:02d}"


def format_rate(per_second: float, rate_unit: str) -> str:
  """"2.1 it/s", or "3.5 s/it" below one a second (more legible when slow)."""
  if per_second >= 1:
    return f"{per_second:.1f} {rate_unit}/s"
  return f"{1 / per_second:.1f} s/{rate_unit}"


def _format_value(value: object) -> str:
  if isinstance(value, numbers.Real) and not isinstance(value, bool):
    return f"{float(value):.4f}"
  return str(value)


class PercentProgress:
  """A progress line every `percent` % of `target`, for files and pipes.

  Each line: "[label: ]current/target unit (p%) - rate - elapsed - ETA -
  name: value ...". The rate counts from `initial` (a resumed step starts
  there) and the clock's reading at construction; ETA is what is left at
  that rate. A line with no progress yet carries neither, the last one no
  ETA.
  """

  def __init__(self, target: int, unit: str = "iterations", *,
               rate_unit: str = "it", label: str = "", initial: int = 0,
               percent: int = 10, stream=None, delay: float = 0.0,
               clock: Callable[[], float] = time.monotonic):
    """Starts the clock.

    Args:
      target: the count at 100 %.
      unit: what is counted, plural ("iterations", "images").
      rate_unit: its short form in the rate ("it" gives "2.1 it/s").
      label: printed before the count (which loop this is).
      initial: the count the loop starts from (a resumed run's iteration).
      percent: a line each time the count crosses a multiple of this.
      stream: where the lines go (default sys.stdout).
      delay: seconds before the first line; crossings before then print
        nothing, so a quick loop stays silent.
      clock: seconds, monotonic (tests pass a fake one).
    """
    self.target = target
    self.unit = unit
    self.rate_unit = rate_unit
    self.label = label
    self.initial = initial
    self.percent = percent
    self.stream = stream or sys.stdout
    self.delay = delay
    self._clock = clock
    self._start = clock()
    self._next = 0

  def update(self, current: int, values: Values = None) -> None:
    """Prints when `current` crosses the next multiple of `percent` %.

    Args:
      current: the count reached.
      values: (name, value) pairs for the line, e.g. [("loss", 0.5)];
        numbers print with 4 decimals, anything else as str().
    """
    if self.target <= 0 or current * 100 < self._next * self.target:
      return
    done = min(100, current * 100 // self.target)
    self._next = (done // self.percent + 1) * self.percent
    elapsed = self._clock() - self._start
    if current == 0 or elapsed < self.delay:
      return
    parts = [f"{self.label + ': ' if self.label else ''}{current}/"
             f"{self.target} {self.unit} ({done}%)"]
    progressed = current - self.initial
    if progressed > 0 and elapsed > 0:
      per_second = progressed / elapsed
      parts.append(format_rate(per_second, self.rate_unit))
      parts.append(f"elapsed {format_duration(elapsed)}")
      if current < self.target:
        parts.append(
            f"ETA {format_duration((self.target - current) / per_second)}")
    parts.extend(f"{name}: {_format_value(value)}"
                 for name, value in values or [])
    print(" - ".join(parts), file=self.stream, flush=True)


class _TerminalProgress:
  """Keras's Progbar, drawn from the first update `delay` seconds in."""

  def __init__(self, target: int, rate_unit: str, label: str, delay: float,
               clock: Callable[[], float]):
    self.target = target
    self.rate_unit = rate_unit
    self.label = label
    self.delay = delay
    self._clock = clock
    self._start = clock()
    self._bar = None
    if delay <= 0:
      self._bar = self._make_bar()

  def _make_bar(self):
    # Imported here: progress written to files and pipes needs no TensorFlow.
    import keras
    if self.label:
      print(f"{self.label}:", flush=True)
    bar = keras.utils.Progbar(self.target, stateful_metrics=None,
                              unit_name=self.rate_unit)
    # A bar drawn late would time the loop from its own creation; Progbar
    # keeps its start in `_start` (time.time()), so back-date it.
    if hasattr(bar, "_start"):
      bar._start -= self._clock() - self._start
    return bar

  def update(self, current: int, values: Values = None) -> None:
    if self._bar is None:
      if self._clock() - self._start < self.delay:
        return
      self._bar = self._make_bar()
    # Progbar averages its values: only numbers can go there.
    numeric = [(name, value) for name, value in values or []
               if isinstance(value, numbers.Real)]
    self._bar.update(current, numeric)


def _is_terminal(stream) -> bool:
  isatty = getattr(stream, "isatty", None)
  return bool(isatty and isatty())


def make_progress(target: int, unit: str = "iterations", *,
                  rate_unit: str = "it", label: str = "", initial: int = 0,
                  stream=None, delay: float = 0.0,
                  clock: Callable[[], float] = time.monotonic):
  """Keras's Progbar on a terminal, `PercentProgress` lines otherwise.

  Progbar always draws on sys.stdout, so it is used only when both `stream`
  and stdout are terminals: progress meant for stderr never lands in a
  redirected stdout (e.g. `keras_reid.evaluate`'s JSON).

  Returns:
    An object with `update(current, values=None)`; see `PercentProgress`
    for the arguments.
  """
  stream = stream or sys.stdout
  if _is_terminal(stream) and _is_terminal(sys.stdout):
    return _TerminalProgress(target, rate_unit, label, delay, clock)
  return PercentProgress(target, unit, rate_unit=rate_unit, label=label,
                         initial=initial, stream=stream, delay=delay,
                         clock=clock)

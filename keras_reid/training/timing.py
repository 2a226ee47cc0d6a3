"""Where a training process's wall time goes: seconds per phase.

A run's train_seconds alone does not say whether a slow recipe is slow in
its train steps, its evaluations, its checkpoints or the pseudo labelling
of an unsupervised stage; this clock does. The training loop and the
unsupervised rounds time their phases with `PhaseClock.phase`; the run
writes `PhaseClock.breakdown` into metrics.json ("phase_seconds") and logs
it as one line.

Phases (`PHASES`):
  step_start: a fine-tuning step's start-up before its second iteration:
    optimizer, restore, the input pipeline's first batches (a stage's fixed
    augmented set is drawn here) and the first call, which traces the
    train step;
  iterations: every later train iteration, waiting for its batch included
    (the pipeline runs ahead in tf.data's threads; bench/data_results.md
    times it alone);
  evaluation: evaluations during and after the steps and before each
    unsupervised round (feature extraction, ranking, reports);
  checkpoint_saves: checkpoints written;
  summaries: TensorBoard scalars and pictures written by the loop;
  pseudo_labels: an unsupervised round's feature extraction and labelling;
  other: the rest of the process's time (building and restoring models,
    datasets, progress files).
Phases do not nest: a phase entered inside another (the summaries an
evaluation writes) counts as the outer one, so the phases add up to the
total.

The clock counts this process only: a resumed run's breakdown covers the
part it ran. Its total is the run's train_seconds.
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

PHASES = ("step_start", "iterations", "evaluation", "checkpoint_saves",
          "summaries", "pseudo_labels")


class PhaseClock:
  """Wall seconds per phase, and the images the train iterations consumed."""

  def __init__(self):
    self.started = time.perf_counter()
    self.seconds = {name: 0.0 for name in PHASES}
    self.images = 0  # training images of every iteration, all replicas
    self._iteration_images = 0  # those of the "iterations" phase
    self._inside = False

  def count_iteration(self, images: int, *, first: bool) -> None:
    """Counts one train iteration's images (all replicas); `first`: the
    step's first iteration, timed as step_start."""
    self.images += images
    if not first:
      self._iteration_images += images

  def add(self, name: str, seconds: float) -> None:
    """Adds `seconds` measured by the caller to phase `name` (for spans
    that are not one block, such as a step's start-up through its first
    iteration); nothing inside another phase."""
    self._check(name)
    if not self._inside:
      self.seconds[name] += seconds

  def _check(self, name: str) -> None:
    if name not in self.seconds:
      raise ValueError(f"Unknown phase {name!r}; expected one of {PHASES}.")

  @contextlib.contextmanager
  def phase(self, name: str) -> Iterator[None]:
    """Adds the block's wall time to `name` (one of PHASES); inside another
    phase the block counts as that one."""
    self._check(name)
    if self._inside:
      yield
      return
    self._inside = True
    start = time.perf_counter()
    try:
      yield
    finally:
      self.seconds[name] += time.perf_counter() - start
      self._inside = False

  def breakdown(self) -> dict:
    """{"total_seconds", "seconds": {phase: s, ..., "other": s},
    "images_per_second": {"iterations": images / iterations' seconds,
    "run": images / total}} since the clock started ("iterations" counts
    the images of the timed iterations, not those of each step's first)."""
    total = time.perf_counter() - self.started
    seconds = dict(self.seconds, other=max(0.0, total - sum(
        self.seconds.values())))
    iterations = self.seconds["iterations"]
    return {
        "total_seconds": total,
        "seconds": seconds,
        "images_trained": self.images,
        "images_per_second": {
            "iterations": (self._iteration_images / iterations
                           if iterations else 0.0),
            "run": self.images / total if total else 0.0,
        },
    }


def describe(breakdown: dict) -> str:
  """One line: "Time 731 s: iterations 612 s (84%, 271 img/s), ..."."""
  total = breakdown["total_seconds"]
  parts = []
  for name, seconds in sorted(breakdown["seconds"].items(),
                              key=lambda item: -item[1]):
    share = 100 * seconds / total if total else 0.0
    text = f"{name} {seconds:.0f} s ({share:.0f}%"
    if name == "iterations" and seconds:
      text += f", {breakdown['images_per_second']['iterations']:.0f} img/s"
    parts.append(text + ")")
  return (f"Time {total:.0f} s, {breakdown['images_per_second']['run']:.0f} "
          "training images/s over the run: " + ", ".join(parts))

"""Paired comparison of two recipes over the same splits, with a verdict.

A claim "recipe X beats recipe Y" is tested on the splits both ran: the
per-split differences d_s = x_s - y_s (same split index s, so the split's
difficulty cancels), their mean, their sample standard deviation (ddof=1)
and the two-sided Student-t confidence interval of the mean,

    mean +- t(1 - (1 - confidence) / 2, n - 1) * sd / sqrt(n).

Verdicts (the claim is that the difference is positive):
  "holds"           the interval lies above zero;
  "contradicted"    the interval lies below zero;
  "within noise"    the interval contains zero;
  "too few splits"  fewer than MIN_PAIRS (3) pairs: no verdict (the mean
                    and, from two pairs, the interval are still given);
  "not measured yet" no pair at all.

Why three: at n = 2 the interval has one degree of freedom and collapses
to a point whenever the two differences are equal, which Rank-1 makes
common (it moves in steps of one query: 0.32 points on VIPeR), so two
splits with the same +3.8 would "hold" with a zero-width interval.
At n = 3 splits, t(0.975, 2) = 4.303: the 95 % interval is 4.3 standard
errors wide on each side, so only large or very consistent differences
hold. TensorFlow-free (NumPy and SciPy).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import numpy as np
from scipy import stats

HOLDS = "holds"
CONTRADICTED = "contradicted"
WITHIN_NOISE = "within noise"
TOO_FEW = "too few splits"
NOT_MEASURED = "not measured yet"

# Fewest paired splits that get a verdict (see the module docstring).
MIN_PAIRS = 3


def mean_sd(values) -> tuple[float, float]:
  """Mean and sample standard deviation (ddof=1; nan for one value).

  Args:
    values: [n] numbers, n >= 1.

  Returns:
    (mean, sd).
  """
  values = np.asarray(values, np.float64).reshape(-1)
  if values.size == 0:
    raise ValueError("mean_sd needs one or more values, got none.")
  sd = float(np.std(values, ddof=1)) if values.size > 1 else float("nan")
  return float(np.mean(values)), sd


@dataclasses.dataclass(frozen=True)
class PairedComparison:
  """A paired difference and its verdict.

  Attributes:
    splits: the split indices both sides have, ascending.
    diffs: [n] better - worse per split (in the inputs' unit).
    mean: mean of diffs (nan when n = 0).
    sd: sample SD of diffs, ddof=1 (nan when n < 2).
    low, high: the t-based confidence interval of the mean (nan when n < 2;
      both equal the mean when sd is 0; reported, not judged, when n <
      MIN_PAIRS).
    confidence: e.g. 0.95.
    verdict: one of HOLDS, CONTRADICTED, WITHIN_NOISE, TOO_FEW,
      NOT_MEASURED.
  """
  splits: tuple[int, ...]
  diffs: tuple[float, ...]
  mean: float
  sd: float
  low: float
  high: float
  confidence: float
  verdict: str

  @property
  def n(self) -> int:
    return len(self.diffs)

  def describe(self, unit: str = "points") -> str:
    """One line: verdict, mean difference, interval, n and SD."""
    if self.n == 0:
      return self.verdict
    if self.n == 1:
      return (f"{self.verdict}: difference {self.mean:+.1f} {unit} "
              f"(split {self.splits[0]} only)")
    return (f"{self.verdict}: difference {self.mean:+.1f} {unit}, "
            f"{100 * self.confidence:.0f}% CI [{self.low:+.2f}, "
            f"{self.high:+.2f}] (paired over {self.n} splits, "
            f"SD {self.sd:.1f})")


def paired_comparison(better: Mapping[int, float], worse: Mapping[int, float],
                      *, confidence: float = 0.95) -> PairedComparison:
  """Tests "better > worse" on the splits both have.

  Args:
    better: {split index: metric} of the side the claim says is larger.
    worse: {split index: metric} of the other side.
    confidence: two-sided level of the t interval, in (0, 1).

  Returns:
    PairedComparison (see the module docstring for the verdicts).
  """
  if not 0 < confidence < 1:
    raise ValueError(f"confidence={confidence!r}: expected a level in (0, 1), "
                     "e.g. 0.95.")
  splits = tuple(sorted(set(better) & set(worse)))
  diffs = tuple(float(better[s]) - float(worse[s]) for s in splits)
  nan = float("nan")
  if not diffs:
    return PairedComparison(splits, diffs, nan, nan, nan, nan, confidence,
                            NOT_MEASURED)
  mean, sd = mean_sd(diffs)
  if len(diffs) < 2:
    return PairedComparison(splits, diffs, mean, sd, nan, nan, confidence,
                            TOO_FEW)
  half = (stats.t.ppf(0.5 + confidence / 2, len(diffs) - 1) * sd
          / math.sqrt(len(diffs)))
  low, high = mean - half, mean + half
  if len(diffs) < MIN_PAIRS:
    verdict = TOO_FEW
  elif low > 0:
    verdict = HOLDS
  elif high < 0:
    verdict = CONTRADICTED
  else:
    verdict = WITHIN_NOISE
  return PairedComparison(splits, diffs, mean, sd, float(low), float(high),
                          confidence, verdict)

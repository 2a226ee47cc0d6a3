"""keras_reid.evaluation.paired against hand-computed statistics.

The oracle is arithmetic written out here and Student-t quantiles from a
printed table (t(0.975, 2) = 4.303, t(0.975, 4) = 2.776, t(0.95, 2) =
2.920), not SciPy calls.
"""

import math

import pytest

from keras_reid.evaluation import paired

T_975_2 = 4.303  # t table: 2 degrees of freedom, two-sided 95 %
T_975_4 = 2.776  # 4 degrees of freedom, two-sided 95 %
T_95_2 = 2.920   # 2 degrees of freedom, two-sided 90 %


def _sides(diffs):
  """{split: value} pairs whose per-split differences are diffs."""
  worse = {s: 10.0 * s for s in range(len(diffs))}  # uneven baselines
  better = {s: worse[s] + d for s, d in enumerate(diffs)}
  return better, worse


def test_mean_sd_is_the_sample_sd():
  # [1, 2, 3]: mean 2; squared deviations 1 + 0 + 1 = 2; / (n - 1) = 1.
  mean, sd = paired.mean_sd([1, 2, 3])
  assert mean == pytest.approx(2.0)
  assert sd == pytest.approx(1.0)  # the population SD would be 0.816
  # [2, 4, 4, 4, 5, 5, 7, 9]: mean 5, squared deviations sum 32, / 7.
  assert paired.mean_sd([2, 4, 4, 4, 5, 5, 7, 9])[1] == pytest.approx(
      math.sqrt(32 / 7))
  mean, sd = paired.mean_sd([3.5])
  assert mean == 3.5 and math.isnan(sd)
  with pytest.raises(ValueError, match="one or more"):
    paired.mean_sd([])


def test_interval_of_1_2_3_contains_zero():
  # mean 2, SD 1, half-width t(0.975, 2) / sqrt(3) = 4.303 * 0.5774 = 2.484:
  # [-0.484, 4.484] contains 0. (The old rule, mean > 2 x population-SD
  # standard errors = 2 * 0.816 / sqrt(3) = 0.943, called this "holds".)
  c = paired.paired_comparison(*_sides([1, 2, 3]))
  assert c.splits == (0, 1, 2) and c.n == 3
  assert c.diffs == pytest.approx((1, 2, 3))
  assert c.mean == pytest.approx(2.0)
  assert c.sd == pytest.approx(1.0)
  assert c.low == pytest.approx(2 - 2.484, abs=1e-3)
  assert c.high == pytest.approx(2 + 2.484, abs=1e-3)
  assert c.verdict == paired.WITHIN_NOISE == "within noise"


def test_interval_above_zero_holds_and_below_is_contradicted():
  # [2, 3, 4]: mean 3, SD 1, [3 - 2.484, 3 + 2.484] = [0.516, 5.484].
  c = paired.paired_comparison(*_sides([2, 3, 4]))
  assert (c.low, c.high) == pytest.approx((0.516, 5.484), abs=1e-3)
  assert c.verdict == paired.HOLDS == "holds"
  # The same differences with the sides swapped: [-5.484, -0.516].
  better, worse = _sides([2, 3, 4])
  c = paired.paired_comparison(worse, better)
  assert c.mean == pytest.approx(-3.0)
  assert (c.low, c.high) == pytest.approx((-5.484, -0.516), abs=1e-3)
  assert c.verdict == paired.CONTRADICTED == "contradicted"


def test_five_splits_and_another_level():
  # [0, 2, 2, 4, 7]: mean 3, squared deviations 9 + 1 + 1 + 1 + 16 = 28,
  # SD sqrt(28 / 4) = 2.6458, half-width 2.776 * 2.6458 / sqrt(5) = 3.285.
  c = paired.paired_comparison(*_sides([0, 2, 2, 4, 7]))
  assert c.sd == pytest.approx(math.sqrt(7))
  assert c.low == pytest.approx(3 - 3.285, abs=2e-3)
  assert c.verdict == paired.WITHIN_NOISE
  # 90 %: [1, 2, 3] gets 2 +- 2.920 / sqrt(3) = 2 +- 1.686.
  c = paired.paired_comparison(*_sides([1, 2, 3]), confidence=0.90)
  assert c.low == pytest.approx(2 - 1.686, abs=1e-3)
  assert c.verdict == paired.HOLDS


def test_pairs_by_split_index_and_ignores_unpaired_splits():
  better = {0: 5.0, 1: 7.0, 2: 6.0, 4: 100.0}  # split 4 has no partner
  worse = {2: 3.0, 0: 4.0, 1: 5.0, 3: -100.0}
  c = paired.paired_comparison(better, worse)
  assert c.splits == (0, 1, 2)
  assert c.diffs == pytest.approx((1.0, 2.0, 3.0))  # same as [1, 2, 3]
  assert c.verdict == paired.WITHIN_NOISE


def test_too_few_and_none():
  c = paired.paired_comparison({0: 9.0, 1: 1.0}, {0: 1.0})
  assert c.verdict == paired.TOO_FEW == "too few splits"
  assert c.mean == pytest.approx(8.0) and math.isnan(c.low)
  assert "split 0 only" in c.describe()
  c = paired.paired_comparison({0: 1.0}, {1: 1.0})
  assert c.verdict == paired.NOT_MEASURED and c.describe() == "not measured yet"


def test_zero_spread_collapses_the_interval():
  c = paired.paired_comparison(*_sides([0.5, 0.5, 0.5]))
  assert c.sd == 0 and c.low == pytest.approx(0.5) == c.high
  assert c.verdict == paired.HOLDS
  assert (paired.paired_comparison(*_sides([0, 0, 0])).verdict
          == paired.WITHIN_NOISE)


def test_two_pairs_get_no_verdict():
  # Two equal differences (Rank-1 moves in steps of one query) collapse the
  # interval to a point: [+3.8, +3.8] would "hold" on two splits.
  c = paired.paired_comparison(*_sides([3.8, 3.8]))
  assert c.sd == pytest.approx(0, abs=1e-12)
  assert c.low == pytest.approx(3.8) == c.high
  assert c.verdict == paired.TOO_FEW
  # Two clearly positive ones: the interval is given, still no verdict.
  c = paired.paired_comparison(*_sides([5.0, 6.0]))
  assert c.low == pytest.approx(5.5 - 12.706 * math.sqrt(0.5) / math.sqrt(2),
                                abs=1e-3)
  assert c.verdict == paired.TOO_FEW
  assert c.describe().startswith("too few splits: difference +5.5 points, "
                                 "95% CI [")
  assert paired.MIN_PAIRS == 3


def test_describe_names_the_numbers():
  text = paired.paired_comparison(*_sides([2, 3, 4])).describe()
  assert text == ("holds: difference +3.0 points, 95% CI [+0.52, +5.48] "
                  "(paired over 3 splits, SD 1.0)")


def test_confidence_outside_0_1_is_refused():
  with pytest.raises(ValueError, match="confidence=1.5"):
    paired.paired_comparison({0: 1.0}, {0: 0.0}, confidence=1.5)


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

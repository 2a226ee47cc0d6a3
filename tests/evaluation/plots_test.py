"""Tests for keras_reid.evaluation.plots (matplotlib CMC and ROC figures)."""

import numpy as np
import pytest

from keras_reid.evaluation import plots
from keras_reid.evaluation import verification


def test_cmc_plot_axes_legend_and_data():
  a = np.linspace(0.4, 1.0, 20)
  b = np.linspace(0.2, 0.9, 20)
  figure = plots.cmc_plot([("run a", a), ("run b", b)], title="VIPeR",
                          stds=[None, np.full(20, 0.05)])
  axes = figure.axes[0]
  assert axes.get_xlabel() == "rank"
  assert axes.get_ylabel() == "matching rate (%)"
  assert axes.get_title() == "VIPeR"
  labels = [t.get_text() for t in axes.get_legend().get_texts()]
  assert labels == ["run a (Rank-1 40.0%)", "run b (Rank-1 20.0 ± 5.0%)"]
  curves = [line for line in axes.get_lines() if line.get_label() in labels]
  np.testing.assert_allclose(curves[0].get_xdata(), np.arange(1, 21))
  np.testing.assert_allclose(curves[0].get_ydata(), 100 * a)
  np.testing.assert_allclose(curves[1].get_ydata(), 100 * b)
  image = plots.render(figure)
  assert image.dtype == np.uint8 and image.shape == (440, 640, 3)
  assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10
  with pytest.raises(ValueError, match="at least one"):
    plots.cmc_plot([])


def test_roc_plot_marks_the_eer_point():
  rng = np.random.default_rng(0)
  same = np.r_[np.ones(200, bool), np.zeros(800, bool)]
  scores = rng.normal(same * 1.5, 1.0)
  roc = verification.roc_report(scores, same)
  figure = plots.roc_plot([("head", roc)])
  axes = figure.axes[0]
  assert (axes.get_xlabel(), axes.get_ylabel()) == (
      "false positive rate", "true positive rate")
  lines = axes.get_lines()
  label = f"head (AUC {roc['auc']:.3f}, EER {100 * roc['eer']:.1f}%)"
  assert label in [t.get_text() for t in axes.get_legend().get_texts()]
  curve = next(line for line in lines if line.get_label() == label)
  np.testing.assert_allclose(curve.get_xdata(), roc["fpr"])
  # The EER point lies on the curve where FPR = FNR: (eer, 1 - eer).
  point = lines[lines.index(curve) + 1]
  np.testing.assert_allclose(point.get_xdata(), [roc["eer"]])
  np.testing.assert_allclose(point.get_ydata(), [1 - roc["eer"]])
  assert abs(np.interp(roc["eer"], roc["fpr"], roc["tpr"])
             - (1 - roc["eer"])) < 0.02
  image = plots.roc_figure([("head", roc)])
  assert image.shape == (480, 520, 3)


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

"""Figures with matplotlib: CMC curves and ROC curves, as RGB arrays and PNG.

Drawn on matplotlib's Agg canvas (`matplotlib.figure.Figure`, never pyplot):
no display, no global figure state, safe in any process. The uint8 arrays go
to PNG (`visualize.save_png`) and to TensorBoard (`tf.summary.image`) alike.
TF-free (tests/tf_free_test.py): matplotlib and NumPy only.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Ranks marked on CMC curves (the ranks every report lists).
MARKED_RANKS = (1, 5, 10, 20)


def render(figure: Figure) -> np.ndarray:
  """The figure rendered by Agg: uint8 [H, W, 3]."""
  canvas = FigureCanvasAgg(figure)
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def cmc_label(label: str, cmc: Sequence[float],
              rank1_std: Optional[float] = None) -> str:
  """"label (Rank-1 43.3%)" or "label (Rank-1 43.3 ± 2.1%)"."""
  if not len(cmc):
    return label
  spread = f" ± {100 * rank1_std:.1f}" if rank1_std is not None else ""
  return f"{label} (Rank-1 {100 * cmc[0]:.1f}{spread}%)"


def cmc_plot(curves: Sequence[tuple[str, Sequence[float]]], *,
             title: str = "CMC", stds: Optional[Sequence] = None,
             size: tuple[float, float] = (6.4, 4.4),
             dpi: int = 100) -> Figure:
  """CMC curves of several runs or splits on one figure.

  Args:
    curves: (label, cmc) per curve; cmc[k] is the matching rate at rank k+1
      (fraction in [0, 1]). The legend shows each label with its Rank-1.
    title: figure title.
    stds: optional per curve, None or the per-rank std over splits [R]
      (shaded band, and the Rank-1 label shows "± std").
    size: figure size in inches.
    dpi: pixels per inch.

  Returns:
    the Figure (axes: rank 1..R on x, matching rate in % on y); `render`
    draws it as uint8 [size[1] * dpi, size[0] * dpi, 3].
  """
  if not curves:
    raise ValueError("cmc_plot needs at least one (label, cmc) curve.")
  figure = Figure(figsize=size, dpi=dpi)
  axes = figure.add_subplot()
  for i, (label, cmc) in enumerate(curves):
    cmc = 100 * np.asarray(cmc, np.float64)
    ranks = np.arange(1, len(cmc) + 1)
    std = None if stds is None or stds[i] is None else (
        100 * np.asarray(stds[i], np.float64))
    line, = axes.plot(ranks, cmc, linewidth=1.6, label=cmc_label(
        label, cmc / 100, None if std is None else std[0] / 100))
    if std is not None:
      axes.fill_between(ranks, cmc - std, cmc + std, alpha=0.15,
                        color=line.get_color(), linewidth=0)
    marked = [k for k in MARKED_RANKS if k <= len(cmc)]
    axes.plot(marked, cmc[np.asarray(marked, int) - 1], "o", markersize=3.5,
              color=line.get_color())
  axes.set_xlabel("rank")
  axes.set_ylabel("matching rate (%)")
  axes.set_ylim(0, 100)
  axes.set_xlim(1, max(len(c) for _, c in curves) or 1)
  axes.grid(True, alpha=0.3)
  axes.set_title(title)
  axes.legend(loc="lower right", fontsize="small")
  figure.tight_layout()
  return figure


def roc_plot(curves: Sequence[tuple[str, dict]], *,
             title: str = "ROC",
             size: tuple[float, float] = (5.2, 4.8),
             dpi: int = 100) -> Figure:
  """ROC curves with their equal-error-rate points.

  Args:
    curves: (label, roc) per curve, roc a `verification.roc_report` dict
      ("fpr", "tpr" lists, "eer", "auc" fractions).
    title: figure title.
    size, dpi: figure size in inches and pixels per inch.

  Returns:
    the Figure (`render` draws it as uint8 [H, W, 3]). The EER point is
    (fpr, tpr) = (eer, 1 - eer), where the curve meets the diagonal
    fpr = 1 - tpr (dotted).
  """
  if not curves:
    raise ValueError("roc_plot needs at least one (label, roc) curve.")
  figure = Figure(figsize=size, dpi=dpi)
  axes = figure.add_subplot()
  axes.plot([0, 1], [1, 0], ":", color="grey", linewidth=1,
            label="FPR = 1 - TPR")
  for label, roc in curves:
    line, = axes.plot(roc["fpr"], roc["tpr"], linewidth=1.6,
                      label=f"{label} (AUC {roc['auc']:.3f}, "
                            f"EER {100 * roc['eer']:.1f}%)")
    axes.plot([roc["eer"]], [1 - roc["eer"]], "o", markersize=6,
              color=line.get_color())
  axes.set_xlabel("false positive rate")
  axes.set_ylabel("true positive rate")
  axes.set_xlim(0, 1)
  axes.set_ylim(0, 1.01)
  axes.grid(True, alpha=0.3)
  axes.set_title(title)
  axes.legend(loc="lower right", fontsize="small")
  figure.tight_layout()
  return figure


def cmc_figure(curves: Sequence[tuple[str, Sequence[float]]],
               **kwargs) -> np.ndarray:
  """`cmc_plot` rendered: uint8 [H, W, 3]."""
  return render(cmc_plot(curves, **kwargs))


def roc_figure(curves: Sequence[tuple[str, dict]], **kwargs) -> np.ndarray:
  """`roc_plot` rendered: uint8 [H, W, 3]."""
  return render(roc_plot(curves, **kwargs))

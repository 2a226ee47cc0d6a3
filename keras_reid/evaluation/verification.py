"""Open-set verification: "at what score are two images the same person?".

From pair scores (the verification head's probability, or minus the SIR
distance) with same / different labels on a validation split: the ROC, its
AUC, the equal-error rate and the threshold at the EER, suggested as the
operating point.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from sklearn import metrics

from keras_reid.data import records


def roc_report(scores, same, *, higher_means_same: bool = True,
               max_points: int = 200) -> dict:
  """ROC, AUC, EER and the suggested threshold.

  Args:
    scores: [P] pair scores.
    same: [P] bools / 0-1, 1 = same person.
    higher_means_same: True for probabilities; False for distances (the
      threshold is then reported as a distance: same person if below it).
    max_points: the ROC curve is subsampled to about this many points.

  Returns:
    dict: "auc", "eer", "threshold" (same person if score >= threshold, or
    distance <= threshold), "fpr", "tpr", "thresholds" (lists),
    "num_pairs", "num_positive".
  """
  scores = np.asarray(scores, np.float64).reshape(-1)
  same = np.asarray(same).astype(bool).reshape(-1)
  if scores.shape != same.shape:
    raise ValueError(f"scores {scores.shape} and same {same.shape} must have "
                     "one label per score.")
  if same.all() or not same.any():
    raise ValueError("verification needs both same-person and different-"
                     f"person pairs; got {same.sum()} of {same.size} same.")
  signed = scores if higher_means_same else -scores
  fpr, tpr, thr = metrics.roc_curve(same, signed)
  fnr = 1.0 - tpr
  # EER: where the FPR and FNR curves cross, linearly interpolated.
  i = int(np.argmax(fnr <= fpr))
  if i == 0:
    eer, t = fpr[0], thr[0]
  else:
    d0, d1 = fnr[i - 1] - fpr[i - 1], fnr[i] - fpr[i]
    w = d0 / (d0 - d1) if d0 != d1 else 0.0
    eer = fpr[i - 1] + w * (fpr[i] - fpr[i - 1])
    t = thr[i]
  if not np.isfinite(t):
    t = signed.max()
  step = max(1, len(fpr) // max_points)
  keep = np.unique(np.r_[np.arange(0, len(fpr), step), len(fpr) - 1])
  sign = 1.0 if higher_means_same else -1.0
  finite = np.where(np.isfinite(thr[keep]), thr[keep], np.nan)
  return dict(
      auc=float(metrics.auc(fpr, tpr)), eer=float(eer),
      threshold=float(sign * t),
      fpr=fpr[keep].tolist(), tpr=tpr[keep].tolist(),
      thresholds=[None if np.isnan(v) else float(sign * v) for v in finite],
      num_pairs=int(same.size), num_positive=int(same.sum()))


def sir_pairs(features, pids, *, max_pairs: Optional[int] = 200_000,
              seed: int = 0):
  """Euclidean distances and same labels of image pairs of one split.

  All i < j pairs, or `max_pairs` of them drawn at random (seeded) with all
  positives kept, since they are few.

  Args:
    features: [N, D].
    pids: [N] ints (junk pid -1 images are dropped).
    max_pairs: cap on the number of pairs; None for all.
    seed: sampling seed.

  Returns:
    (distances [P] float32, same [P] bool).
  """
  feats = np.asarray(features, np.float32)
  pids = np.asarray(pids)
  keep = pids != records.JUNK_PID
  feats, pids = feats[keep], pids[keep]
  n = len(pids)
  if max_pairs is not None and n * (n - 1) // 2 > 20 * max_pairs:
    # Too many pairs to enumerate: all positives plus random negatives.
    rng = np.random.default_rng(seed)
    order = np.argsort(pids, kind="stable")
    _, starts, counts = np.unique(pids[order], return_index=True,
                                  return_counts=True)
    pos = [np.triu_indices(c, k=1) for c in counts]
    pi = np.concatenate([order[s + a] for s, (a, _) in zip(starts, pos)])
    pj = np.concatenate([order[s + b] for s, (_, b) in zip(starts, pos)])
    ni, nj = rng.integers(0, n, (2, max(max_pairs - pi.size, 1)))
    neg = pids[ni] != pids[nj]
    i, j = np.r_[pi, ni[neg]], np.r_[pj, nj[neg]]
    same = pids[i] == pids[j]
  else:
    i, j = np.triu_indices(n, k=1)
    same = pids[i] == pids[j]
  if max_pairs is not None and i.size > max_pairs and n * (n - 1) // 2 <= 20 * max_pairs:
    rng = np.random.default_rng(seed)
    neg = np.nonzero(~same)[0]
    n_neg = max(max_pairs - int(same.sum()), 1)
    chosen = np.sort(np.r_[np.nonzero(same)[0],
                           rng.choice(neg, min(n_neg, neg.size), False)])
    i, j, same = i[chosen], j[chosen], same[chosen]
  dist = np.sqrt(np.sum((feats[i] - feats[j]) ** 2, axis=1))
  return dist.astype(np.float32), same

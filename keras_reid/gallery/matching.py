"""Search results as text, with a same-person decision where one is known.

The gallery's distances are Euclidean distances between L2-normalised
embeddings, d = sqrt(2 - 2 cos), so a threshold applies when it is one of:

  * a cosine similarity c (the Embedder's `threshold`: a run's evaluation
    report's verification.sir_cosine, or the export's cosine_threshold; or
    an evaluation report's verification.sir_cosine.threshold): same person
    if d <= sqrt(2 - 2 c). Cosine similarity does not depend on the
    features' scale, so a run's evaluation of raw features qualifies;
  * an evaluation report's verification.sir_distance.threshold of an
    exported SavedModel (its serving output is L2-normalised; the report
    names it under "saved_model").

A training run's sir_distance threshold does not apply: the run's
evaluation ranks the backbone's raw features, whose distances have another
scale. Without a threshold that applies, the search prints distances only
and says why, and how to get one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Optional

import numpy as np
import pyarrow as pa

from keras_reid import runs
from keras_reid.gallery import index as index_lib


@dataclasses.dataclass(frozen=True)
class Threshold:
  """Attributes: value (a Euclidean distance, or None), note (its source, or
  why there is none)."""
  value: Optional[float]
  note: str


def distance_threshold(cosine: float) -> float:
  """The distance between unit vectors whose cosine similarity is `cosine`."""
  return math.sqrt(max(0.0, 2.0 - 2.0 * float(cosine)))


def threshold_from_report(report_path: str) -> Threshold:
  """The verification threshold of an evaluation report, if it applies.

  Raises:
    ValueError: the report is missing or is not JSON.
  """
  try:
    with open(report_path) as f:
      report = json.load(f)
  except OSError as e:
    raise ValueError(f"--eval_report {report_path!r} cannot be read "
                     f"({e.strerror}).") from e
  except ValueError as e:
    raise ValueError(f"--eval_report {report_path!r} is not JSON ({e}).") from e
  verification = report.get("verification") or {}
  cosine = (verification.get("sir_cosine") or {}).get("threshold")
  if cosine is not None and math.isfinite(cosine):
    return from_cosine(cosine, f"the cosine threshold of {report_path}")
  roc = verification.get("sir_distance") or {}
  value = roc.get("threshold")
  if value is None or not math.isfinite(value):
    return Threshold(None, f"{report_path} has no verification threshold "
                     "(evaluate with --verification): distances only.")
  if not report.get("saved_model"):
    return Threshold(None, (
        f"{report_path} evaluated a training run's raw embeddings; the "
        "gallery compares L2-normalised ones, on which its distance "
        f"threshold ({value:.4f}) means nothing: distances only. For a "
        "threshold that applies, evaluate the export: python -m "
        "keras_reid.evaluate --saved_model=EXPORT_DIR --dataset=... "
        "--root=... --output_json=REPORT, then search with "
        "--eval_report=REPORT."))
  eer = roc.get("eer")
  return Threshold(float(value), (
      f"same person if distance <= {value:.4f}: the equal-error-rate "
      f"threshold of {report_path}"
      + (f" (EER {100 * eer:.1f}%)" if eer is not None else "")))


def from_cosine(cosine: float, source: str) -> Threshold:
  value = distance_threshold(cosine)
  return Threshold(value, f"same person if distance <= {value:.4f} "
                   f"(cosine similarity >= {cosine:.4f}: {source})")


def default_threshold(kind: str, source: str, report_path: Optional[str],
                      model_cosine: Optional[float] = None) -> Threshold:
  """The threshold of `report_path` if given, else the model's own cosine
  threshold (`embedding_model.Model.cosine_threshold`), else a run's
  eval.json's, else none."""
  if report_path:
    return threshold_from_report(report_path)
  if model_cosine is not None:
    return from_cosine(model_cosine, f"the {kind}'s evaluation")
  if kind == "run":
    own = runs.eval_report_path(source)
    if os.path.isfile(own):
      return threshold_from_report(own)
  return Threshold(None, "no same-person threshold: the model records none "
                   "and no --eval_report was given; distances only.")


def format_results(query_paths, result: index_lib.SearchResult,
                   metadata: pa.Table, threshold: Threshold) -> str:
  """One block per query: rank, distance, decision, path, pid, camera, time.

  Args:
    query_paths: [Q] query image paths.
    result: the search of their embeddings.
    metadata: the gallery's table (`Gallery.metadata`).
    threshold: the decision's threshold, or its absence with the reason.
  """
  lines = [threshold.note]
  needed = np.unique(result.rows[result.rows >= 0])
  rows = dict(zip(needed.tolist(), metadata.take(pa.array(needed)).to_pylist()))
  for q, path in enumerate(query_paths):
    lines.append(f"{path}:")
    for rank, (row, dist) in enumerate(zip(result.rows[q],
                                           result.distances[q]), start=1):
      if row < 0:
        break
      meta = rows[row]
      decision = ""
      if threshold.value is not None:
        decision = ("same      " if dist <= threshold.value
                    else "different ")
      extra = " ".join(f"{key}={meta[key]}" for key in ("pid", "camid", "time")
                       if meta[key] is not None)
      lines.append(f"  {rank:3d}  {dist:.4f}  {decision}{meta['path']}"
                   + (f"  {extra}" if extra else ""))
  return "\n".join(lines)

"""The model a gallery is embedded with: which one it is, and loading it.

A model is an exported SavedModel version folder (it holds saved_model.pb)
or a training run directory (it holds config.json). Its id, recorded in the
index manifest and compared on every add and search, names what produced
the embeddings:

    saved_model <folder name> sha256:<16 hex of saved_model.pb and
                variables/variables.index>   (the weights' checksums)
    run <absolute run directory> <stage>/step<n>   (its latest weights)

so a re-export with other weights, or a run trained further, is a different
model. Loading goes through `keras_reid.embedder.Embedder` (L2-normalised
float32 embeddings, the SavedModel's serving_default numbers).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from typing import Optional, Sequence

import numpy as np

from keras_reid import runs

SAVED_MODEL = "saved_model"
RUN = "run"


@dataclasses.dataclass(frozen=True)
class ModelIdentity:
  """Attributes: source (absolute path), kind (SAVED_MODEL or RUN), model_id."""
  source: str
  kind: str
  model_id: str


def identify(path: str) -> ModelIdentity:
  """The kind and id of the model at `path`, without loading it.

  Raises:
    ValueError: `path` is neither a SavedModel folder nor a run directory.
  """
  source = _version_folder(os.path.abspath(os.path.expanduser(path)))
  pb = os.path.join(source, "saved_model.pb")
  if os.path.isfile(pb):
    digest = hashlib.sha256()
    for name in (pb, os.path.join(source, "variables", "variables.index")):
      if os.path.isfile(name):
        with open(name, "rb") as f:
          digest.update(hashlib.file_digest(f, "sha256").digest())
    return ModelIdentity(source, SAVED_MODEL,
                         f"{SAVED_MODEL} {os.path.basename(source)} "
                         f"sha256:{digest.hexdigest()[:16]}")
  if os.path.isfile(runs.config_path(source)):
    origin = runs.weights_origin(source)
    return ModelIdentity(source, RUN, f"{RUN} {source} "
                         f"{origin['stage']}/step{origin['step']}")
  raise ValueError(
      f"--embedder {path!r} is neither an exported SavedModel (a version folder "
      "holding saved_model.pb, e.g. export/reid/1, or the folder of its "
      "numbered versions) nor a training run directory (holding "
      "config.json).")


def _version_folder(path: str) -> str:
  """`path`, or its highest numbered version holding a SavedModel (the one
  `Embedder.from_saved_model` loads)."""
  if os.path.isfile(os.path.join(path, "saved_model.pb")) or \
      not os.path.isdir(path):
    return path
  versions = sorted(int(n) for n in os.listdir(path) if re.fullmatch(
      r"\d+", n) and os.path.isfile(os.path.join(path, n, "saved_model.pb")))
  return os.path.join(path, str(versions[-1])) if versions else path


class Model:
  """A loaded model: `embed(paths)` -> [N, D] float32, L2-normalised.

  Attributes:
    identity: the ModelIdentity it was loaded from.
    cosine_threshold: the Embedder's same-person cosine similarity (from
      the run's evaluation report or the export's export_info.json), or
      None.
  """

  def __init__(self, identity: ModelIdentity, batch_size: int = 64):
    from keras_reid import embedder  # TensorFlow: only when embedding
    self.identity = identity
    self.batch_size = batch_size
    if identity.kind == SAVED_MODEL:
      self._embedder = embedder.Embedder.from_saved_model(identity.source)
    else:
      self._embedder = embedder.Embedder.from_run(identity.source)
    self.cosine_threshold: Optional[float] = self._embedder.threshold

  def embed(self, paths: Sequence[str]) -> np.ndarray:
    return np.asarray(self._embedder.embed(list(paths),
                                           batch_size=self.batch_size),
                      np.float32)

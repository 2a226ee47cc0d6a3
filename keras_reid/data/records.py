"""The records every dataset reader returns: (path, pid, camid) per image."""

from __future__ import annotations

import dataclasses

# Market-1501 conventions, kept as they are so the evaluator can apply them.
JUNK_PID = -1
DISTRACTOR_PID = 0
UNKNOWN_CAMID = -1


@dataclasses.dataclass(frozen=True)
class Record:
  """One image of a Re-ID dataset.

  Attributes:
    path: absolute path of the image file.
    pid: identity; -1 = junk, 0 = distractor (Market-1501 conventions).
    camid: camera index (0-based), or -1 when unknown.
  """
  path: str
  pid: int
  camid: int = UNKNOWN_CAMID


@dataclasses.dataclass
class ReidDataset:
  """A dataset split into train / query / gallery records.

  Attributes:
    name: registry name of the dataset.
    train: training records.
    query: query records (empty for training-only data).
    gallery: gallery records.
    pid_names: for datasets whose identities are strings (manifests), the
      original name of each integer pid.
  """
  name: str
  train: list[Record]
  query: list[Record]
  gallery: list[Record]
  pid_names: dict[int, str] = dataclasses.field(default_factory=dict)

  def summary(self) -> dict[str, int]:
    """Counts users check a reader against (what `inspect` prints)."""
    def ids(records):
      return len({r.pid for r in records})
    cams = {r.camid for r in self.train + self.query + self.gallery}
    cams.discard(UNKNOWN_CAMID)
    return dict(
        num_train_ids=ids(self.train), num_train_images=len(self.train),
        num_query_ids=ids(self.query), num_query_images=len(self.query),
        num_gallery_ids=ids(self.gallery), num_gallery_images=len(self.gallery),
        num_cameras=len(cams))

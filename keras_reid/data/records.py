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


def combine_for_training(datasets: list[ReidDataset]) -> ReidDataset:
  """Pools the training sets of several datasets into one (e.g. Market + CUHK03).

  Identities and cameras of different datasets are kept apart by offsetting
  them; query and gallery are those of the first dataset.

  Args:
    datasets: at least one dataset.

  Returns:
    A ReidDataset named "a+b+..." whose train holds every training record.
  """
  if not datasets:
    raise ValueError("combine_for_training needs at least one dataset.")
  if len(datasets) == 1:
    return datasets[0]
  train = []
  pid_offset = cam_offset = 0
  for dataset in datasets:
    pids = sorted({r.pid for r in dataset.train})
    new_pid = {pid: pid_offset + i for i, pid in enumerate(pids)}
    cams = [r.camid for r in dataset.train if r.camid != UNKNOWN_CAMID]
    for r in dataset.train:
      camid = r.camid if r.camid == UNKNOWN_CAMID else r.camid + cam_offset
      train.append(Record(r.path, new_pid[r.pid], camid))
    pid_offset += len(pids)
    cam_offset += (max(cams) + 1) if cams else 0
  first = datasets[0]
  return ReidDataset("+".join(d.name for d in datasets), train, first.query,
                     first.gallery)

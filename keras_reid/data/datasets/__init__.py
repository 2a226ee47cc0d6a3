"""Dataset readers: one small function per dataset, in the DATASETS registry.

Every reader takes the dataset's own folder (the one holding `cam_a/`,
`bounding_box_train/`, ...) or the folder above it where the archive unpacked
under its usual name, and returns a `ReidDataset` of (path, pid, camid)
records with the dataset's standard protocol. Random-split protocols draw
split `split` from a generator seeded by (split_seed, split), so the same
split comes back every time. camids are 0-based, -1 when unknown. Market-1501
style junk (pid -1) and distractors (pid 0) are kept in the test sets as they
are, for the evaluator to treat.

One module per layout family: market_style (Market-1501, DukeMTMC-reID,
MSMT17, synthetic), two_camera (VIPeR, PRID 2011, CUHK01), cuhk03 and
manifest (a user's own data); common holds what they share (finding the
folder, parsing file names, the published counts).
"""

from __future__ import annotations

from typing import Callable

from absl import logging

from keras_reid.data.datasets import common
from keras_reid.data.datasets import cuhk03
from keras_reid.data.datasets import manifest
from keras_reid.data.datasets import market_style
from keras_reid.data.datasets import two_camera
from keras_reid.data.records import ReidDataset

# The published size of each benchmark, which its reader checks.
PUBLISHED_COUNTS = common.PUBLISHED_COUNTS

DATASETS: dict[str, Callable[..., ReidDataset]] = {
    "market1501": market_style.market1501,
    "dukemtmcreid": market_style.dukemtmcreid,
    "msmt17": market_style.msmt17,
    "cuhk03": cuhk03.cuhk03,
    "viper": two_camera.viper,
    "prid2011": two_camera.prid2011,
    "cuhk01": two_camera.cuhk01,
    "manifest": manifest.manifest,
    "synthetic": market_style.synthetic,
}


def load_dataset(name: str, root: str, *, split: int = 0, split_seed: int = 0,
                 **options) -> ReidDataset:
  """Reads dataset `name` from `root` with its standard protocol.

  Args:
    name: a key of DATASETS.
    root: the dataset folder or the folder above it.
    split: split index for repeated random-split protocols.
    split_seed: seed drawing the random splits.
    **options: reader-specific options (e.g. cuhk03 protocol / kind).

  Returns:
    ReidDataset.
  """
  if name not in DATASETS:
    raise ValueError(f"Unknown dataset {name!r}; expected one of "
                     f"{sorted(DATASETS)}.")
  ds = DATASETS[name](root, split=split, split_seed=split_seed, **options)
  logging.info("Loaded %s from %s: %s", name, root, ds.summary())
  return ds

"""What every dataset reader shares: its folder, its files, its checks.

Finding the dataset folder (`find_root`), listing and parsing its image
files, and checking what a reader found: no empty split, the published
counts (PUBLISHED_COUNTS), split 0 for fixed-split benchmarks. Each failure
raises an error naming the dataset and what was expected.
"""

from __future__ import annotations

import os
import re
from typing import Sequence

from absl import logging

from keras_reid.data.records import Record

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def find_root(root: str, markers: Sequence[str], usual_names: Sequence[str],
              dataset: str, layout: str) -> str:
  """Returns the folder holding all `markers`: `root` or root/<usual name>.

  Raises:
    FileNotFoundError: naming the expected layout.
  """
  root = os.path.abspath(os.path.expanduser(root))
  for cand in [root] + [os.path.join(root, n) for n in usual_names]:
    if all(os.path.exists(os.path.join(cand, m)) for m in markers):
      return cand
  raise FileNotFoundError(
      f"{dataset}: {root!r} is not a {dataset} folder. Expected "
      f"{layout} in it or in one of its subfolders {list(usual_names)}.")


def list_images(folder: str) -> list[str]:
  """Image files of `folder` (by extension), sorted by name, as full paths."""
  names = [n for n in os.listdir(folder)
           if n.lower().endswith(IMAGE_EXTENSIONS)]
  return [os.path.join(folder, n) for n in sorted(names)]


def parse_name(pattern: re.Pattern, path: str, what: str) -> re.Match:
  """Matches `pattern` on the file name of `path`.

  Raises:
    ValueError: naming the file and the expected name `what`.
  """
  m = pattern.match(os.path.basename(path))
  if m is None:
    raise ValueError(
        f"Cannot parse file name {path!r}: expected {what} "
        f"(regular expression {pattern.pattern}). Remove or rename the file.")
  return m


def check_nonempty(dataset: str, **splits: list[Record]) -> None:
  """Raises ValueError naming the first empty split of `splits`."""
  for name, recs in splits.items():
    if not recs:
      raise ValueError(
          f"{dataset}: the {name} split is empty; check that the dataset "
          "folder is complete.")


# Published sizes of each benchmark, checked by its reader: a copy that
# differs is incomplete or not the published set. Sources: each dataset's
# paper / readme (VIPeR 632 pairs; PRID 2011 single_shot 385 cam_a and 749
# cam_b persons, 200 in both; CUHK01 971 persons x 4 images; Market-1501
# 12,936 train / 19,732 gallery / 3,368 query images; DukeMTMC-reID 16,522 /
# 17,661 / 2,228; CUHK03 1,467 identities).
PUBLISHED_COUNTS = {
    "viper": {"cam_a images": 632, "cam_b images": 632},
    "prid2011": {"cam_a persons": 385, "cam_b persons": 749,
                 "persons in both cameras": 200},
    "cuhk01": {"persons": 971, "images": 3884},
    "market1501": {"train images": 12936, "gallery images": 19732,
                   "query images": 3368},
    "dukemtmcreid": {"train images": 16522, "gallery images": 17661,
                     "query images": 2228},
    "cuhk03": {"identities": 1467},
}


def check_counts(dataset: str, folder: str, found: dict[str, int],
                 allow_incomplete: bool) -> None:
  """Compares a folder's counts with PUBLISHED_COUNTS[dataset].

  Raises:
    ValueError: naming the folder and expected vs found counts, unless
      `allow_incomplete` (then a warning says the same).
  """
  expected = PUBLISHED_COUNTS[dataset]
  wrong = {k: (v, found[k]) for k, v in expected.items() if found[k] != v}
  if not wrong:
    return
  detail = ", ".join(f"{k}: expected {e}, found {f}"
                     for k, (e, f) in wrong.items())
  if allow_incomplete:
    logging.warning("%s: %r differs from the published set (%s); using it "
                    "as is (allow_incomplete=True), so results are not "
                    "comparable with published ones.", dataset, folder, detail)
    return
  raise ValueError(
      f"{dataset}: {folder!r} does not hold the published set ({detail}). "
      "The copy is incomplete or another version: re-extract it, or pass "
      "the reader option allow_incomplete=True (--options=allow_incomplete="
      "true, or config stages.<name>.options) to use it as is.")


def check_single_split(dataset: str, split: int) -> None:
  """Raises ValueError unless `split` is 0, the one split of `dataset`."""
  if split != 0:
    raise ValueError(f"{dataset} has one fixed train / query / gallery "
                     f"split (split 0); got split={split}.")

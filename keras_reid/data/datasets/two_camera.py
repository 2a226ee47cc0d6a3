"""Two-camera benchmarks with random splits: VIPeR, PRID 2011, CUHK01.

Each protocol draws NUM_RANDOM_SPLITS train / test identity splits; split
`split` comes from a generator seeded by (split_seed, split), so the same
split comes back every time. Query: the camera-A images of the test
identities; gallery: their camera-B images (PRID 2011 keeps its camera-B-only
persons in the gallery as distractors).
"""

from __future__ import annotations

import os
import re
from typing import Sequence

import numpy as np

from keras_reid.data.datasets import common
from keras_reid.data.records import Record
from keras_reid.data.records import ReidDataset

# Random-split protocols (VIPeR, PRID 2011, CUHK01) report the mean over
# this many splits; a split index beyond them is a mistake, not a new split.
NUM_RANDOM_SPLITS = 10


def _split_ids(ids: Sequence[int], num_train: int, split: int,
               split_seed: int) -> tuple[set[int], set[int]]:
  """Random train / test identity split number `split`."""
  if not 0 <= split < NUM_RANDOM_SPLITS:
    raise ValueError(
        f"split={split}: the protocol has {NUM_RANDOM_SPLITS} random splits, "
        f"0-{NUM_RANDOM_SPLITS - 1}.")
  rng = np.random.default_rng([split_seed, split])
  perm = rng.permutation(sorted(ids))
  return set(perm[:num_train].tolist()), set(perm[num_train:].tolist())


def _two_camera_split(name: str, records: list[Record], ids: Sequence[int],
                      num_train: int, split: int, split_seed: int, *,
                      gallery_of_test_ids_only: bool = True) -> ReidDataset:
  """Random split `split` of a two-camera set (VIPeR, PRID 2011, CUHK01).

  Train: every image (both cameras) of `num_train` of `ids`; query: the
  camera-0 (A) images of the other ids; gallery: their camera-1 (B) images,
  or with gallery_of_test_ids_only=False every camera-B image not of a
  training id (persons seen by camera B only stay in as distractors). Record
  order is kept in every split.
  """
  train_ids, test_ids = _split_ids(ids, num_train, split, split_seed)
  in_gallery = ((lambda pid: pid in test_ids) if gallery_of_test_ids_only
                else (lambda pid: pid not in train_ids))
  ds = ReidDataset(
      name, [r for r in records if r.pid in train_ids],
      [r for r in records if r.camid == 0 and r.pid in test_ids],
      [r for r in records if r.camid == 1 and in_gallery(r.pid)])
  common.check_nonempty(name, train=ds.train, query=ds.query,
                        gallery=ds.gallery)
  return ds


_VIPER_RE = re.compile(r"^(\d+)_(\d+)\.bmp$")


def viper(root: str, *, split: int = 0, split_seed: int = 0,
          allow_incomplete: bool = False) -> ReidDataset:
  """VIPeR: cam_a/PID_ANGLE.bmp, cam_b/PID_ANGLE.bmp, 632 ids.

  Protocol: 10 random splits of 316 train / 316 test ids; train = both
  cameras of the train ids; query = cam_a test images, gallery = cam_b.
  """
  folder = common.find_root(root, ("cam_a", "cam_b"),
                            ("VIPeR", "viper", "VIPeR.v1.0"), "viper",
                            "cam_a/ and cam_b/ holding PID_ANGLE.bmp")
  cams = []
  for c, sub in enumerate(("cam_a", "cam_b")):
    cams.append([
        Record(p, int(common.parse_name(
            _VIPER_RE, p, "PID_ANGLE.bmp, e.g. 000_45.bmp").group(1)), c)
        for p in common.list_images(os.path.join(folder, sub))])
  common.check_counts("viper", folder, {"cam_a images": len(cams[0]),
                                        "cam_b images": len(cams[1])},
                      allow_incomplete)
  ids = sorted({r.pid for r in cams[0]} & {r.pid for r in cams[1]})
  return _two_camera_split("viper", cams[0] + cams[1], ids, len(ids) // 2,
                           split, split_seed)


_PRID_RE = re.compile(r"^person_(\d+)\.png$")


def prid2011(root: str, *, split: int = 0, split_seed: int = 0,
             num_shared: int = 200, allow_incomplete: bool = False
             ) -> ReidDataset:
  """PRID 2011 single-shot: single_shot/cam_a (385), single_shot/cam_b (749).

  Persons 1-200 appear in both cameras. Protocol: 10 random splits; 100 of
  the 200 shared persons train (both cameras), the other 100 test; query =
  their cam_a images; gallery = every cam_b image except the training
  persons' (100 test persons + 549 cam_b-only persons = 649 images).
  """
  folder = common.find_root(root, ("single_shot/cam_a", "single_shot/cam_b"),
                            ("prid_2011", "prid2011", "PRID2011"), "prid2011",
                            "single_shot/cam_a/ and single_shot/cam_b/ "
                            "holding person_NNNN.png")
  cams = []
  for c, sub in enumerate(("cam_a", "cam_b")):
    cams.append([
        Record(p, int(common.parse_name(
            _PRID_RE, p, "person_NNNN.png").group(1)), c)
        for p in common.list_images(
            os.path.join(folder, "single_shot", sub))])
  shared = sorted({r.pid for r in cams[0]} & {r.pid for r in cams[1]} &
                  set(range(1, num_shared + 1)))
  common.check_counts("prid2011", folder, {
      "cam_a persons": len({r.pid for r in cams[0]}),
      "cam_b persons": len({r.pid for r in cams[1]}),
      "persons in both cameras": len(shared)}, allow_incomplete)
  return _two_camera_split("prid2011", cams[0] + cams[1], shared,
                           len(shared) // 2, split, split_seed,
                           gallery_of_test_ids_only=False)


# 7 digits: person (4, 0001-0971) then image (3, 001-004), e.g. 0001003.png.
_CUHK01_RE = re.compile(r"^(\d{4})(\d{3})\.png$")


def cuhk01(root: str, *, split: int = 0, split_seed: int = 0,
           num_train_ids: int = 485, allow_incomplete: bool = False
           ) -> ReidDataset:
  """CUHK01: campus/PPPPIII.png, 971 persons x 4 images.

  PPPP is the person (0001-0971), III the image: 001-002 camera A, 003-004
  camera B (as the dataset and the reference implementations name them).
  Protocols: 10 random splits of `num_train_ids` train ids and the rest for
  test: 485 / 486 (default) or 871 / 100 (option num_train_ids=871, the
  split deep Re-ID papers of 2016 report); query = camera A test images,
  gallery = camera B.

  Raises:
    ValueError: num_train_ids leaves no train or no test identity (names
      both numbers).
  """
  folder = common.find_root(root, ("campus",), ("CUHK01", "cuhk01"),
                            "cuhk01", "campus/ holding PPPPIII.png")
  recs = []
  for p in common.list_images(os.path.join(folder, "campus")):
    m = common.parse_name(_CUHK01_RE, p, "PPPPIII.png (person PPPP, image "
                          "III 001-004), e.g. 0001003.png")
    recs.append(Record(p, int(m.group(1)), 0 if int(m.group(2)) <= 2 else 1))
  ids = sorted({r.pid for r in recs})
  common.check_counts("cuhk01", folder,
                      {"persons": len(ids), "images": len(recs)},
                      allow_incomplete)
  if not 0 < num_train_ids < len(ids):
    raise ValueError(
        f"cuhk01: num_train_ids={num_train_ids} but {folder!r} holds "
        f"{len(ids)} persons; expected 1..{len(ids) - 1} so that both splits "
        "have identities (protocols: 485 train / 486 test, or 871 / 100 of "
        "the full 971).")
  return _two_camera_split("cuhk01", recs, ids, num_train_ids, split,
                           split_seed)

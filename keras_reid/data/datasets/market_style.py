"""Readers of the Market-1501 family: one fixed train / query / gallery split.

market1501, dukemtmcreid and synthetic read the Market layout
(`bounding_box_train/`, `bounding_box_test/`, `query/`, the identity and
camera in each file name); msmt17 reads the same protocol from its list
files.
"""

from __future__ import annotations

import os
import re

from keras_reid.data import records as records_lib
from keras_reid.data.datasets import common
from keras_reid.data.records import Record
from keras_reid.data.records import ReidDataset
from keras_reid.data.synthetic import generator as synthetic_lib

_MARKET_RE = re.compile(r"^(-1|\d+)_c(\d)s(\d+)_(\d+)_(\d+)\.jpg$")
_DUKE_RE = re.compile(r"^(\d+)_c(\d+)_f(\d+)\.jpg$")
_MARKET_DIRS = ("bounding_box_train", "bounding_box_test", "query")


def _read_market_layout(folder: str, pattern: re.Pattern, what: str,
                        name: str, allow_incomplete: bool | None = None
                        ) -> ReidDataset:
  """Reads the three folders; checks the published counts unless None."""
  def read(sub, drop_junk):
    out = []
    for path in common.list_images(os.path.join(folder, sub)):
      if not path.endswith(".jpg"):
        continue
      m = common.parse_name(pattern, path, what)
      pid = int(m.group(1))
      if drop_junk and pid == records_lib.JUNK_PID:
        continue  # a junk box cannot be a training class
      out.append(Record(path, pid, int(m.group(2)) - 1))
    return out
  ds = ReidDataset(name, read("bounding_box_train", True),
                   read("query", False), read("bounding_box_test", False))
  common.check_nonempty(name, train=ds.train, query=ds.query,
                        gallery=ds.gallery)
  if allow_incomplete is not None:
    common.check_counts(name, folder, {
        "train images": len(ds.train), "gallery images": len(ds.gallery),
        "query images": len(ds.query)}, allow_incomplete)
  return ds


def market1501(root: str, *, split: int = 0, split_seed: int = 0,
               allow_incomplete: bool = False) -> ReidDataset:
  """Market-1501: bounding_box_train / bounding_box_test / query.

  File names `0002_c1s1_000451_03.jpg` (pid, camera 1-6, sequence, frame,
  box); pid -1 = junk, 0000 = distractor (kept in the gallery; junk is
  dropped from train only). Image counts are checked against the published
  set unless `allow_incomplete`.
  """
  del split_seed
  common.check_single_split("market1501", split)
  folder = common.find_root(
      root, _MARKET_DIRS,
      ("Market-1501-v15.09.15", "Market-1501", "market1501"), "market1501",
      "bounding_box_train/, bounding_box_test/, query/")
  return _read_market_layout(folder, _MARKET_RE,
                             "PID_cCsS_FRAME_BOX.jpg, e.g. "
                             "0002_c1s1_000451_03.jpg", "market1501",
                             allow_incomplete)


def dukemtmcreid(root: str, *, split: int = 0, split_seed: int = 0,
                 allow_incomplete: bool = False) -> ReidDataset:
  """DukeMTMC-reID: Market layout, names `0001_c2_f0046182.jpg`.

  Image counts are checked against the published set unless
  `allow_incomplete`.
  """
  del split_seed
  common.check_single_split("dukemtmcreid", split)
  folder = common.find_root(root, _MARKET_DIRS,
                            ("DukeMTMC-reID", "dukemtmc-reid"),
                            "dukemtmcreid", "bounding_box_train/, "
                            "bounding_box_test/, query/")
  return _read_market_layout(folder, _DUKE_RE,
                             "PID_cC_fFRAME.jpg, e.g. 0001_c2_f0046182.jpg",
                             "dukemtmcreid", allow_incomplete)


def synthetic(root: str, *, split: int = 0, split_seed: int = 0,
              **generate_options) -> ReidDataset:
  """Generated pedestrians in the Market layout (data/synthetic/generator.py).

  If `root` holds no dataset and `generate_options` (num_ids, seed, domain,
  ...) are given, the dataset is generated there first.
  """
  del split, split_seed
  has = all(os.path.isdir(os.path.join(root, d)) for d in _MARKET_DIRS)
  if not has and generate_options:
    synthetic_lib.generate(root, **generate_options)
  folder = common.find_root(
      root, _MARKET_DIRS, ("synthetic",), "synthetic",
      "bounding_box_train/, bounding_box_test/, query/ (write them with "
      "`python -m keras_reid.data.synthetic --out=DIR`)")
  ds = _read_market_layout(folder, _MARKET_RE, "PID_cCsS_FRAME_BOX.jpg",
                           "synthetic")
  return ds


def msmt17(root: str, *, split: int = 0, split_seed: int = 0,
           combine_val: bool = True) -> ReidDataset:
  """MSMT17 (V1 or V2) from its list files.

  train = list_train.txt (+ list_val.txt, which the standard protocol trains
  on), query = list_query.txt, gallery = list_gallery.txt. Lines are
  `PID/NAME.jpg LABEL`; the camera is the third `_` field of the name
  (1-15, made 0-based).
  """
  del split, split_seed
  folder = common.find_root(
      root, ("list_train.txt", "list_query.txt", "list_gallery.txt"),
      ("MSMT17_V1", "MSMT17_V2", "MSMT17", "msmt17"), "msmt17",
      "list_train.txt, list_val.txt, list_query.txt, list_gallery.txt and "
      "train/, test/ (V2: mask_train_v2/, mask_test_v2/)")
  train_dir = next((d for d in ("train", "mask_train_v2")
                    if os.path.isdir(os.path.join(folder, d))), "train")
  test_dir = next((d for d in ("test", "mask_test_v2")
                   if os.path.isdir(os.path.join(folder, d))), "test")

  def read(list_name, img_dir):
    out = []
    with open(os.path.join(folder, list_name)) as f:
      for n, line in enumerate(f, 1):
        if not line.strip():
          continue
        parts = line.split()
        try:
          rel, pid = parts[0], int(parts[1])
          camid = int(os.path.basename(rel).split("_")[2]) - 1
        except (IndexError, ValueError) as e:
          raise ValueError(
              f"msmt17: cannot parse line {n} of {list_name}: {line!r}; "
              "expected `PID/PID_IDX_CAM_....jpg LABEL`.") from e
        out.append(Record(os.path.join(folder, img_dir, rel), pid, camid))
    return out
  train = read("list_train.txt", train_dir)
  if combine_val and os.path.exists(os.path.join(folder, "list_val.txt")):
    train += read("list_val.txt", train_dir)
  ds = ReidDataset("msmt17", train, read("list_query.txt", test_dir),
                   read("list_gallery.txt", test_dir))
  common.check_nonempty("msmt17", train=ds.train, query=ds.query,
                        gallery=ds.gallery)
  return ds

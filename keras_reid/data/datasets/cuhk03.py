"""CUHK03 from cuhk-03.mat: the new (767 / 700) and old (20 splits) protocols.

The images sit in the MATLAB v7.3 file; they are written once as PNGs to a
cache folder and read from there.
"""

from __future__ import annotations

import os
import re

from absl import logging
import h5py
import numpy as np
from PIL import Image
import scipy.io

from keras_reid.data.datasets import common
from keras_reid.data.records import Record
from keras_reid.data.records import ReidDataset


def _cuhk03_cache(mat_path: str, cache_dir: str, kind: str) -> str:
  """Writes the `kind` images of cuhk-03.mat as PNGs once; returns the dir.

  Names follow the common convention `CAMPAIR_PID_VIEW_IMG.png` (1-based;
  view 1 = images 1-5, view 2 = images 6-10), which the new-protocol
  config files' `filelist` uses.
  """
  out = os.path.join(cache_dir, f"images_{kind}")
  done = os.path.join(out, ".complete")
  if os.path.exists(done):
    return out
  os.makedirs(out, exist_ok=True)
  logging.info("Extracting CUHK03 %s images from %s to %s", kind, mat_path,
               out)
  with h5py.File(mat_path, "r") as mat:
    for campid, camp_ref in enumerate(mat[kind][0]):
      camp = mat[camp_ref][:].T
      for pid in range(camp.shape[0]):
        for imgid, ref in enumerate(camp[pid]):
          img = mat[ref][:].T
          if img.size == 0 or img.ndim < 3:
            continue  # empty cell: fewer than 10 images
          view = 1 if imgid < 5 else 2
          name = f"{campid + 1}_{pid + 1:03d}_{view}_{imgid + 1:02d}.png"
          Image.fromarray(img.astype(np.uint8)).save(os.path.join(out, name))
  open(done, "w").close()
  return out


_CUHK03_RE = re.compile(r"^(\d)_(\d{3})_(\d)_(\d{2})\.png$")


def cuhk03(root: str, *, split: int = 0, split_seed: int = 0,
           protocol: str = "new", kind: str = "labeled",
           cache_dir: str = "", allow_incomplete: bool = False
           ) -> ReidDataset:
  """CUHK03 from cuhk-03.mat (MATLAB v7.3 / HDF5), labelled or detected.

  protocol="new" (Zhong et al. 2017): 767 train / 700 test ids from
  `cuhk03_new_protocol_config_{labeled,detected}.mat` (1-based train_idx,
  query_idx, gallery_idx into filelist / labels; camera = the view field of
  the file name); its one split is split 0.
  protocol="old" (Li et al. 2014): the 20 `testsets` of cuhk-03.mat, 100 test
  ids each (split 0-19), the other 1,367 ids train; query and gallery are
  both the test images, camid = view (the evaluator excludes same-view
  matches), as the common open-source implementations do.

  Images are extracted once to `cache_dir` (default: the dataset folder).
  The number of identities is checked against the published 1,467 unless
  `allow_incomplete`.
  """
  del split_seed
  if protocol not in ("new", "old") or kind not in ("labeled", "detected"):
    raise ValueError(f"cuhk03: protocol={protocol!r}, kind={kind!r}; expected"
                     " protocol 'new' or 'old' and kind 'labeled' or "
                     "'detected'.")
  folder = common.find_root(
      root, ("cuhk-03.mat",), ("cuhk03_release", "cuhk03", "CUHK03"),
      "cuhk03", "cuhk-03.mat (and for the new protocol "
      "cuhk03_new_protocol_config_labeled.mat / _detected.mat)")
  mat_path = os.path.join(folder, "cuhk-03.mat")
  img_dir = _cuhk03_cache(mat_path, cache_dir or folder, kind)
  identities = set()
  for p in common.list_images(img_dir):
    m = _CUHK03_RE.match(os.path.basename(p))
    if m:
      identities.add((m.group(1), m.group(2)))
  common.check_counts("cuhk03", folder, {"identities": len(identities)},
                      allow_incomplete)
  if protocol == "new":
    common.check_single_split("cuhk03 (new protocol)", split)
  if protocol == "new":
    cfg_name = f"cuhk03_new_protocol_config_{kind}.mat"
    cfg_path = next((p for p in (os.path.join(folder, cfg_name),
                                 os.path.join(os.path.dirname(folder),
                                              cfg_name))
                     if os.path.exists(p)), None)
    if cfg_path is None:
      raise FileNotFoundError(
          f"cuhk03: {cfg_name} not found in {folder!r}; download it from "
          "the re-ranking repository (zhunzhong07/person-re-ranking).")
    cfg = scipy.io.loadmat(cfg_path)
    filelist = [str(np.ravel(f)[0]) for f in np.ravel(cfg["filelist"])]
    labels = np.ravel(cfg["labels"]).astype(int)

    def take(key):
      out = []
      for i in np.ravel(cfg[key]).astype(int) - 1:  # MATLAB indices
        path = os.path.join(img_dir, filelist[i])
        # The camera (view) is the third field of the name, as in the
        # protocol's reference code.
        m = common.parse_name(_CUHK03_RE, path, "CAMPAIR_PID_VIEW_IMG.png")
        view = int(m.group(3))
        out.append(Record(path, int(labels[i]), view - 1))
      return out
    ds = ReidDataset("cuhk03", take("train_idx"), take("query_idx"),
                     take("gallery_idx"))
  else:
    with h5py.File(mat_path, "r") as mat:
      sets = mat["testsets"][0]
      if not 0 <= split < len(sets):
        raise ValueError(f"cuhk03 old protocol has {len(sets)} splits; got "
                         f"split={split}.")
      test = {(int(c), int(p)) for c, p in mat[sets[split]][:].T}
    train, test_recs = [], []
    for p in common.list_images(img_dir):
      m = common.parse_name(_CUHK03_RE, p, "CAMPAIR_PID_VIEW_IMG.png")
      campid, pid, view = int(m.group(1)), int(m.group(2)), int(m.group(3))
      # Unique integer pid over camera pairs (pids restart in each pair).
      rec = Record(p, campid * 1000 + pid, view - 1)
      (test_recs if (campid, pid) in test else train).append(rec)
    ds = ReidDataset("cuhk03", train, test_recs, list(test_recs))
  common.check_nonempty("cuhk03", train=ds.train, query=ds.query,
                        gallery=ds.gallery)
  return ds

"""Dataset readers: one small function per dataset, in the DATASETS registry.

Every reader takes the dataset's own folder (the one holding `cam_a/`,
`bounding_box_train/`, ...) or the folder above it where the archive unpacked
under its usual name, and returns a `ReidDataset` of (path, pid, camid)
records with the dataset's standard protocol. Random-split protocols draw
split `split` from a generator seeded by (split_seed, split), so the same
split comes back every time. camids are 0-based, -1 when unknown. Market-1501
style junk (pid -1) and distractors (pid 0) are kept in the test sets as they
are, for the evaluator to treat.
"""

from __future__ import annotations

import csv
import os
import re
from typing import Callable, Iterable, Sequence

from absl import logging
import h5py
import numpy as np
from PIL import Image
import scipy.io

from keras_reid.data import records as records_lib
from keras_reid.data import synthetic as synthetic_lib
from keras_reid.data.records import Record
from keras_reid.data.records import ReidDataset

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


def _images(folder: str) -> list[str]:
  names = [n for n in os.listdir(folder)
           if n.lower().endswith(IMAGE_EXTENSIONS)]
  return [os.path.join(folder, n) for n in sorted(names)]


def _parse(pattern: re.Pattern, path: str, what: str) -> re.Match:
  m = pattern.match(os.path.basename(path))
  if m is None:
    raise ValueError(
        f"Cannot parse file name {path!r}: expected {what} "
        f"(regular expression {pattern.pattern}). Remove or rename the file.")
  return m


def _nonempty(dataset: str, **splits: list[Record]) -> None:
  for name, recs in splits.items():
    if not recs:
      raise ValueError(
          f"{dataset}: the {name} split is empty; check that the dataset "
          "folder is complete.")


# Random-split protocols (VIPeR, PRID 2011, CUHK01) report the mean over
# this many splits; a split index beyond them is a mistake, not a new split.
NUM_RANDOM_SPLITS = 10

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


def _check_counts(dataset: str, folder: str, found: dict[str, int],
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


def _check_single_split(dataset: str, split: int) -> None:
  if split != 0:
    raise ValueError(f"{dataset} has one fixed train / query / gallery "
                     f"split (split 0); got split={split}.")


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
  _nonempty(name, train=ds.train, query=ds.query, gallery=ds.gallery)
  return ds


# Market-1501 / DukeMTMC-reID ------------------------------------------------

_MARKET_RE = re.compile(r"^(-1|\d+)_c(\d)s(\d+)_(\d+)_(\d+)\.jpg$")
_DUKE_RE = re.compile(r"^(\d+)_c(\d+)_f(\d+)\.jpg$")
_MARKET_DIRS = ("bounding_box_train", "bounding_box_test", "query")


def _read_market_layout(folder: str, pattern: re.Pattern, what: str,
                        name: str, allow_incomplete: bool | None = None
                        ) -> ReidDataset:
  """Reads the three folders; checks the published counts unless None."""
  def read(sub, drop_junk):
    out = []
    for path in _images(os.path.join(folder, sub)):
      if not path.endswith(".jpg"):
        continue
      m = _parse(pattern, path, what)
      pid = int(m.group(1))
      if drop_junk and pid == records_lib.JUNK_PID:
        continue  # a junk box cannot be a training class
      out.append(Record(path, pid, int(m.group(2)) - 1))
    return out
  ds = ReidDataset(name, read("bounding_box_train", True),
                   read("query", False), read("bounding_box_test", False))
  _nonempty(name, train=ds.train, query=ds.query, gallery=ds.gallery)
  if allow_incomplete is not None:
    _check_counts(name, folder, {
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
  _check_single_split("market1501", split)
  folder = find_root(root, _MARKET_DIRS,
                     ("Market-1501-v15.09.15", "Market-1501", "market1501"),
                     "market1501", "bounding_box_train/, bounding_box_test/, "
                     "query/")
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
  _check_single_split("dukemtmcreid", split)
  folder = find_root(root, _MARKET_DIRS, ("DukeMTMC-reID", "dukemtmc-reid"),
                     "dukemtmcreid", "bounding_box_train/, "
                     "bounding_box_test/, query/")
  return _read_market_layout(folder, _DUKE_RE,
                             "PID_cC_fFRAME.jpg, e.g. 0001_c2_f0046182.jpg",
                             "dukemtmcreid", allow_incomplete)


def synthetic(root: str, *, split: int = 0, split_seed: int = 0,
              **generate_options) -> ReidDataset:
  """Generated pedestrians (Market layout), see keras_reid.data.synthetic.

  If `root` holds no dataset and `generate_options` (num_ids, seed, domain,
  ...) are given, the dataset is generated there first.
  """
  del split, split_seed
  has = all(os.path.isdir(os.path.join(root, d)) for d in _MARKET_DIRS)
  if not has and generate_options:
    synthetic_lib.generate(root, **generate_options)
  folder = find_root(root, _MARKET_DIRS, ("synthetic",), "synthetic",
                     "bounding_box_train/, bounding_box_test/, query/ (write "
                     "them with `python -m keras_reid.data.synthetic "
                     "--out=DIR`)")
  ds = _read_market_layout(folder, _MARKET_RE, "PID_cCsS_FRAME_BOX.jpg",
                           "synthetic")
  return ds


# MSMT17 ---------------------------------------------------------------------

def msmt17(root: str, *, split: int = 0, split_seed: int = 0,
           combine_val: bool = True) -> ReidDataset:
  """MSMT17 (V1 or V2) from its list files.

  train = list_train.txt (+ list_val.txt, which the standard protocol trains
  on), query = list_query.txt, gallery = list_gallery.txt. Lines are
  `PID/NAME.jpg LABEL`; the camera is the third `_` field of the name
  (1-15, made 0-based).
  """
  del split, split_seed
  folder = find_root(root, ("list_train.txt", "list_query.txt",
                            "list_gallery.txt"),
                     ("MSMT17_V1", "MSMT17_V2", "MSMT17", "msmt17"),
                     "msmt17", "list_train.txt, list_val.txt, list_query.txt,"
                     " list_gallery.txt and train/, test/ (V2: mask_train_v2/"
                     ", mask_test_v2/)")
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
  _nonempty("msmt17", train=ds.train, query=ds.query, gallery=ds.gallery)
  return ds


# VIPeR ----------------------------------------------------------------------

_VIPER_RE = re.compile(r"^(\d+)_(\d+)\.bmp$")


def viper(root: str, *, split: int = 0, split_seed: int = 0,
          allow_incomplete: bool = False) -> ReidDataset:
  """VIPeR: cam_a/PID_ANGLE.bmp, cam_b/PID_ANGLE.bmp, 632 ids.

  Protocol: 10 random splits of 316 train / 316 test ids; train = both
  cameras of the train ids; query = cam_a test images, gallery = cam_b.
  """
  folder = find_root(root, ("cam_a", "cam_b"), ("VIPeR", "viper",
                                                "VIPeR.v1.0"),
                     "viper", "cam_a/ and cam_b/ holding PID_ANGLE.bmp")
  cams = []
  for c, sub in enumerate(("cam_a", "cam_b")):
    cams.append([Record(p, int(_parse(_VIPER_RE, p, "PID_ANGLE.bmp, e.g. "
                                      "000_45.bmp").group(1)), c)
                 for p in _images(os.path.join(folder, sub))])
  _check_counts("viper", folder, {"cam_a images": len(cams[0]),
                                  "cam_b images": len(cams[1])},
                allow_incomplete)
  ids = sorted({r.pid for r in cams[0]} & {r.pid for r in cams[1]})
  return _two_camera_split("viper", cams[0] + cams[1], ids, len(ids) // 2,
                           split, split_seed)


# PRID 2011 ------------------------------------------------------------------

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
  folder = find_root(root, ("single_shot/cam_a", "single_shot/cam_b"),
                     ("prid_2011", "prid2011", "PRID2011"), "prid2011",
                     "single_shot/cam_a/ and single_shot/cam_b/ holding "
                     "person_NNNN.png")
  cams = []
  for c, sub in enumerate(("cam_a", "cam_b")):
    cams.append([Record(p, int(_parse(_PRID_RE, p, "person_NNNN.png").group(
        1)), c) for p in _images(os.path.join(folder, "single_shot", sub))])
  shared = sorted({r.pid for r in cams[0]} & {r.pid for r in cams[1]} &
                  set(range(1, num_shared + 1)))
  _check_counts("prid2011", folder, {
      "cam_a persons": len({r.pid for r in cams[0]}),
      "cam_b persons": len({r.pid for r in cams[1]}),
      "persons in both cameras": len(shared)}, allow_incomplete)
  return _two_camera_split("prid2011", cams[0] + cams[1], shared,
                           len(shared) // 2, split, split_seed,
                           gallery_of_test_ids_only=False)


# CUHK01 ---------------------------------------------------------------------

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
  folder = find_root(root, ("campus",), ("CUHK01", "cuhk01"), "cuhk01",
                     "campus/ holding PPPPIII.png")
  recs = []
  for p in _images(os.path.join(folder, "campus")):
    m = _parse(_CUHK01_RE, p, "PPPPIII.png (person PPPP, image III 001-004)"
               ", e.g. 0001003.png")
    recs.append(Record(p, int(m.group(1)), 0 if int(m.group(2)) <= 2 else 1))
  ids = sorted({r.pid for r in recs})
  _check_counts("cuhk01", folder, {"persons": len(ids), "images": len(recs)},
                allow_incomplete)
  if not 0 < num_train_ids < len(ids):
    raise ValueError(
        f"cuhk01: num_train_ids={num_train_ids} but {folder!r} holds "
        f"{len(ids)} persons; expected 1..{len(ids) - 1} so that both splits "
        "have identities (protocols: 485 train / 486 test, or 871 / 100 of "
        "the full 971).")
  return _two_camera_split("cuhk01", recs, ids, num_train_ids, split,
                           split_seed)


# Manifest / folder tree -----------------------------------------------------

_SPLITS = ("train", "query", "gallery")


def _int_or_none(name: str) -> int | None:
  try:
    return int(name)
  except ValueError:
    return None


def _pid_map(names: Iterable[str], source: str = "manifest"
             ) -> tuple[dict[str, int], dict[int, str]]:
  """Integer pids for a manifest's identities.

  All-integer pids keep their values. Otherwise every identity is a name,
  numbered 1..N in sorted order, except "-1" (junk) and "0" (distractor),
  which keep their meaning (records.JUNK_PID, records.DISTRACTOR_PID) and
  their value. Integer-like names mixed with other names (e.g. "7" next to
  "alice") are numbered like names: logged as a warning naming examples,
  since such a pid does not keep its value.

  Args:
    names: the pid strings (stripped).
    source: the manifest, for the warning.

  Returns:
    (name -> int pid, int pid -> name for the numbered names; empty when all
    pids are integers).
  """
  names = sorted(set(names))
  ints = {n: _int_or_none(n) for n in names}
  if all(v is not None for v in ints.values()):
    return {n: v for n, v in ints.items()}, {}
  reserved = (records_lib.JUNK_PID, records_lib.DISTRACTOR_PID)
  to_int = {n: v for n, v in ints.items() if v in reserved}
  named = [n for n in names if n not in to_int]
  mixed = [n for n in named if ints[n] is not None]
  if mixed:
    strings = [n for n in named if ints[n] is None]
    logging.warning(
        "%s: pids mix integers (%d, e.g. %s) and names (%d, e.g. %s); every "
        "pid other than -1 (junk) and 0 (distractor) is treated as a name and "
        "numbered 1..%d in sorted order, so the integer ones do not keep "
        "their values. Use only integers or only names to avoid this.",
        source, len(mixed), mixed[:3], len(strings), strings[:3], len(named))
  to_int.update({n: i + 1 for i, n in enumerate(named)})
  return to_int, {to_int[n]: n for n in named}


def manifest(root: str, *, split: int = 0, split_seed: int = 0
             ) -> ReidDataset:
  """A user's own data: a CSV manifest or a folder-per-identity tree.

  CSV (`root` is the file, or a folder holding `manifest.csv`): columns
  `path,pid,camid` and optionally `split` (train / query / gallery; without
  it everything is training data). Paths are relative to the CSV; pid is an
  integer or a name: names are numbered 1..N (the mapping is the dataset's
  pid_names) while -1 (junk, left out of training) and 0 (distractor) keep
  their meaning either way; camid an integer, -1 if unknown. Other columns
  are ignored.

  Tree (a folder without manifest.csv): `ROOT/<identity>/<images>`, or
  `ROOT/{train,query,gallery}/<identity>/<images>`; cameras unknown.
  """
  del split, split_seed
  root = os.path.abspath(os.path.expanduser(root))
  csv_path = root if os.path.isfile(root) else os.path.join(root,
                                                            "manifest.csv")
  if os.path.isfile(csv_path):
    return _read_csv(csv_path)
  if os.path.isdir(root):
    return _read_tree(root)
  raise FileNotFoundError(
      f"manifest: {root!r} is neither a CSV file nor a folder. Expected a "
      "CSV with columns path,pid,camid[,split], a folder holding "
      "manifest.csv, or a folder with one subfolder of images per identity.")


def _read_csv(csv_path: str) -> ReidDataset:
  base = os.path.dirname(csv_path)
  rows = []
  with open(csv_path, newline="") as f:
    reader = csv.DictReader(f)
    missing = {"path", "pid", "camid"} - set(reader.fieldnames or [])
    if missing:
      raise ValueError(
          f"manifest {csv_path!r} lacks column(s) {sorted(missing)}; "
          "expected a header `path,pid,camid[,split]`.")
    for n, row in enumerate(reader, 2):
      try:
        camid = int(row["camid"]) if row["camid"].strip() else -1
      except ValueError as e:
        raise ValueError(f"manifest {csv_path!r} line {n}: camid "
                         f"{row['camid']!r} is not an integer (-1 = "
                         "unknown).") from e
      sp = (row.get("split") or "train").strip().lower()
      if sp not in _SPLITS:
        raise ValueError(f"manifest {csv_path!r} line {n}: split {sp!r} is "
                         f"not one of {list(_SPLITS)}.")
      rows.append((os.path.join(base, row["path"].strip()),
                   row["pid"].strip(), camid, sp))
  if not rows:
    raise ValueError(f"manifest {csv_path!r} lists no images.")
  to_int, names = _pid_map((r[1] for r in rows), csv_path)
  out = {s: [] for s in _SPLITS}
  junk_train = 0
  for path, pid, camid, sp in rows:
    if sp == "train" and to_int[pid] == records_lib.JUNK_PID:
      junk_train += 1  # a junk image cannot be a training class
      continue
    out[sp].append(Record(path, to_int[pid], camid))
  if junk_train:
    logging.warning("%s: %d training image(s) with the junk pid -1 left out "
                    "of training.", csv_path, junk_train)
  if not (out["query"] or out["gallery"]):
    _nonempty("manifest", train=out["train"])
  return ReidDataset("manifest", out["train"], out["query"], out["gallery"],
                     names)


def _read_tree(root: str) -> ReidDataset:
  split_dirs = [s for s in _SPLITS if os.path.isdir(os.path.join(root, s))]
  tops = split_dirs if split_dirs else [""]
  found = []
  for top in tops:
    base = os.path.join(root, top)
    for ident in sorted(os.listdir(base)):
      d = os.path.join(base, ident)
      if os.path.isdir(d):
        for p in _images(d):
          found.append((p, ident, top or "train"))
  if not found:
    raise ValueError(
        f"manifest: no images found under {root!r}; expected "
        "ROOT/<identity>/<image files> or ROOT/{train,query,gallery}/"
        "<identity>/<image files>, or a manifest.csv.")
  to_int, names = _pid_map((f[1] for f in found), root)
  out = {s: [] for s in _SPLITS}
  for path, ident, sp in found:
    out[sp].append(Record(path, to_int[ident], records_lib.UNKNOWN_CAMID))
  return ReidDataset("manifest", out["train"], out["query"], out["gallery"],
                     names)


# CUHK03 ---------------------------------------------------------------------

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
  folder = find_root(root, ("cuhk-03.mat",), ("cuhk03_release", "cuhk03",
                                              "CUHK03"),
                     "cuhk03", "cuhk-03.mat (and for the new protocol "
                     "cuhk03_new_protocol_config_labeled.mat / _detected.mat)")
  mat_path = os.path.join(folder, "cuhk-03.mat")
  img_dir = _cuhk03_cache(mat_path, cache_dir or folder, kind)
  identities = set()
  for p in _images(img_dir):
    m = _CUHK03_RE.match(os.path.basename(p))
    if m:
      identities.add((m.group(1), m.group(2)))
  _check_counts("cuhk03", folder, {"identities": len(identities)},
                allow_incomplete)
  if protocol == "new":
    _check_single_split("cuhk03 (new protocol)", split)
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
        m = _parse(_CUHK03_RE, path, "CAMPAIR_PID_VIEW_IMG.png")
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
    for p in _images(img_dir):
      m = _parse(_CUHK03_RE, p, "CAMPAIR_PID_VIEW_IMG.png")
      campid, pid, view = int(m.group(1)), int(m.group(2)), int(m.group(3))
      # Unique integer pid over camera pairs (pids restart in each pair).
      rec = Record(p, campid * 1000 + pid, view - 1)
      (test_recs if (campid, pid) in test else train).append(rec)
    ds = ReidDataset("cuhk03", train, test_recs, list(test_recs))
  _nonempty("cuhk03", train=ds.train, query=ds.query, gallery=ds.gallery)
  return ds


# Registry -------------------------------------------------------------------

DATASETS: dict[str, Callable[..., ReidDataset]] = {
    "market1501": market1501,
    "dukemtmcreid": dukemtmcreid,
    "msmt17": msmt17,
    "cuhk03": cuhk03,
    "viper": viper,
    "prid2011": prid2011,
    "cuhk01": cuhk01,
    "manifest": manifest,
    "synthetic": synthetic,
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


"""Synthetic pedestrians in the Market-1501 layout (tests, the default run).

`generate` writes a dataset of the people and cameras of render.py:
identities with their own clothing and build, seen by cameras with their own
imaging, in one of two domains (styles) for transfer and
unsupervised-adaptation experiments.

Output (a Market-1501-layout folder, readable by the `market1501` and
`synthetic` readers):

    OUT/bounding_box_train/0001_c1s1_000003_01.jpg
    OUT/bounding_box_test/   test ids, plus distractors (0000) and junk (-1)
    OUT/query/               one image per test id and camera
    OUT/synthetic.json       the generation parameters

Train ids are 1..ceil(N/2), test ids the rest. Everything is drawn from
generators seeded by (seed, domain, what is drawn), so a folder is the same
byte for byte for the same arguments (and the same Pillow / libjpeg).

    python -m keras_reid.data.synthetic --out=DIR --num_ids=N --seed=S
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

from absl import logging
import numpy as np
from PIL import Image

from keras_reid.data import records
from keras_reid.data.synthetic import render

FORMAT_VERSION = 1
META_FILE = "synthetic.json"
SUBFOLDERS = ("bounding_box_train", "bounding_box_test", "query")
# The smallest arguments that make a dataset: a query needs a match in
# another camera, and the renderer's scene parts are at least 3 pixels.
MIN_IDS = 4
MIN_CAMERAS = 2
MIN_IMAGES_PER_CAMERA = 2
MIN_IMAGE_SIZE = (8, 4)
# The `domain`s generate() takes: render.py's styles.
DOMAINS = tuple(render.DOMAIN_STYLE)


def market_name(pid: int, cam: int, frame: int, box: int = 1) -> str:
  """Market-1501 file name; `cam` is 0-based (written 1-based)."""
  p = "-1" if pid == records.JUNK_PID else f"{pid:04d}"
  return f"{p}_c{cam + 1}s1_{frame:06d}_{box:02d}.jpg"


def _domain_code(domain: str) -> int:
  if domain not in DOMAINS:
    raise ValueError(f"Unknown synthetic domain {domain!r}; expected one of "
                     f"{list(DOMAINS)}.")
  return DOMAINS.index(domain)


def _params(num_ids, seed, domain, num_cameras, images_per_camera,
            image_size) -> dict[str, Any]:
  return dict(version=FORMAT_VERSION, num_ids=int(num_ids), seed=int(seed),
              domain=domain, num_cameras=int(num_cameras),
              images_per_camera=int(images_per_camera),
              image_size=[int(image_size[0]), int(image_size[1])])


def _read_meta(path: str) -> dict[str, Any] | None:
  """The parameters in a META_FILE this module wrote; None if there is none,
  or it is not one of ours."""
  try:
    with open(path) as f:
      meta = json.load(f)
  except (OSError, ValueError):
    return None
  keys = _params(MIN_IDS, 0, DOMAINS[0], MIN_CAMERAS, MIN_IMAGES_PER_CAMERA,
                 MIN_IMAGE_SIZE).keys()
  if (not isinstance(meta, dict) or meta.keys() != keys
      or meta["version"] != FORMAT_VERSION):
    return None
  return meta


def _listing(names: list[str]) -> str:
  return ", ".join(names[:5]) + (
      f" and {len(names) - 5} more" if len(names) > 5 else "")


def existing_dataset(out_dir: str) -> dict[str, Any] | None:
  """The parameters of the synthetic dataset in `out_dir`, if it holds one.

  Args:
    out_dir: a dataset folder.

  Returns:
    The parameters generate() wrote in its META_FILE; None when `out_dir` is
    new or an empty folder.

  Raises:
    FileExistsError: `out_dir` is a file, or a folder without a META_FILE
      written by generate() (the message says what it holds).
  """
  if not os.path.exists(out_dir):
    return None
  if not os.path.isdir(out_dir):
    raise FileExistsError(f"{out_dir} is a file, not a dataset folder; choose "
                          "an empty or new folder.")
  names = sorted(os.listdir(out_dir))
  if not names:
    return None
  meta = _read_meta(os.path.join(out_dir, META_FILE))
  if meta is None:
    what = (f"; its {META_FILE} was not written by this generator"
            if META_FILE in names else f" and no {META_FILE}")
    raise FileExistsError(
        f"{out_dir} is not a synthetic dataset folder: it holds "
        f"{_listing(names)}{what}. It is never replaced, even with overwrite; "
        "choose an empty or new folder.")
  return meta


def _check_replaceable(out_dir: str) -> None:
  """Raises FileExistsError unless `out_dir` holds only what generate()
  writes: deleting it must never delete anything else."""
  foreign = []
  for name in sorted(os.listdir(out_dir)):
    path = os.path.join(out_dir, name)
    if name == META_FILE and os.path.isfile(path):
      continue
    if name not in SUBFOLDERS or not os.path.isdir(path):
      foreign.append(name)
      continue
    foreign.extend(os.path.join(name, image) for image in sorted(os.listdir(path))
                   if not image.endswith(".jpg")
                   or not os.path.isfile(os.path.join(path, image)))
  if foreign:
    raise FileExistsError(
        f"{out_dir} holds a synthetic dataset and files the generator did not "
        f"write ({_listing(foreign)}), so it is not replaced; move them out, "
        "or choose an empty or new folder.")


def generate(out_dir: str, *, num_ids: int, seed: int, domain: str = "a",
             num_cameras: int | None = None, images_per_camera: int = 4,
             image_size: tuple[int, int] = (128, 64),
             overwrite: bool = False) -> str:
  """Writes (or reuses) a synthetic Market-1501-layout dataset.

  If `out_dir` already holds a dataset generated with the same arguments it
  is reused as it is; with other arguments it is an error unless
  `overwrite`. Generation goes to a temporary folder renamed at the end, so
  an interrupted run never leaves a half-written dataset.

  Args:
    out_dir: dataset folder to create.
    num_ids: identities; train ids 1..ceil(N/2), test ids the rest (N >= 4).
    seed: everything is a function of (seed, domain).
    domain: "a" (6 cameras, Market-like) or "b" (2 cameras, darker, blurrier,
      other scenes and clothing statistics).
    num_cameras: overrides the domain's camera count (>= 2).
    images_per_camera: images of an identity in each camera it visits (>= 2;
      test ids give one per camera to query, the rest to the gallery).
    image_size: (height, width), at least MIN_IMAGE_SIZE.
    overwrite: replace a dataset generated here with other parameters. A
      folder holding anything else (no META_FILE, or files this function did
      not write) is never replaced.

  Returns:
    out_dir.

  Raises:
    ValueError: arguments below the minimums.
    FileExistsError: `out_dir` is a file, holds something other than a
      synthetic dataset, or (without `overwrite`) a dataset generated with
      other arguments.
  """
  code = _domain_code(domain)
  if num_cameras is None:
    num_cameras = render.DOMAIN_STYLE[domain]["num_cameras"]
  if (num_ids < MIN_IDS or num_cameras < MIN_CAMERAS
      or images_per_camera < MIN_IMAGES_PER_CAMERA):
    raise ValueError(
        f"num_ids={num_ids}, num_cameras={num_cameras}, images_per_camera="
        f"{images_per_camera}: need num_ids >= {MIN_IDS}, num_cameras >= "
        f"{MIN_CAMERAS} and images_per_camera >= {MIN_IMAGES_PER_CAMERA} (a "
        "query needs a match in another camera).")
  if image_size[0] < MIN_IMAGE_SIZE[0] or image_size[1] < MIN_IMAGE_SIZE[1]:
    raise ValueError(f"image_size={tuple(image_size)}: need at least "
                     f"{MIN_IMAGE_SIZE} (height, width).")
  params = _params(num_ids, seed, domain, num_cameras, images_per_camera,
                   image_size)
  meta_path = os.path.join(out_dir, META_FILE)
  old = existing_dataset(out_dir)
  if old is not None:
    if old == params:
      logging.info("Reusing synthetic dataset %s", out_dir)
      return out_dir
    if not overwrite:
      raise FileExistsError(
          f"{out_dir} holds a synthetic dataset generated with {old}, not "
          f"{params}; choose another folder, delete it, or pass "
          "overwrite=True.")
    _check_replaceable(out_dir)

  h, w = image_size
  parent = os.path.dirname(os.path.abspath(out_dir))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".synthetic-", dir=parent)
  try:
    for sub in SUBFOLDERS:
      os.makedirs(os.path.join(tmp, sub))
    cameras = []
    for c in range(num_cameras):
      rng = np.random.default_rng([seed, code, 1, c])
      cameras.append(render.with_noise(
          render.sample_camera(rng, domain, h, w), rng))
    frames = [0] * num_cameras

    def write(sub, pid, cam, person, rng):
      frames[cam] += 1
      render.render(person, cameras[cam], rng, (h, w)).save(
          os.path.join(tmp, sub, market_name(pid, cam, frames[cam])),
          quality=92)

    num_train = (num_ids + 1) // 2
    for pid in range(1, num_ids + 1):
      rng = np.random.default_rng([seed, code, 2, pid])
      person = render.sample_person(rng, domain)
      ncams = int(rng.integers(2, min(num_cameras, 4) + 1))
      cams = sorted(rng.choice(num_cameras, ncams, replace=False).tolist())
      for cam in cams:
        for k in range(images_per_camera):
          if pid <= num_train:
            sub = "bounding_box_train"
          else:
            sub = "query" if k == 0 else "bounding_box_test"
          write(sub, pid, cam, person, rng)
    num_test = num_ids - num_train
    # Distractors: people who are not test identities (pid 0000).
    for k in range(max(2, num_test)):
      rng = np.random.default_rng([seed, code, 3, k])
      write("bounding_box_test", 0, int(rng.integers(num_cameras)),
            render.sample_person(rng, domain), rng)
    # Junk: boxes with no person or a badly cut one (pid -1).
    for k in range(max(2, num_test // 2)):
      rng = np.random.default_rng([seed, code, 4, k])
      cam = int(rng.integers(num_cameras))
      person = render.sample_person(rng, domain) if k % 2 else None
      frames[cam] += 1
      arr = np.asarray(render.render(person, cameras[cam], rng, (h, w)))
      if person is not None:  # keep only the legs: a bad detection
        arr = np.concatenate([arr[h // 2:], arr[h // 2:]], axis=0)
      Image.fromarray(arr).save(
          os.path.join(tmp, "bounding_box_test",
                       market_name(records.JUNK_PID, cam, frames[cam])), quality=92)
    with open(os.path.join(tmp, META_FILE), "w") as f:
      json.dump(params, f)
    if _read_meta(meta_path) == params:
      # Another process wrote the same dataset meanwhile: keep theirs.
      shutil.rmtree(tmp)
      return out_dir
    # Checked again: the folder may have changed while this one was drawn.
    if existing_dataset(out_dir) is not None:
      _check_replaceable(out_dir)
      shutil.rmtree(out_dir)
    elif os.path.isdir(out_dir):
      os.rmdir(out_dir)  # empty; only POSIX renames over an empty folder
    os.rename(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  logging.info("Wrote synthetic dataset %s (%s)", out_dir, params)
  return out_dir

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
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


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
    image_size: (height, width).
    overwrite: replace an existing dataset with other parameters.

  Returns:
    out_dir.
  """
  code = _domain_code(domain)
  if num_cameras is None:
    num_cameras = render.DOMAIN_STYLE[domain]["num_cameras"]
  if num_ids < 4 or num_cameras < 2 or images_per_camera < 2:
    raise ValueError(
        f"num_ids={num_ids}, num_cameras={num_cameras}, images_per_camera="
        f"{images_per_camera}: need num_ids >= 4, num_cameras >= 2 and "
        "images_per_camera >= 2 (a query needs a match in another camera).")
  params = _params(num_ids, seed, domain, num_cameras, images_per_camera,
                   image_size)
  meta_path = os.path.join(out_dir, META_FILE)
  old = _read_meta(meta_path)
  if old is not None:
    if old == params:
      logging.info("Reusing synthetic dataset %s", out_dir)
      return out_dir
    if not overwrite:
      raise FileExistsError(
          f"{out_dir} holds a synthetic dataset generated with {old}, not "
          f"{params}; choose another folder, delete it, or pass "
          "overwrite=True.")
  elif os.path.exists(out_dir) and os.listdir(out_dir) and not overwrite:
    raise FileExistsError(
        f"{out_dir} exists and is not a synthetic dataset (no {META_FILE}); "
        "choose an empty or new folder.")

  h, w = image_size
  parent = os.path.dirname(os.path.abspath(out_dir))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".synthetic-", dir=parent)
  try:
    for sub in ("bounding_box_train", "bounding_box_test", "query"):
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
    if os.path.exists(out_dir):
      shutil.rmtree(out_dir)
    os.rename(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  logging.info("Wrote synthetic dataset %s (%s)", out_dir, params)
  return out_dir

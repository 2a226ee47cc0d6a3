"""Tests of the synthetic pedestrian generator."""

import filecmp
import json
import os
import re
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from keras_reid.data import datasets
from keras_reid.data.synthetic import generator as synthetic
from keras_reid.data.synthetic import render

SIZE = (64, 32)
SUBS = ("bounding_box_train", "bounding_box_test", "query")
NAME = re.compile(r"^(-1|\d{4})_c(\d)s1_(\d{6})_01\.jpg$")


def _gen(path, **kw):
  args = dict(num_ids=8, seed=0, images_per_camera=2, image_size=SIZE)
  args.update(kw)
  return synthetic.generate(str(path), **args)


def test_layout_and_protocol(tmp_path):
  out = _gen(tmp_path / "a")
  for sub in SUBS:
    names = os.listdir(os.path.join(out, sub))
    assert names and all(NAME.match(n) for n in names), sub
  img = Image.open(os.path.join(out, "query", os.listdir(
      os.path.join(out, "query"))[0]))
  assert img.size == (32, 64) and img.mode == "RGB"
  ds = datasets.load_dataset("synthetic", out)
  train_ids = {r.pid for r in ds.train}
  assert train_ids == {1, 2, 3, 4}
  gallery_ids = {r.pid for r in ds.gallery}
  assert {0, -1} <= gallery_ids                    # distractors and junk
  assert not train_ids & gallery_ids
  for q in ds.query:                               # a match in another camera
    assert any(g.pid == q.pid and g.camid != q.camid for g in ds.gallery)
  with open(os.path.join(out, synthetic.META_FILE)) as f:
    assert json.load(f)["num_ids"] == 8


def test_deterministic_per_seed(tmp_path):
  a, b = _gen(tmp_path / "a"), _gen(tmp_path / "b")
  c = _gen(tmp_path / "c", seed=1)
  for sub in SUBS:
    names = sorted(os.listdir(os.path.join(a, sub)))
    assert names == sorted(os.listdir(os.path.join(b, sub)))
    match, mismatch, _ = filecmp.cmpfiles(os.path.join(a, sub),
                                          os.path.join(b, sub), names,
                                          shallow=False)
    assert len(match) == len(names) and not mismatch
  qa = sorted(os.listdir(os.path.join(a, "query")))[0]
  qc = sorted(os.listdir(os.path.join(c, "query")))[0]
  assert not np.array_equal(
      np.asarray(Image.open(os.path.join(a, "query", qa))),
      np.asarray(Image.open(os.path.join(c, "query", qc))))


def test_domain_b_and_reuse(tmp_path):
  out = _gen(tmp_path / "b", domain="b")
  ds = datasets.load_dataset("synthetic", out)
  assert {r.camid for r in ds.train + ds.query + ds.gallery} == {0, 1}
  mtime = os.path.getmtime(os.path.join(out, synthetic.META_FILE))
  assert _gen(tmp_path / "b", domain="b") == out   # reused, not rewritten
  assert os.path.getmtime(os.path.join(out, synthetic.META_FILE)) == mtime
  with pytest.raises(FileExistsError, match="overwrite"):
    _gen(tmp_path / "b", domain="a")
  with pytest.raises(ValueError, match="domain"):
    _gen(tmp_path / "x", domain="z")


def test_reader_generates_when_absent(tmp_path):
  ds = datasets.load_dataset("synthetic", str(tmp_path / "new"), num_ids=4,
                             seed=2, images_per_camera=2, image_size=SIZE)
  assert ds.summary()["num_train_ids"] == 2


def test_identities_not_separable_by_one_colour(tmp_path):
  # Many identities share their top colour: palettes are small on purpose.
  rng = np.random.default_rng(0)
  tops = [render.sample_person(rng, "a").top for _ in range(200)]
  nearest = [min(np.abs(np.subtract(t, u)).sum() for j, u in enumerate(tops)
                 if j != i) for i, t in enumerate(tops)]
  assert np.median(nearest) < 40


def test_command_line(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "keras_reid.data.synthetic",
       f"--out={tmp_path / 'cli'}", "--num_ids=4", "--seed=1", "--height=32",
       "--width=16", "--images_per_camera=2"],
      capture_output=True, text=True, check=True).stdout
  counts = json.loads(out.strip().splitlines()[-1])
  assert counts["bounding_box_train"] > 0 and counts["query"] > 0
  assert os.path.exists(tmp_path / "cli" / synthetic.META_FILE)


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

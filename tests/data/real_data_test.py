"""Readers and pipelines on the real files under REID_DATA_ROOT.

Skipped when REID_DATA_ROOT is unset or missing (a user's clone has no data).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_reid.data import image_files
from keras_reid.data import inspection
from keras_reid.data import pipeline
from keras_reid.data.records import Record

ROOT = os.environ.get("REID_DATA_ROOT", "")
pytestmark = pytest.mark.skipif(
    not ROOT or not os.path.isdir(ROOT),
    reason="REID_DATA_ROOT is unset or missing")


def _counts(name, sub, split=0, **options):
  out = inspection.inspect_dataset(name, os.path.join(ROOT, sub),
                                    split=split, **options)
  return json.loads(out.splitlines()[-1])


def test_viper_split0():
  c = _counts("viper", "viper")
  assert (c["num_train_ids"], c["num_train_images"], c["num_query_images"],
          c["num_gallery_images"]) == (316, 632, 316, 316)
  assert c["num_query_ids"] == c["num_gallery_ids"] == 316


def test_mini_market():
  # A deliberately tiny subset: the published counts do not hold.
  with pytest.raises(ValueError, match="train images: expected 12936, found 32"):
    _counts("market1501", "mini_market1501")
  c = _counts("market1501", "mini_market1501", allow_incomplete=True)
  assert (c["num_train_ids"], c["num_train_images"], c["num_query_images"],
          c["num_gallery_images"]) == (16, 32, 32, 32)


def test_reid_pool_manifest():
  c = _counts("manifest", "reid_pool")
  assert (c["num_train_ids"], c["num_train_images"]) == (1410, 3984)


def test_inspect_cli():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  out = subprocess.run(
      [sys.executable, "-m", "keras_reid.data.inspect", "--dataset=viper",
       f"--root={os.path.join(ROOT, 'viper')}", "--split=1"],
      capture_output=True, text=True, check=True, env=env).stdout
  assert json.loads(out.strip().splitlines()[-1])["num_train_images"] == 632


@pytest.mark.slow
def test_every_real_image_decodes_through_both_pipelines():
  exts = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
  paths = sorted(
      os.path.join(d, n) for d, _, names in os.walk(ROOT) for n in names
      if n.lower().endswith(exts))
  assert len(paths) > 5000
  recs = [Record(p, i // 2, 0) for i, p in enumerate(paths)]
  # Validation decodes every file with the pipelines' decoder; it raises
  # naming any file that fails.
  assert image_files.validate_images(paths) == []
  total = 0
  for batch in pipeline.make_eval_dataset(
      recs, image_size=(128, 64), normalization="tf", batch_size=512,
      validate=False):
    assert np.isfinite(batch.numpy()).all()
    assert batch.numpy().min() >= -1 and batch.numpy().max() <= 1
    total += batch.shape[0]
  assert total == len(paths)
  # The training pipeline (decode, resize, augment) over the same files.
  ds = pipeline.make_train_dataset(recs, ids_per_batch=64, images_per_id=2,
                                   image_size=(128, 64), normalization="tf",
                                   validate=False)
  for b in ds.take(4):
    assert np.isfinite(b["images"].numpy()).all()


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

"""Decompression bombs: small files declaring huge images are refused unread."""

import resource

import numpy as np
import pytest
import tensorflow as tf

from keras_reid.data import image_files
from keras_reid.data import pipeline
from keras_reid.data import preprocessing
from keras_reid.data import records
from tests.data import image_bombs


@pytest.fixture
def bomb():
  data = image_bombs.png_bomb()
  assert len(data) < 1_000_000  # small on disk ...
  return data                    # ... 20000 x 20000 declared


def _header(contents):
  return preprocessing.image_header_size(contents).numpy().tolist()


def test_header_sizes_match_real_files():
  image = np.zeros((37, 23, 3), np.uint8)
  for encoded in (tf.io.encode_png(image), tf.io.encode_jpeg(image)):
    assert _header(encoded) == [37, 23]
  assert _header(image_bombs.png_bomb(40)) == [40, 40]
  assert _header(image_bombs.jpeg_claiming(20000, 30000)) == [20000, 30000]
  assert _header(image_bombs.bmp_claiming(5000, 7000)) == [5000, 7000]
  assert _header(image_bombs.gif_claiming(300, 400)) == [300, 400]
  assert _header(b"nope") == [0, 0]
  # The decoder agrees with the header on a real (small) bomb-style PNG.
  assert preprocessing.decode_image(image_bombs.png_bomb(40)).shape == (
      40, 40, 3)


BOMBS = {
    "png": image_bombs.png_bomb,
    "jpeg": lambda: image_bombs.jpeg_claiming(20000, 20000),
    "bmp": lambda: image_bombs.bmp_claiming(20000, 20000),
    "gif": lambda: image_bombs.gif_claiming(65535, 65535),
}


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_decode_image_limited_rejects_before_decoding(kind):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"(?s)bomb\.png.*image header check.*exceeds the "
                     r"limit of 16777216 pixels; rejected before decoding"):
    preprocessing.decode_image_limited(tf.constant(BOMBS[kind]()), "bomb.png")
  # Decoding would have needed >= 1.2 GB; the header check allocates nothing.
  grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
  assert grown < 300 * 1024  # KiB


def test_pipeline_names_the_file_or_skips_it(tmp_path, bomb):
  good = tmp_path / "0001_c1s1_000001_01.png"
  good.write_bytes(tf.io.encode_png(np.zeros((16, 8, 3), np.uint8)).numpy())
  bad = tmp_path / "0002_c1s1_000001_01.png"
  bad.write_bytes(bomb)
  recs = [records.Record(str(good), 1, 0), records.Record(str(good), 1, 1),
          records.Record(str(bad), 2, 0)]
  with pytest.raises(image_files.CorruptImageError,
                     match=r"0002_c1s1_000001_01\.png' \(header declares "
                     r"20000x20000 pixels, over the limit"):
    pipeline.make_eval_dataset(recs, image_size=(16, 8), normalization="none",
                               batch_size=2)
  # skip_corrupt: skipped and counted, training goes on with the rest.
  ds = pipeline.make_train_dataset(
      recs, ids_per_batch=1, images_per_id=2, image_size=(16, 8),
      normalization="none", augment_copies=1, skip_corrupt=True)
  batch = next(iter(ds))
  assert set(batch["labels"].numpy().tolist()) == {0}
  # Without validation, the per-image loader refuses it too, naming it.
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"(?s)0002_c1s1_000001_01\.png.*image header"):
    preprocessing.load_image(tf.constant(str(bad)), (16, 8))


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

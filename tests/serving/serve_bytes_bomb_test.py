"""serve_bytes refuses decompression bombs from their header, unread."""

import json
import os
import resource

import numpy as np
import pytest
import tensorflow as tf

from keras_reid.serving import saved_model
from tests.data import image_bombs


@pytest.fixture(scope="module")
def serve_bytes(exported):
  loaded = tf.saved_model.load(exported.path)
  return loaded, loaded.signatures["serve_bytes"]


def test_limit_is_recorded_in_the_export(exported):
  with open(os.path.join(exported.path, saved_model.EXPORT_INFO_FILE)) as f:
    info = json.load(f)
  assert info["max_image_pixels"] == saved_model.MAX_IMAGE_PIXELS == 4096 ** 2


@pytest.mark.parametrize("make", [
    image_bombs.png_bomb,
    lambda: image_bombs.jpeg_claiming(20000, 20000),
    lambda: image_bombs.jpeg_claiming(5000, 100)],  # a side over 4096
    ids=["png_20000x20000", "jpeg_20000x20000", "jpeg_side"])
def test_bomb_rejected_by_the_header_check(serve_bytes, exported, make):
  _, signature = serve_bytes
  good = tf.io.encode_png(exported.images(0, 1, 8, 8)[0]).numpy()
  before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"(?s)serve_bytes:.*image header check.*exceeds "
                     r"the limit of 16777216 pixels and 4096 per side; "
                     r"rejected before decoding"):
    signature(images=tf.constant([good, make()]))
  grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
  assert grown < 300 * 1024  # KiB; decoding the PNG would take 1.2 GB


def test_normal_images_still_served(serve_bytes, exported):
  _, signature = serve_bytes
  images = exported.images(1, 2, 40, 20)
  encoded = [tf.io.encode_png(i).numpy() for i in images]
  out = signature(images=tf.constant(encoded))["embeddings"].numpy()
  assert out.shape == (2, 256)
  np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-4)


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

"""serve_bytes refuses decompression bombs from their header, unread; a
request's pixels are bounded, and a large request is resized before it is
widened to float32."""

import json
import os
import resource
import subprocess
import sys

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
  assert info["max_request_pixels"] == saved_model.MAX_REQUEST_PIXELS == 2 ** 25


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


def test_request_over_the_pixel_limit_is_refused_before_decoding(
    serve_bytes):
  # Three files, each within the per-image limit (12 Mi pixels), 36 Mi in
  # all: 40 such PNGs once cost 13.5 s of CPU to decode.
  _, signature = serve_bytes
  before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"(?s)serve_bytes: request too large; its images "
                     r"declare.*36000000.*pixels in all, at most 33554432 per "
                     r"request"):
    signature(images=tf.constant([image_bombs.jpeg_claiming(4000, 3000)] * 3))
  grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
  assert grown < 100 * 1024  # KiB; decoding them would take 108 MB


def test_serving_default_refuses_a_request_over_the_pixel_limit(serve_bytes):
  loaded, _ = serve_bytes
  images = np.zeros((3, 4096, 2800, 3), np.uint8)  # 34.4 Mi pixels
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"images: request too large; at most 33554432 "
                     r"pixels \(batch x height x width\) per request"):
    loaded.signatures["serving_default"](images=tf.constant(images))
  out = loaded.signatures["serving_default"](
      images=tf.constant(images[:2]))["embeddings"]  # 22.9 Mi pixels: served
  assert out.shape[0] == 2


_PEAK_SCRIPT = """
import resource, sys
import numpy as np
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
small = np.zeros((1, 64, 32, 3), np.uint8)
serve(images=tf.constant(small))  # traced and warm
images = tf.constant(np.full((2, 4096, 4096, 3), 77, np.uint8))  # 96 MiB
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
serve(images=images)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_large_request_is_resized_before_it_is_widened(exported):
  # Regression: serving_default cast the whole batch to float32 before
  # resizing it (4 bytes a pixel channel): this 96 MiB request grew the
  # peak by 294 MB then, by 0 MB now (2026-12-07, tiny model). Measured in
  # a fresh process, whose peak is its own.
  proc = subprocess.run(
      [sys.executable, "-c", _PEAK_SCRIPT, exported.path],
      capture_output=True, text=True, timeout=600,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  grown_mb = int(proc.stdout.split()[-1]) / 1024
  assert grown_mb < 100, f"peak grew by {grown_mb:.0f} MB"


def test_normal_images_still_served(serve_bytes, exported):
  _, signature = serve_bytes
  images = exported.images(1, 2, 40, 20)
  encoded = [tf.io.encode_png(i).numpy() for i in images]
  out = signature(images=tf.constant(encoded))["embeddings"].numpy()
  assert out.shape == (2, 256)
  np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-4)


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

"""keras_reid.serving.client.protos against TensorFlow's own conversions.

Oracle: tf.make_tensor_proto / tf.make_ndarray (this process imports
TensorFlow, so here the protos are the plainly imported ones; the
placeholder import is checked in a fresh process).
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_reid.serving.client import protos

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

ARRAYS = {
    "uint8 images": np.random.default_rng(0).integers(
        0, 256, (2, 5, 3, 3)).astype(np.uint8),
    "float32": np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32),
    "float16": np.arange(6, dtype=np.float16).reshape(2, 3) / 3,
    "float64": np.linspace(-1, 1, 5),
    "int32": np.arange(-3, 3, dtype=np.int32),
    "int64": np.array([2**40, -1], np.int64),
    "bool": np.array([[True, False]]),
    "encoded files": np.array([b"\x89PNG\x00rest", b"", b"BM\xff"], object),
    "empty strings": np.array([], object),
    "scalar": np.float32(2.5),
}


@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_protos_equal_tensorflows(name):
  value = ARRAYS[name]
  dtype = tf.string if np.asarray(value).dtype == object else None
  want = tf.make_tensor_proto(value, dtype=dtype)
  expected = tf.make_ndarray(want)
  # What the server reads of the request: TensorFlow's decoding of it.
  sent = tf.make_ndarray(protos.to_tensor_proto(value))
  assert sent.shape == expected.shape and sent.dtype == expected.dtype
  np.testing.assert_array_equal(sent, expected)
  if name in ("uint8 images", "float32", "encoded files"):
    # What keras-reid's signatures take: the very same message.
    assert protos.to_tensor_proto(value) == want
  # What the client reads of a response.
  got = protos.to_ndarray(want)
  assert got.shape == expected.shape and got.dtype == expected.dtype
  np.testing.assert_array_equal(got, expected)


def test_typed_fields_repeat_their_last_value_as_tensorflow_does():
  proto = tf.make_tensor_proto(1.5, dtype=tf.float32, shape=[2, 3])
  assert not proto.tensor_content and len(proto.float_val) == 1
  np.testing.assert_array_equal(protos.to_ndarray(proto),
                                tf.make_ndarray(proto))
  half = tf.make_tensor_proto(np.float16(0.5), shape=[2])
  np.testing.assert_array_equal(protos.to_ndarray(half), tf.make_ndarray(half))


def test_dtype_names_and_unsupported_dtypes():
  for dtype in (tf.float32, tf.uint8, tf.string, tf.int64, tf.bfloat16):
    assert protos.dtype_name(dtype.as_datatype_enum) == dtype.name
  with pytest.raises(TypeError, match="complex64"):
    protos.to_tensor_proto(np.zeros(2, np.complex64))
  with pytest.raises(TypeError, match="bfloat16"):
    protos.to_ndarray(tf.make_tensor_proto(tf.constant([1.0], tf.bfloat16)))


def test_placeholder_import_then_tensorflow_works():
  script = """
import sys
import numpy as np
from keras_reid.serving.client import protos
assert "tensorflow.python" not in sys.modules and "tensorflow" not in sys.modules
value = np.arange(6, dtype=np.uint8).reshape(2, 3)
import tensorflow as tf  # the real package, after the protos
assert tf.constant(1.0).numpy() == 1.0
assert protos.to_tensor_proto(value) == tf.make_tensor_proto(value)
np.testing.assert_array_equal(tf.make_ndarray(protos.to_tensor_proto(value)),
                              value)
print("ok")
"""
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get(
      "PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip() == "ok"


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

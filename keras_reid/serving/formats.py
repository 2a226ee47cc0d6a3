"""Exports the embedder as TFLite (LiteRT) and ONNX files beside the SavedModel.

Every file takes the same input and gives the same output, the contract of
the SavedModel's serving_default for images already of the model's size:

    input  "images": uint8 [B, H, W, 3] RGB, H x W = the model's input size
           (export_info.json "image_size"); B is dynamic.
    output "embeddings": float32 [B, D], L2-normalised.

Casting to float, the backbone's normalisation and the L2 normalisation are
in the file; resizing is not (the SavedModel's antialiased resize has no
TFLite builtin): resize on the client with the same bilinear antialiased
resize (keras_reid.data.preprocessing.resize) to get the SavedModel's
numbers for images of other sizes.

Files (in the SavedModel's version folder, FORMAT_FILES):
  embedder_float32.tflite       float32 weights and arithmetic.
  embedder_dynamic_int8.tflite  int8 weights, float activations (dynamic range
                                quantization; no calibration data).
  embedder_int8.tflite          full integer quantization: int8 weights and
                                activations, calibrated on representative
                                images; input stays uint8, output float32.
  embedder.onnx                 float32, converted by tf2onnx (run it with
                                onnxruntime).

The TFLite files are converted by tf.lite.TFLiteConverter from a Keras
ExportArchive SavedModel of the fixed-size function (the converter does not
freeze a Keras 3 model's variables when given a concrete function).
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable, Iterable, Optional

import keras
import numpy as np
import tensorflow as tf

from keras_reid.data import preprocessing

# What --formats accepts. "saved_model" is always written (the version
# folder is a SavedModel and the reference of the others).
FORMATS = ("saved_model", "tflite", "onnx")
DEFAULT_FORMATS = ("saved_model",)
TFLITE_VARIANTS = ("float32", "dynamic_int8", "int8")
# The file of each exported variant, relative to the version folder.
FORMAT_FILES = {
    "tflite_float32": "embedder_float32.tflite",
    "tflite_dynamic_int8": "embedder_dynamic_int8.tflite",
    "tflite_int8": "embedder_int8.tflite",
    "onnx": "embedder.onnx",
}
# The formats each --formats name writes.
FORMAT_VARIANTS = {
    "saved_model": (),
    "tflite": tuple(f"tflite_{v}" for v in TFLITE_VARIANTS),
    "onnx": ("onnx",),
}
ONNX_OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"


def parse_formats(text: str) -> tuple[str, ...]:
  """"saved_model,tflite" -> ("saved_model", "tflite") (always with saved_model).

  Raises:
    ValueError: an unknown or empty name, naming the valid ones.
  """
  names = [n.strip() for n in text.split(",")]
  bad = [n for n in names if n not in FORMATS]
  if bad:
    raise ValueError(
        f"--formats={text!r}: unknown format(s) {bad}; expected a "
        f"comma-separated list of {list(FORMATS)}, e.g. "
        "--formats=saved_model,tflite,onnx.")
  return tuple(n for n in FORMATS if n in names or n == "saved_model")


def embed_function(embedder: keras.Model, normalization: str
                   ) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
  """uint8 [B, H, W, 3] at the model's size -> {"embeddings": [B, D]}.

  The same arithmetic as serving_default after its resize (which it skips
  for images of the model's size).
  """
  preprocessing.check_normalization(normalization)

  def embed(images):
    x = preprocessing.normalize(tf.cast(images, tf.float32), normalization)
    embeddings = tf.cast(embedder(x, training=False), tf.float32)
    return {OUTPUT_NAME: tf.math.l2_normalize(embeddings, axis=-1)}

  return embed


def input_spec(image_size: tuple[int, int]) -> tf.TensorSpec:
  return tf.TensorSpec([None, int(image_size[0]), int(image_size[1]), 3],
                       tf.uint8, name=INPUT_NAME)


def input_contract(image_size: tuple[int, int], embedding_dim: int) -> dict:
  """The contract of every file, as written into export_info.json."""
  return {
      "input": {"name": INPUT_NAME, "dtype": "uint8",
                "shape": [None, int(image_size[0]), int(image_size[1]), 3],
                "meaning": "RGB pixels 0..255 at the model's input size "
                           "(resize on the client, bilinear antialiased)"},
      "output": {"name": OUTPUT_NAME, "dtype": "float32",
                 "shape": [None, int(embedding_dim)],
                 "meaning": "L2-normalised embeddings"},
  }


def convert_tflite(embedder: keras.Model, *, image_size: tuple[int, int],
                   normalization: str, variant: str,
                   representative_images: Optional[np.ndarray] = None
                   ) -> bytes:
  """The TFLite flatbuffer of the fixed-size embedder (module docstring).

  Args:
    embedder: keras.Model, float32 normalised images [B, H, W, 3] -> [B, D].
    image_size: (H, W), the embedder's input size.
    normalization: a key of keras_reid.data.preprocessing.NORMALIZATIONS.
    variant: one of TFLITE_VARIANTS.
    representative_images: uint8 [N, H, W, 3], N >= 1; required for "int8"
      (calibration of the activations' ranges), unused otherwise.

  Returns:
    The .tflite file's bytes.

  Raises:
    ValueError: unknown variant, or missing / misshapen representative
      images for "int8".
  """
  if variant not in TFLITE_VARIANTS:
    raise ValueError(f"TFLite variant {variant!r}: expected one of "
                     f"{list(TFLITE_VARIANTS)}.")
  if variant == "int8":
    representative_images = check_representative(representative_images,
                                                  image_size)
  archive = keras.export.ExportArchive()
  archive.track(embedder)
  archive.add_endpoint("serving_default",
                       embed_function(embedder, normalization),
                       input_signature=[input_spec(image_size)])
  with tempfile.TemporaryDirectory(prefix="keras_reid-tflite-") as tmp:
    archive.write_out(tmp, verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
    if variant != "float32":
      converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "int8":
      def representative_dataset() -> Iterable[dict[str, np.ndarray]]:
        for image in representative_images:
          yield {INPUT_NAME: image[None]}
      converter.representative_dataset = representative_dataset
      # Integer kernels only: the conversion fails rather than leaving an op
      # in float.
      converter.target_spec.supported_ops = [
          tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def convert_onnx(embedder: keras.Model, *, image_size: tuple[int, int],
                 normalization: str, opset: int = ONNX_OPSET) -> bytes:
  """The ONNX model of the fixed-size embedder, converted by tf2onnx.

  Raises:
    ImportError: tf2onnx is not installed (a one-line fix in the message).
  """
  try:
    import tf2onnx  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(
        "ONNX export needs tf2onnx: pip install -r requirements.txt (it pins "
        f"tf2onnx and onnx); import failed: {e}") from e
  spec = input_spec(image_size)
  function = tf.function(embed_function(embedder, normalization),
                         input_signature=[spec])
  model_proto, _ = tf2onnx.convert.from_function(
      function, input_signature=[spec], opset=opset)
  return model_proto.SerializeToString()


def check_representative(images: Optional[np.ndarray],
                         image_size: tuple[int, int]) -> np.ndarray:
  """Returns `images` as uint8 [N, H, W, 3] or raises ValueError saying why."""
  expected = (int(image_size[0]), int(image_size[1]), 3)
  if images is None or len(images) == 0:
    raise ValueError(
        "Full int8 TFLite needs representative images to calibrate on; got "
        "none (give --representative_images, or a run with training images).")
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != expected:
    raise ValueError(
        f"Representative images: expected uint8 [N, {expected[0]}, "
        f"{expected[1]}, 3] at the model's input size; got {images.dtype} "
        f"{list(images.shape)}.")
  return images


def _write_atomically(path: str, contents: bytes) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, "wb") as f:
      f.write(contents)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_formats(folder: str, embedder: keras.Model, *,
                  image_size: tuple[int, int], normalization: str,
                  formats: Iterable[str],
                  representative_images: Optional[np.ndarray] = None,
                  representative_source: str = "",
                  step_done: Optional[Callable[[str], None]] = None) -> dict:
  """Writes the files of `formats` (names of FORMATS) into `folder`.

  Each file is written to a temporary name and renamed, so a reader never
  sees half a file.

  Args:
    folder: the (not yet published) SavedModel version folder.
    embedder, image_size, normalization: as for convert_tflite.
    formats: names of FORMATS; "saved_model" writes nothing here.
    representative_images: uint8 [N, H, W, 3], for the full int8 TFLite.
    representative_source: where they come from, recorded in the info.
    step_done: called with what was done after each file.

  Returns:
    The "formats" entry of export_info.json: for each variant written, its
    "file" (relative to `folder`) and "bytes", with "contract" (the input
    and output of every file) and, with a full int8 file, "representative"
    (source and count of the calibration images).
  """
  step_done = step_done or (lambda what: None)
  kwargs = dict(image_size=image_size, normalization=normalization)
  written = {}
  for name in formats:
    if name not in FORMATS:
      raise ValueError(f"Unknown export format {name!r}; expected one of "
                       f"{list(FORMATS)}.")
    for variant in FORMAT_VARIANTS[name]:
      if variant == "onnx":
        contents = convert_onnx(embedder, **kwargs)
      else:
        contents = convert_tflite(
            embedder, variant=variant.removeprefix("tflite_"),
            representative_images=representative_images, **kwargs)
      path = os.path.join(folder, FORMAT_FILES[variant])
      _write_atomically(path, contents)
      written[variant] = {"file": FORMAT_FILES[variant],
                          "bytes": len(contents)}
      step_done(f"wrote {FORMAT_FILES[variant]}")
  info = {"files": written,
          "contract": input_contract(image_size,
                                     int(embedder.output.shape[-1]))}
  if "tflite_int8" in written:
    info["representative"] = {"source": representative_source,
                              "count": int(len(representative_images))}
  return info


def num_files(formats: Iterable[str]) -> int:
  """How many files write_formats writes for `formats` (progress totals)."""
  return sum(len(FORMAT_VARIANTS[n]) for n in formats)

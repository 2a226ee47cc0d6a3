"""Exports the SIR embedder and the CIR pair scorer as a TF-Serving SavedModel.

The SavedModel is self-contained: resizing, normalisation, L2 normalisation
and input validation are traced into its graph, so TF-Serving (or any process
that never imports keras_reid) can run it. Layout, as TF-Serving expects:

    <export_base>/<version>/saved_model.pb, variables/, assets.extra/

Signatures:
  serving_default: "images" uint8 [B, H, W, 3], any H and W
      -> "embeddings" float32 [B, D], L2-normalised.
  serve_bytes: "images" string [B], encoded JPEG / PNG / BMP / GIF files
      -> "embeddings" float32 [B, D], L2-normalised.
  verify: "images_a", "images_b" uint8 [B, H, W, 3] (equal B; the two batches
      may have different H, W) -> "same_probability" float32 [B].
      Only for a model with a verification head: one trained with
      config.loss.ver_weight=0 has none, and its export has the first two
      signatures only, export_info.json saying why under "verify_unavailable"
      (VERIFY_UNAVAILABLE).

Invalid inputs fail with tf.errors.InvalidArgumentError raised by graph
assertions (TF-Serving answers INVALID_ARGUMENT with the message): wrong rank
or channel count, empty batch, images larger than MAX_IMAGE_SIDE pixels per
side, encoded files larger than MAX_ENCODED_BYTES or not an image, encoded
files whose header declares more than MAX_IMAGE_PIXELS pixels or a side over
MAX_IMAGE_SIDE (checked before decoding, so decompression bombs allocate
nothing), and
`verify` batches of different sizes. A wrong dtype is rejected by the
signature itself.

export_run can also write the embedder's TFLite and ONNX files into the
version folder (keras_reid/serving/formats.py: serving_default's contract
for images of the model's size), listed in export_info.json's "formats".
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import sys
import tempfile
from typing import Callable, Optional

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from keras_reid import progress
from keras_reid import runs
from keras_reid.data import preprocessing

# Largest accepted image side (height or width), in pixels. Re-ID boxes are a
# few hundred pixels; the limit bounds the memory one request can take.
MAX_IMAGE_SIDE = 4096
# Largest accepted encoded file, in bytes (checked before decoding).
MAX_ENCODED_BYTES = 16 * 1024 * 1024
# Largest accepted width x height of an encoded image, read from its header
# before decoding (a 1 MB PNG can declare 20000 x 20000 pixels).
MAX_IMAGE_PIXELS = min(MAX_IMAGE_SIDE ** 2, preprocessing.MAX_IMAGE_PIXELS)

# Largest accepted number of pixels in one request (the sum of height x
# width over its images; for serve_bytes as their headers declare, checked
# before any is decoded): 2^25 = 32 Mi pixels, 96 MiB of uint8, e.g. 256
# boxes of 512 x 256. With MAX_IMAGE_SIDE alone a request of 40 images of
# 4096^2 pixels was accepted.
MAX_REQUEST_PIXELS = 2 ** 25

SIGNATURES = ("serving_default", "serve_bytes", "verify")
# The signatures of a model without a verification head.
EMBEDDING_SIGNATURES = ("serving_default", "serve_bytes")
# What export_saved_model reports to its step_done: each signature traced,
# then the SavedModel written (one fewer without "verify").
EXPORT_STEPS = len(SIGNATURES) + 1
# export_info.json's "verify_unavailable" for a model without a
# verification head.
VERIFY_UNAVAILABLE = (
    "no 'verify' signature: the model has no verification head (its run was "
    "trained with config.loss.ver_weight=0, which builds none). Compare "
    "embeddings instead (the cosine similarity of the unit embeddings, as "
    "keras_reid.Embedder.verify does), or export a run trained with "
    "loss.ver_weight > 0.")
EXPORT_INFO_FILE = os.path.join("assets.extra", "export_info.json")

# File signatures ("magic numbers") of the formats serve_bytes accepts.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"BM", b"GIF8")


def _check_images(images: tf.Tensor, name: str) -> tf.Tensor:
  """Validates a uint8 image batch of unknown rank; returns it as [B, H, W, 3].

  Raises (at run time) InvalidArgumentError naming `name` and the expectation.
  """
  # Grappler may run these checks in any order (control dependencies do not
  # survive its rewrites), so each holds trivially unless the rank is 4, and
  # the shape is padded so that reading it cannot fail first.
  rank_ok = tf.equal(tf.size(tf.shape(images)), 4)
  shape = tf.concat([tf.shape(images), tf.zeros([4], tf.int32)], 0)[:4]

  def check(condition, message):
    return tf.debugging.Assert(
        tf.logical_or(tf.logical_not(rank_ok), condition),
        [f"{name}: {message}; got shape", tf.shape(images)])

  checks = [
      tf.debugging.Assert(rank_ok, [
          f"{name}: expected a uint8 image batch [B, H, W, 3] (rank 4); got "
          "shape", tf.shape(images)]),
      check(tf.equal(shape[3], 3), "expected 3 (RGB) channels in the last axis"),
      check(shape[0] > 0, "empty batch; send at least one image"),
      check(tf.reduce_all(shape[1:3] > 0), "height and width must be > 0"),
      check(tf.reduce_all(shape[1:3] <= MAX_IMAGE_SIDE),
            f"image too large; height and width must be <= {MAX_IMAGE_SIDE} "
            "pixels (resize on the client)"),
      check(tf.cast(shape[0], tf.int64) * tf.cast(shape[1], tf.int64)
            * tf.cast(shape[2], tf.int64) <= MAX_REQUEST_PIXELS,
            f"request too large; at most {MAX_REQUEST_PIXELS} pixels (batch x "
            "height x width) per request (send fewer or smaller images)"),
  ]
  with tf.control_dependencies(checks):
    images = tf.identity(images)
  return tf.ensure_shape(images, [None, None, None, 3])


def _resize(images: tf.Tensor, image_size: tuple[int, int]) -> tf.Tensor:
  """uint8 [..., h, w, 3] -> float32 [..., H, W, 3] in [0, 255].

  keras_reid.data.preprocessing.resize, the resize of training and
  evaluation, so served embeddings match the evaluation pipeline's. The
  uint8 pixels are resized before they are widened: only the model-sized
  result is float32, never a float32 copy of a large request.
  """
  shape = tf.shape(images)
  # Images already of the model's size skip the resize: it would return them
  # unchanged, and its kernel costs more than the rest of a small model.
  same_size = tf.logical_and(tf.equal(shape[-3], image_size[0]),
                             tf.equal(shape[-2], image_size[1]))
  images = tf.cond(
      same_size, lambda: tf.cast(images, tf.float32),
      lambda: preprocessing.resize(images, image_size))
  # Both branches give the model's size; state it for the static shape (an
  # EnsureShape inside the branch would be hoisted out of it by Grappler).
  images.set_shape(images.shape[:-3].concatenate(list(image_size) + [3]))
  return images


def _decode_one(contents: tf.Tensor, image_size: tuple[int, int]) -> tf.Tensor:
  """Encoded file (scalar string) -> float32 [H, W, 3] in [0, 255], checked."""
  size = tf.strings.length(contents)
  known = tf.reduce_any(tf.stack(
      [tf.strings.substr(contents, 0, len(m)) == m for m in _MAGIC]))
  checks = [
      tf.debugging.Assert(
          size <= MAX_ENCODED_BYTES,
          [f"serve_bytes: encoded image too large; at most {MAX_ENCODED_BYTES}"
           " bytes per image; got", size]),
      tf.debugging.Assert(
          known,
          ["serve_bytes: could not decode an image: expected JPEG, PNG, BMP "
           "or GIF file contents (send the raw file bytes, base64-encoded "
           "only in REST's {\"b64\": ...}); got", size, "bytes starting with",
           tf.strings.substr(contents, 0, 8)]),
  ]
  with tf.control_dependencies(checks):
    # Decodes only if the header's size is within the limits: a small file
    # declaring a huge image never allocates its pixels.
    image = preprocessing.decode_image_limited(
        contents, "serve_bytes:", max_pixels=MAX_IMAGE_PIXELS,
        max_side=MAX_IMAGE_SIDE)
  shape = tf.shape(image)
  with tf.control_dependencies([tf.debugging.Assert(
      tf.reduce_all(shape[:2] <= MAX_IMAGE_SIDE),
      [f"serve_bytes: image too large; height and width must be <= "
       f"{MAX_IMAGE_SIDE} pixels; got shape", shape])]):
    image = tf.identity(image)
  return _resize(image, image_size)


class ReidEmbeddingModule(tf.Module):
  """Holds the embedder and the two embedding functions (EMBEDDING_SIGNATURES).

  Attributes:
    embedder: keras.Model, float32 normalised images [B, H, W, 3] -> [B, D].
    image_size: (H, W), the models' input size.
    normalization: a key of keras_reid.data.preprocessing.NORMALIZATIONS.
  """

  def __init__(self, embedder: keras.Model, image_size: tuple[int, int],
               normalization: str):
    super().__init__(name="reid_serving")
    preprocessing.check_normalization(normalization)
    self.embedder = embedder
    self.image_size = tuple(int(s) for s in image_size)
    self.normalization = normalization

  def _embed(self, images_0_255: tf.Tensor) -> dict[str, tf.Tensor]:
    x = preprocessing.normalize(images_0_255, self.normalization)
    embeddings = self.embedder(x, training=False)
    embeddings = tf.cast(embeddings, tf.float32)
    return {"embeddings": tf.math.l2_normalize(embeddings, axis=-1)}

  @tf.function(input_signature=[
      tf.TensorSpec(shape=None, dtype=tf.uint8, name="images")])
  def serving_default(self, images):
    images = _check_images(images, "images")
    return self._embed(_resize(images, self.image_size))

  @tf.function(input_signature=[
      tf.TensorSpec(shape=[None], dtype=tf.string, name="images")])
  def serve_bytes(self, images):
    with tf.control_dependencies([tf.debugging.Assert(
        tf.size(images) > 0,
        ["serve_bytes: empty batch; send at least one encoded image"])]):
      images = tf.identity(images)
    # The headers' sizes first: a request whose images would decode to more
    # than MAX_REQUEST_PIXELS is refused before any is decoded.
    # Each side is clipped just above its own limit (which _decode_one
    # enforces) so that hostile 32-bit header sizes cannot overflow the sum.
    sizes = tf.minimum(
        tf.map_fn(preprocessing.image_header_size, images,
                  fn_output_signature=tf.TensorSpec([2], tf.int64)),
        MAX_IMAGE_SIDE + 1)
    pixels = tf.reduce_sum(sizes[:, 0] * sizes[:, 1])
    with tf.control_dependencies([tf.debugging.Assert(
        pixels <= MAX_REQUEST_PIXELS,
        ["serve_bytes: request too large; its images declare", pixels,
         f"pixels in all, at most {MAX_REQUEST_PIXELS} per request (send "
         "fewer or smaller images)"])]):
      images = tf.identity(images)
    h, w = self.image_size
    decoded = tf.map_fn(
        lambda c: _decode_one(c, self.image_size), images,
        fn_output_signature=tf.TensorSpec([h, w, 3], tf.float32))
    return self._embed(decoded)



class ReidServingModule(ReidEmbeddingModule):
  """Holds the Keras models and the three serving functions (SIGNATURES).

  Attributes (and ReidEmbeddingModule's):
    pair_scorer: keras.Model, {"images_a", "images_b"} -> probability [B].
  """

  def __init__(self, embedder: keras.Model, pair_scorer: keras.Model,
               image_size: tuple[int, int], normalization: str):
    super().__init__(embedder, image_size, normalization)
    self.pair_scorer = pair_scorer

  @tf.function(input_signature=[
      tf.TensorSpec(shape=None, dtype=tf.uint8, name="images_a"),
      tf.TensorSpec(shape=None, dtype=tf.uint8, name="images_b")])
  def verify(self, images_a, images_b):
    images_a = _check_images(images_a, "images_a")
    images_b = _check_images(images_b, "images_b")
    with tf.control_dependencies([tf.debugging.Assert(
        tf.equal(tf.shape(images_a)[0], tf.shape(images_b)[0]),
        ["verify: images_a and images_b must have the same batch size "
         "(one pair per row); got", tf.shape(images_a)[0],
         tf.shape(images_b)[0]])]):
      images_a = tf.identity(images_a)
    a = preprocessing.normalize(_resize(images_a, self.image_size),
                                self.normalization)
    b = preprocessing.normalize(_resize(images_b, self.image_size),
                                self.normalization)
    prob = self.pair_scorer({"images_a": a, "images_b": b}, training=False)
    prob = tf.reshape(tf.cast(prob, tf.float32), [-1])
    return {"same_probability": prob}


# TF-Serving reads version folders as int64: larger numbers are not versions.
MAX_VERSION = 2 ** 63 - 1


def next_version(export_base: str) -> int:
  """1 + the largest version folder under `export_base` (1 if none).

  Folders whose number TF-Serving cannot read (beyond int64) are not
  versions: they are skipped, with a warning naming them.

  Raises:
    ValueError: the largest version is already MAX_VERSION.
  """
  if not os.path.isdir(export_base):
    return 1
  versions = []
  for name in os.listdir(export_base):
    if not (re.fullmatch(r"\d+", name)
            and os.path.isdir(os.path.join(export_base, name))):
      continue
    if int(name) > MAX_VERSION:
      logging.warning(
          "Export folder %s is not a TF-Serving version (beyond int64); "
          "ignored. Rename or remove it.", os.path.join(export_base, name))
      continue
    versions.append(int(name))
  latest = max(versions, default=0)
  if latest >= MAX_VERSION:
    raise ValueError(
        f"{os.path.join(export_base, str(latest))}: the largest version "
        "TF-Serving can read; there is no next one. Export to another "
        "--export_dir or renumber the versions.")
  return latest + 1


def _readable_by_others(folder: str) -> None:
  """Gives `folder` the mode a plain mkdir would (mkdtemp makes it 0700, and
  TF-Serving often runs as another user)."""
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(folder, 0o777 & ~umask)


def export_saved_model(embedder: keras.Model,
                       pair_scorer: Optional[keras.Model], *,
                       export_base: str, image_size: tuple[int, int],
                       normalization: str,
                       version: Optional[int] = None,
                       extra_info: Optional[dict] = None,
                       step_done: Optional[Callable[[str], None]] = None,
                       write_extra: Optional[Callable[[str], dict]] = None
                       ) -> str:
  """Writes a versioned SavedModel with the serving signatures.

  SIGNATURES, or without a pair scorer EMBEDDING_SIGNATURES (no "verify";
  export_info.json's "verify_unavailable" says why: VERIFY_UNAVAILABLE).

  The version is written to a hidden temporary folder and renamed into place,
  so a TF-Serving instance polling `export_base` never sees half a model.

  Args:
    embedder: keras.Model, float32 normalised images [B, H, W, 3] -> [B, D]
      (e.g. keras_reid.models.builders.build_embedder(training_model)).
    pair_scorer: keras.Model, {"images_a", "images_b"} float32 normalised
      [B, H, W, 3] -> same-person probability [B] (or [B, 1]); None for a
      model without a verification head (no "verify" signature).
    export_base: the model's base path (TF-Serving's `base_path`).
    image_size: (H, W), the models' input size.
    normalization: a key of keras_reid.data.preprocessing.NORMALIZATIONS.
    version: the version number; None = next_version(export_base).
    extra_info: more JSON-serialisable entries for export_info.json (e.g.
      "weights_from": which stage and step of a run the weights come from).
    step_done: called with what was done after each of its steps (tracing
      each signature, writing the SavedModel: EXPORT_STEPS, one fewer
      without a pair scorer), for progress.
    write_extra: called with the unpublished version folder after the
      SavedModel is written in it, to add more files (e.g.
      keras_reid.serving.formats.write_formats); returns more entries for
      export_info.json. The version appears with all of them, or not at all.

  Returns:
    The version folder, `<export_base>/<version>`.

  Raises:
    ValueError: unknown normalization, bad version, or the version exists.
  """
  preprocessing.check_normalization(normalization)
  if version is None:
    version = next_version(export_base)
  if not 1 <= int(version) <= MAX_VERSION:
    raise ValueError(f"version={version!r}: expected an integer in [1, "
                     f"{MAX_VERSION}] (TF-Serving loads int64 version "
                     "folders).")
  path = os.path.join(export_base, str(int(version)))
  if os.path.exists(path):
    raise ValueError(
        f"Export folder {path!r} exists already: pass another version, or "
        "version=None for the next free number.")
  os.makedirs(export_base, exist_ok=True)
  step_done = step_done or (lambda what: None)
  if pair_scorer is None:
    module = ReidEmbeddingModule(embedder, image_size, normalization)
    names = EMBEDDING_SIGNATURES
  else:
    module = ReidServingModule(embedder, pair_scorer, image_size,
                               normalization)
    names = SIGNATURES
  signatures = {}
  for name in names:
    signatures[name] = getattr(module, name).get_concrete_function()
    step_done(f"traced {name}")
  tmp = tempfile.mkdtemp(prefix=f".tmp-{int(version)}-", dir=export_base)
  try:
    tf.saved_model.save(module, tmp, signatures=signatures)
    info = {
        "image_size": list(module.image_size),
        "normalization": normalization,
        "embedding_dim": int(embedder.output.shape[-1]),
        "max_image_side": MAX_IMAGE_SIDE,
        "max_encoded_bytes": MAX_ENCODED_BYTES,
        "max_image_pixels": MAX_IMAGE_PIXELS,
        "max_request_pixels": MAX_REQUEST_PIXELS,
        "signatures": list(names),
        **(extra_info or {}),
    }
    if pair_scorer is None:
      info["verify_unavailable"] = VERIFY_UNAVAILABLE
    if write_extra is not None:
      info.update(write_extra(tmp))
    os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
    with open(os.path.join(tmp, EXPORT_INFO_FILE), "w") as f:
      json.dump(info, f, indent=2)
    _readable_by_others(tmp)
    os.rename(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  step_done(f"wrote {path}")
  return path


def export_run(workdir: str, export_base: str,
               formats: tuple[str, ...] = ("saved_model",),
               representative_images: str = "",
               representative_count: int = 100) -> str:
  """Restores a training run's model and exports it (without aux heads).

  A run without a verification head (trained with loss.ver_weight=0) is
  exported without the "verify" signature (see export_saved_model).

  Args:
    workdir: the run directory of `python -m keras_reid.train`.
    export_base: the model's base path, e.g. "export/reid".
    formats: names of keras_reid.serving.formats.FORMATS; the SavedModel is
      always written, the other formats' files beside it in the version
      folder.
    representative_images: a glob of image files to calibrate the full int8
      TFLite on; "" = the training images of the run's last stage.
    representative_count: how many of them (a seeded sample).

  Returns:
    The new version folder.
  """
  # Imported here: they pull in the model code, which the rest of this module
  # (and a serving-only user) does not need.
  from keras_reid import embedder as embedder_api
  from keras_reid.models import builders
  from keras_reid.models import restore

  from keras_reid.serving import formats as formats_lib

  # Restoring, then export_saved_model's steps and the other formats' files;
  # on stderr (stdout gets the folder), when the export takes more than a
  # few seconds.
  extra_steps = formats_lib.num_files(formats)
  bar = progress.make_progress(
      1 + EXPORT_STEPS + extra_steps, "export steps", rate_unit="step",
      label="Export", stream=sys.stderr, delay=progress.SLOW_SECONDS)
  done = 0

  def step_done(what: str) -> None:
    nonlocal done
    done += 1
    bar.update(done, [("done", what)])

  origin = runs.weights_origin(workdir)  # warns if the run is partial
  training_model, config = restore.restore_training_model(workdir)
  step_done("restored the model")
  info = {"weights_from": origin}
  # The evaluation's "same person" cosine threshold, for
  # keras_reid.Embedder.from_saved_model's verify.
  threshold = embedder_api.run_threshold(workdir)
  if threshold is not None:
    info["cosine_threshold"] = threshold
  image_size = (config.data.image_height, config.data.image_width)
  embedder = builders.build_embedder(training_model)
  normalization = builders.normalization_for(config.model)
  write_extra = None
  if extra_steps:
    images, source = None, ""
    if "tflite" in formats:
      images, source = representative_set(
          config, image_size, representative_images, representative_count)

    def write_extra(folder: str) -> dict:
      return {"formats": formats_lib.write_formats(
          folder, embedder, image_size=image_size,
          normalization=normalization, formats=formats,
          representative_images=images, representative_source=source,
          step_done=step_done)}

  pair_scorer = None
  if builders.has_verification_head(training_model):
    pair_scorer = builders.build_pair_scorer(training_model)
  else:
    logging.warning("Run %s has no verification head (config.loss.ver_weight"
                    "=0): the export has no 'verify' signature.", workdir)
    step_done("no verify signature: no verification head")
  return export_saved_model(
      embedder, pair_scorer,
      export_base=export_base, image_size=image_size,
      normalization=normalization,
      extra_info=info, step_done=step_done,
      write_extra=write_extra)


def representative_set(config, image_size: tuple[int, int], pattern: str,
                       count: int, seed: int = 0) -> tuple:
  """Calibration images of the full int8 TFLite, and where they come from.

  Args:
    config: the run's resolved experiment config.
    image_size: (H, W), the model's input size.
    pattern: a glob of image files; "" = the training images of the run's
      last stage (read as training reads them).
    count: how many images: a sample drawn with `seed` if there are more.

  Returns:
    (uint8 [N, H, W, 3] resized as in evaluation, a description of the
    source for export_info.json).

  Raises:
    ValueError: no image found, naming the pattern or the stage.
  """
  from keras_reid.data import from_config  # pylint: disable=import-outside-toplevel
  from keras_reid.data import image_files  # pylint: disable=import-outside-toplevel

  if count < 1:
    raise ValueError(f"--representative_count={count}: expected >= 1.")
  if pattern:
    paths = sorted(p for p in glob.glob(pattern, recursive=True)
                   if os.path.isfile(p))
    source = f"files matching {pattern!r}"
    if not paths:
      raise ValueError(
          f"--representative_images={pattern!r} matches no file; give a glob "
          "of image files, e.g. 'data/market/bounding_box_train/*.jpg'.")
  else:
    if not config.stages:
      raise ValueError("The run has no stages to take representative images "
                       "from; give --representative_images=GLOB.")
    name = list(config.stages)[-1]
    dataset = from_config.load_stage_dataset(config.stages[name], config)
    paths = sorted(r.path for r in dataset.train)
    source = f"training images of stage {name!r} ({dataset.name})"
    if not paths:
      raise ValueError(f"Stage {name!r} has no training images; give "
                       "--representative_images=GLOB.")
  if len(paths) > count:
    rng = np.random.default_rng(seed)
    paths = [paths[i] for i in sorted(rng.choice(len(paths), count,
                                                 replace=False))]
  # Unreadable files are left out (training skips or refuses them too).
  bad = set(image_files.validate_images(paths))
  paths = [p for i, p in enumerate(paths) if i not in bad]
  if not paths:
    raise ValueError(f"Representative images ({source}): no file could be "
                     "decoded as an image.")
  return image_files.decoded_images(paths, image_size), source

"""The in-process API: embed and compare images with a trained run or an export.

    from keras_reid import Embedder

    embedder = Embedder.from_run("runs/market")   # or .from_saved_model(...)
    vectors = embedder.embed(["a.jpg", "b.bmp"])  # float32 [2, D], unit norm
    result = embedder.verify("a.jpg", "b.bmp")    # cosine score (+ decision)

An Embedder gives the features evaluation ranks (`from_run`: the run's
latest weights through builders.embedding_function, the pipeline's decoding,
resize and normalisation) or the features the exported SavedModel serves
(`from_saved_model`: its serve_bytes signature for files, serving_default
for pixels), L2-normalised, so cosine similarity is their dot product.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from keras_reid import runs
from keras_reid.data import image_files
from keras_reid.data import preprocessing

AUTOTUNE = tf.data.AUTOTUNE
# tf.math.l2_normalize's epsilon on the squared norm (the SavedModel's).
_L2_EPSILON = 1e-12

# What `embed` accepts: image files, uint8 pixels, or a dataset of them.
Images = Union[str, os.PathLike, np.ndarray, Sequence, tf.data.Dataset]


def l2_normalize(features: np.ndarray) -> np.ndarray:
  """float [N, D] -> float32 [N, D] of unit L2 norm (tf.math.l2_normalize's
  rule: divided by sqrt(max(sum of squares, 1e-12)))."""
  features = np.asarray(features, np.float32)
  squares = np.sum(np.square(features, dtype=np.float64), axis=-1,
                   keepdims=True)
  return (features / np.sqrt(np.maximum(squares, _L2_EPSILON))).astype(
      np.float32)


@dataclasses.dataclass(frozen=True)
class Verification:
  """Same-person scores of image pairs (a[i], b[i]).

  Attributes:
    score: float32 [N], cosine similarity of the two L2-normalised
      embeddings in [-1, 1] (higher = more alike).
    same: bool [N], score >= threshold; None when no threshold is known.
    threshold: the cosine similarity at the evaluation's equal-error rate
      (or the one given), or None.
  """
  score: np.ndarray
  same: Optional[np.ndarray]
  threshold: Optional[float]


@dataclasses.dataclass(frozen=True)
class _Backend:
  """What an Embedder runs: its two paths and the model's sizes.

  Attributes:
    embed_files: image paths [B] -> float32 [B, D] embeddings (any norm);
      raises tf.errors.OpError on a file it cannot decode.
    embed_pixels: uint8 [B, h, w, 3] (one size) -> float32 [B, D].
    image_size: (height, width) the model's input.
    dimension: D.
    keep: objects kept alive with the backend (a loaded SavedModel).
  """
  embed_files: Callable[[list[str]], np.ndarray]
  embed_pixels: Callable[[np.ndarray], np.ndarray]
  image_size: tuple[int, int]
  dimension: int
  keep: object = None


class Embedder:
  """Embeds person images with a keras-reid model; compares pairs.

  Build one with `from_run` or `from_saved_model`.

  Attributes:
    dimension: D, the embedding size.
    input_size: (height, width) every image is resized to.
    threshold: the cosine similarity above which `verify` says "same
      person", or None (see `from_run` / `from_saved_model`).
    source: what the model was loaded from (a run folder or SavedModel).
  """

  def __init__(self, backend: _Backend, *, source: str,
               threshold: Optional[float] = None):
    self._backend = backend
    self.source = source
    self.threshold = None if threshold is None else float(threshold)

  def __repr__(self) -> str:
    return (f"Embedder(source={self.source!r}, dimension={self.dimension}, "
            f"input_size={self.input_size}, threshold={self.threshold})")

  @property
  def dimension(self) -> int:
    return self._backend.dimension

  @property
  def input_size(self) -> tuple[int, int]:
    return self._backend.image_size

  # ------------------------------------------------------------- builders

  @classmethod
  def from_run(cls, workdir: str, *, flip_test: Optional[bool] = None,
               threshold: Optional[float] = None) -> "Embedder":
    """The latest weights of a training run, as its evaluation embeds.

    Args:
      workdir: the run directory of `python -m keras_reid.train`.
      flip_test: average each image's embedding with its mirror image's
        (as evaluation does with config.eval.flip_test); None = the run's
        config.eval.flip_test.
      threshold: cosine similarity for `verify`'s decision; None = the one
        the run's evaluation report (`python -m keras_reid.evaluate
        --workdir`) found at its equal-error rate, if it has one.

    Raises:
      FileNotFoundError: the run has no config or no finished step.
    """
    # Imported here: model building is heavier than the SavedModel path.
    from keras_reid.models import builders
    from keras_reid.models import restore

    runs.weights_origin(workdir)  # warns if the run is partial
    model, config = restore.restore_training_model(workdir)
    image_size = (int(config.data.image_height),
                  int(config.data.image_width))
    normalization = builders.normalization_for(config.model)
    embed = builders.embedding_function(model)
    flip = bool(config.eval.flip_test) if flip_test is None else flip_test

    def features(images: tf.Tensor) -> np.ndarray:
      out = np.asarray(embed(images), np.float32)
      if flip:
        out = (out + np.asarray(embed(tf.reverse(images, axis=[2])),
                                np.float32)) / 2.0
      return out

    def embed_files(paths: list[str]) -> np.ndarray:
      # keras_reid.data.pipeline.make_eval_dataset's steps, in one batch.
      ds = tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string))
      ds = ds.map(lambda p: preprocessing.load_image(p, image_size),
                  num_parallel_calls=AUTOTUNE, deterministic=True)
      images = ds.batch(len(paths)).get_single_element()
      return features(preprocessing.normalize(images, normalization))

    @tf.function(reduce_retracing=True, autograph=False)
    def prepare(pixels):
      images = preprocessing.resize(tf.cast(pixels, tf.float32), image_size)
      return preprocessing.normalize(images, normalization)

    def embed_pixels(pixels: np.ndarray) -> np.ndarray:
      return features(prepare(tf.constant(pixels)))

    # The retrieval feature's size (the pooled feature, or through BNNeck).
    dimension = int(builders.build_embedder(model).output.shape[-1])
    if threshold is None:
      threshold = run_threshold(workdir)
    return cls(_Backend(embed_files, embed_pixels, image_size, dimension,
                        keep=model),
               source=workdir, threshold=threshold)

  @classmethod
  def from_saved_model(cls, path: str, *,
                       threshold: Optional[float] = None) -> "Embedder":
    """An exported SavedModel (keras_reid.serving.saved_model), as served.

    Files go through its serve_bytes signature (their bytes, decoded and
    resized in the graph), pixels through serving_default: the numbers
    TF-Serving returns for the same inputs.

    Args:
      path: a version folder (`export/reid/3`), or the model's base folder
        (`export/reid`: its highest numbered version).
      threshold: cosine similarity for `verify`'s decision; None = the
        export's assets.extra/export_info.json "cosine_threshold", if any.

    Raises:
      FileNotFoundError: no SavedModel at `path`.
      ValueError: the SavedModel lacks the keras-reid signatures.
    """
    path = _saved_model_dir(path)
    loaded = tf.saved_model.load(path)
    missing = [s for s in ("serving_default", "serve_bytes")
               if s not in loaded.signatures]
    if missing:
      raise ValueError(
          f"SavedModel {path!r} has no {missing} signature(s) (has "
          f"{sorted(loaded.signatures)}); export it with `python -m "
          "keras_reid.export`.")
    info = {}
    info_path = os.path.join(path, "assets.extra", "export_info.json")
    if os.path.exists(info_path):
      with open(info_path) as f:
        info = json.load(f)
    serve_pixels = loaded.signatures["serving_default"]
    serve_bytes = loaded.signatures["serve_bytes"]
    out_spec = serve_pixels.structured_outputs["embeddings"]
    dimension = info.get("embedding_dim") or out_spec.shape[-1]
    if "image_size" not in info or not dimension:
      raise ValueError(
          f"SavedModel {path!r}: {info_path} does not give the image_size "
          "and embedding_dim; export it with `python -m keras_reid.export`.")

    def embed_files(paths: list[str]) -> np.ndarray:
      contents = [_read_file(p) for p in paths]
      out = serve_bytes(images=tf.constant(contents, tf.string))
      return out["embeddings"].numpy()

    def embed_pixels(pixels: np.ndarray) -> np.ndarray:
      return serve_pixels(images=tf.constant(pixels))["embeddings"].numpy()

    if threshold is None:
      threshold = info.get("cosine_threshold")
    return cls(_Backend(embed_files, embed_pixels,
                        tuple(int(s) for s in info["image_size"]),
                        int(dimension), keep=loaded),
               source=path, threshold=threshold)

  # ------------------------------------------------------------- embedding

  def embed(self, images: Images, batch_size: int = 64) -> np.ndarray:
    """Embeds images, in order.

    Args:
      images: one of
        - image file paths (a list, or one path): JPEG, PNG, BMP or GIF,
          decoded as evaluation decodes them (BMPs with trailing bytes
          included);
        - uint8 RGB pixels: an array [N, H, W, 3], one image [H, W, 3], or
          a list of [H, W, 3] arrays of any sizes;
        - a tf.data.Dataset of uint8 images [H, W, 3] or batches
          [B, H, W, 3].
        Every image is resized to `input_size` by the model's resize.
      batch_size: images per model call.

    Returns:
      float32 [N, D], each row of unit L2 norm ([0, D] for no images).

    Raises:
      FileNotFoundError: a path is missing or not a file (named).
      keras_reid.data.image_files.CorruptImageError: a file cannot be
        decoded as an image (named).
      TypeError / ValueError: pixels that are not uint8 [.., H, W, 3].
    """
    if batch_size < 1:
      raise ValueError(f"batch_size={batch_size}: expected >= 1.")
    if isinstance(images, tf.data.Dataset):
      return self._embed_pixel_stream(_dataset_images(images), batch_size)
    if isinstance(images, (str, os.PathLike)):
      images = [images]
    if isinstance(images, np.ndarray) and images.dtype.kind in "OSU":
      images = images.tolist()  # an array of paths
    if isinstance(images, np.ndarray):
      _check_pixels(images, "images", ranks=(3, 4))
      if images.ndim == 3:
        images = images[None]
      return self._embed_pixel_stream(iter(images), batch_size)
    images = list(images)
    if all(isinstance(x, (str, os.PathLike)) for x in images):
      return self._embed_paths([os.fspath(x) for x in images], batch_size)
    if all(isinstance(x, np.ndarray) for x in images):
      for i, x in enumerate(images):
        _check_pixels(x, f"images[{i}]", ranks=(3,))
      return self._embed_pixel_stream(iter(images), batch_size)
    kinds = sorted({type(x).__name__ for x in images})
    raise TypeError(
        f"images: expected image paths, uint8 arrays [H, W, 3] or a "
        f"tf.data.Dataset; got a list of {kinds}. Pass paths or arrays, not "
        "both.")

  def _finish(self, chunks: list[np.ndarray]) -> np.ndarray:
    if not chunks:
      return np.zeros((0, self.dimension), np.float32)
    return l2_normalize(np.concatenate(chunks, 0))

  def _embed_paths(self, paths: list[str], batch_size: int) -> np.ndarray:
    for path in paths:
      _check_file(path)
    chunks = []
    for start in range(0, len(paths), batch_size):
      batch = paths[start:start + batch_size]
      try:
        chunks.append(self._backend.embed_files(batch))
      except tf.errors.OpError as e:
        raise _bad_files_error(batch, e) from e
    return self._finish(chunks)

  def _embed_pixel_stream(self, images: Iterator[np.ndarray],
                          batch_size: int) -> np.ndarray:
    chunks = [self._backend.embed_pixels(batch)
              for batch in _same_size_batches(images, batch_size)]
    return self._finish(chunks)

  # ---------------------------------------------------------- verification

  def verify(self, a: Images, b: Images, batch_size: int = 64
             ) -> Verification:
    """Scores pairs (a[i], b[i]): are they the same person?

    By the cosine similarity of their embeddings, not a verification head:
    it works for every run and export, those trained with
    loss.ver_weight=0 (no verification head, no "verify" signature) too.

    Args:
      a, b: one image each, or as many images each (anything `embed`
        takes).
      batch_size: images per model call.

    Returns:
      A Verification: cosine similarity [N] and, if `threshold` is known,
      the decision [N].
    """
    ea, eb = self.embed(a, batch_size), self.embed(b, batch_size)
    if len(ea) != len(eb):
      raise ValueError(f"verify: {len(ea)} images in a and {len(eb)} in b; "
                       "expected one pair per row (the same number).")
    score = np.sum(ea * eb, axis=-1, dtype=np.float32)
    same = None if self.threshold is None else score >= self.threshold
    return Verification(score=score, same=same, threshold=self.threshold)


# ------------------------------------------------------------------ helpers


def run_threshold(workdir: str) -> Optional[float]:
  """The cosine similarity threshold of the run's evaluation report.

  `python -m keras_reid.evaluate --workdir=...` writes, under
  verification.sir_cosine, the ROC of the cosine similarity of the test
  split's query-gallery pairs and the threshold at its equal-error rate.

  Returns:
    That threshold, or None when the run has no evaluation report or the
    report has no cosine threshold (written by an older version, or the
    verification report was skipped).
  """
  path = runs.eval_report_path(workdir)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    report = json.load(f)
  value = report.get("verification", {}).get("sir_cosine", {}).get(
      "threshold")
  return None if value is None else float(value)


def _saved_model_dir(path: str) -> str:
  """A version folder: `path` itself, or its highest numbered version."""
  if os.path.exists(os.path.join(path, "saved_model.pb")):
    return path
  versions = []
  if os.path.isdir(path):
    versions = sorted(int(n) for n in os.listdir(path)
                      if re.fullmatch(r"\d+", n) and os.path.exists(
                          os.path.join(path, n, "saved_model.pb")))
  if not versions:
    raise FileNotFoundError(
        f"No SavedModel at {path!r}: expected a folder with saved_model.pb, "
        "or a model base folder with numbered versions, as written by "
        "`python -m keras_reid.export --export_dir=...`.")
  return os.path.join(path, str(versions[-1]))


def _check_file(path: str) -> None:
  """Raises FileNotFoundError naming `path` unless it is a readable file."""
  if os.path.isfile(path) and os.access(path, os.R_OK):
    return
  what = ("cannot be read (no read permission)" if os.path.isfile(path)
          else "is not a file" if os.path.exists(path) else "does not exist")
  raise FileNotFoundError(
      f"image file {path!r} {what}; expected a JPEG, PNG, BMP or GIF file. "
      "Check the path.")


def _read_file(path: str) -> bytes:
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    raise FileNotFoundError(
        f"image file {path!r} cannot be read ({e.strerror}); check the path "
        "and its permissions.") from e


def _bad_files_error(paths: list[str], error: tf.errors.OpError
                     ) -> Exception:
  """The error naming the files of a failed batch that do not decode."""
  oversized: dict[int, tuple[int, int]] = {}
  bad = image_files.validate_images(paths, oversized)
  if not bad:
    first_line = (error.message or str(error)).strip().splitlines()[0]
    return ValueError(
        f"the model failed on the batch {paths[0]!r} .. {paths[-1]!r} "
        f"({len(paths)} files, each of which decodes): {first_line}")
  names = ", ".join(
      repr(paths[i]) + (f" (header declares {oversized[i][1]}x"
                        f"{oversized[i][0]} pixels, over the limit)"
                        if i in oversized else "")
      for i in bad)
  return image_files.CorruptImageError(
      f"{len(bad)} image file(s) cannot be decoded as JPEG/PNG/BMP/GIF or "
      f"are too large: {names}. Fix or remove them.")


def _check_pixels(images: np.ndarray, name: str, ranks: tuple[int, ...]
                  ) -> None:
  if images.dtype != np.uint8:
    raise TypeError(
        f"{name}: expected uint8 RGB pixels in 0..255; got dtype "
        f"{images.dtype}. Convert with np.asarray(x * 255, np.uint8) if they "
        "are floats in [0, 1].")
  if images.ndim not in ranks or images.shape[-1] != 3 or 0 in images.shape[
      -3:-1]:
    shapes = " or ".join(
        {3: "[H, W, 3]", 4: "[N, H, W, 3]"}[r] for r in ranks)
    raise ValueError(f"{name}: expected uint8 RGB images {shapes}; got "
                     f"shape {images.shape}.")


def _same_size_batches(images: Iterable[np.ndarray], batch_size: int
                       ) -> Iterator[np.ndarray]:
  """Stacks consecutive images of one size into batches of <= batch_size."""
  batch: list[np.ndarray] = []
  for image in images:
    if batch and (len(batch) == batch_size or image.shape != batch[0].shape):
      yield np.stack(batch)
      batch = []
    batch.append(image)
  if batch:
    yield np.stack(batch)


def _dataset_images(ds: tf.data.Dataset) -> Iterator[np.ndarray]:
  """The uint8 [H, W, 3] images of a dataset of images or of batches."""
  spec = ds.element_spec
  if (not isinstance(spec, tf.TensorSpec) or spec.dtype != tf.uint8
      or spec.shape.rank not in (3, 4)):
    raise TypeError(
        f"images: expected a tf.data.Dataset of uint8 images [H, W, 3] or "
        f"batches [B, H, W, 3]; got elements {spec}. Decode files with "
        "keras_reid.data.preprocessing.decode_image, or pass the paths.")
  for element in ds.as_numpy_iterator():
    if element.ndim == 3:
      _check_pixels(element, "dataset element", ranks=(3,))
      yield element
    else:
      _check_pixels(element, "dataset element", ranks=(4,))
      yield from element

"""SIR feature extraction from any embedder, and evaluation of a dataset.

An embedder is any callable mapping a batch of images to embeddings: a Keras
model (`builders.build_embedder`), a SavedModel signature (see
`load_saved_model`), or a user function. Every image is embedded once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Callable, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from keras_reid import progress
from keras_reid.data import pipeline
from keras_reid.data import records as records_lib
from keras_reid.evaluation import cir
from keras_reid.evaluation import feature_files

# images [B, H, W, 3] (tf.Tensor or array, as the dataset yields them) ->
# embeddings [B, D] (anything np.asarray accepts).
EmbedFn = Callable[[object], object]


def flip_averaged(embed_fn: EmbedFn) -> EmbedFn:
  """Test-time flip: the mean embedding of each image and its mirror image.

  Args:
    embed_fn: images [B, H, W, 3] -> embeddings [B, D].

  Returns:
    An EmbedFn giving (embed_fn(x) + embed_fn(x mirrored left-right)) / 2 as
    float32 [B, D] (width is axis 2). Twice the extraction time.
  """
  def embed(images):
    mirrored = tf.reverse(images, axis=[2])
    return (np.asarray(embed_fn(images), np.float32)
            + np.asarray(embed_fn(mirrored), np.float32)) / 2.0
  return embed


def _image_progress(num_images: int, label: str):
  """Progress of a pass over images, on stderr (stdout may carry a report),
  shown only when the pass takes more than a few seconds."""
  return progress.make_progress(num_images, "images", rate_unit="img",
                                label=label, stream=sys.stderr,
                                delay=progress.SLOW_SECONDS)


def extract_features(embed_fn: EmbedFn,
                     records: Sequence[records_lib.Record], *,
                     image_size: tuple[int, int], normalization: str,
                     batch_size: int = 128,
                     progress_label: str = "Embedding") -> np.ndarray:
  """Embeds every record's image once, in record order.

  Args:
    embed_fn: images float32 [B, H, W, 3] (normalised with `normalization`)
      -> embeddings [B, D].
    records: the images.
    image_size: (height, width) the embedder expects.
    normalization: a key of keras_reid.data.preprocessing.NORMALIZATIONS
      ("none" keeps 0..255 pixels).
    batch_size: images per batch.
    progress_label: names the pass in its progress lines (printed to
      stderr when it takes more than progress.SLOW_SECONDS).

  Returns:
    [len(records), D] float32 features.
  """
  records = list(records)
  if not records:
    raise ValueError("extract_features got no records; the split is empty.")
  ds = pipeline.make_eval_dataset(records, image_size=tuple(image_size),
                                  normalization=normalization,
                                  batch_size=batch_size)
  bar = _image_progress(len(records), progress_label)
  chunks, done = [], 0
  for batch in ds:
    chunks.append(np.asarray(embed_fn(batch), np.float32))
    done += len(chunks[-1])
    bar.update(done)
  features = np.concatenate(chunks, 0)
  if features.ndim != 2 or features.shape[0] != len(records):
    raise ValueError(
        f"the embedder returned features of shape {features.shape} for "
        f"{len(records)} images; expected [num_images, D].")
  return features


def evaluate_embedder(embed_fn: EmbedFn, dataset: records_lib.ReidDataset, *,
                      image_size: tuple[int, int], normalization: str,
                      batch_size: int = 128, max_rank: int = 50,
                      multi_query: bool = False, rerank: bool = False,
                      rerank_options: Optional[dict] = None,
                      return_features: bool = False,
                      cuhk03_metric: bool = False) -> dict:
  """Extracts query and gallery features and evaluates SIR ranking.

  Args:
    embed_fn: see `extract_features`.
    dataset: the ReidDataset whose query / gallery is evaluated (a different
      dataset than the training one gives cross-dataset evaluation).
    image_size: (height, width).
    normalization: pixel normalisation the embedder expects.
    batch_size: images per batch.
    max_rank: CMC length.
    multi_query: Market-1501 multi-query (mean over same pid + camera).
    rerank: k-reciprocal re-ranking (keras_reid.evaluation.rerank).
    rerank_options: keyword arguments of `rerank.evaluate_reranked`.
    return_features: also return the features under "features" (a dict of
      arrays; not JSON-serialisable).
    cuhk03_metric: CUHK03 classic single-gallery-shot CMC
      (keras_reid.evaluation.protocols.evaluate_cuhk03).

  Returns:
    `features.evaluate_arrays`'s dict plus "dataset", "extract_seconds",
    "rank_seconds", "protocol".
  """
  t0 = time.perf_counter()
  kwargs = dict(image_size=image_size, normalization=normalization,
                batch_size=batch_size)
  qf = extract_features(embed_fn, dataset.query,
                        progress_label=f"Embedding {dataset.name} query",
                        **kwargs)
  gf = extract_features(embed_fn, dataset.gallery,
                        progress_label=f"Embedding {dataset.name} gallery",
                        **kwargs)
  t1 = time.perf_counter()
  arrays = dict(
      query_features=qf, gallery_features=gf,
      query_pids=np.array([r.pid for r in dataset.query]),
      gallery_pids=np.array([r.pid for r in dataset.gallery]),
      query_camids=np.array([r.camid for r in dataset.query]),
      gallery_camids=np.array([r.camid for r in dataset.gallery]))
  result = feature_files.evaluate_arrays(arrays, max_rank=max_rank, multi_query=multi_query,
                           rerank=rerank, rerank_options=rerank_options,
                           cuhk03_metric=cuhk03_metric)
  result.update(dataset=dataset.name, extract_seconds=t1 - t0)
  logging.info("%s: rank1 %.4f mAP %.4f (%d queries, %d skipped)",
               dataset.name, result["rank1"], result["mAP"],
               result["num_queries"], result["num_skipped_queries"])
  if return_features:
    result["features"] = arrays
  return result


def load_images(records: Sequence[records_lib.Record], *,
                image_size: tuple[int, int], normalization: str,
                batch_size: int = 128, dtype=np.float16) -> np.ndarray:
  """All images of `records`, decoded and normalised, as one array.

  For the pair scorer (CIR, verification head), which needs pixels rather
  than embeddings. float16 halves the memory (Market-1501's 19,732 test
  images at 128x64 take ~0.9 GB); the scorer casts back to float32.

  Returns:
    [len(records), H, W, 3] array of `dtype`.
  """
  records = list(records)
  out = np.empty((len(records), *image_size, 3), dtype)
  ds = pipeline.make_eval_dataset(records, image_size=tuple(image_size),
                                  normalization=normalization,
                                  batch_size=batch_size)
  bar = _image_progress(len(records), "Loading images")
  start = 0
  for batch in ds:
    batch = np.asarray(batch)
    out[start:start + len(batch)] = batch
    start += len(batch)
    bar.update(start)
  return out


def keras_pair_scorer(pair_scorer) -> cir.PairScorer:
  """Wraps `builders.build_pair_scorer(model)` as (images_a, images_b) -> p."""
  call = tf.function(
      lambda a, b: pair_scorer({"images_a": a, "images_b": b}, training=False),
      reduce_retracing=True)

  def score(images_a, images_b):
    return np.asarray(call(np.asarray(images_a, np.float32),
                           np.asarray(images_b, np.float32))).reshape(-1)

  return score


def _saved_model_info(path: str) -> dict:
  info = os.path.join(path, "assets.extra", "export_info.json")
  if os.path.exists(info):
    with open(info) as f:
      return json.load(f)
  return {}


@dataclasses.dataclass(frozen=True)
class SavedModelEmbedder:
  """What `load_saved_model` reads from an exported SavedModel.

  Attributes:
    embed: images [B, H, W, 3] (0..255, any float or int dtype) ->
      embeddings [B, D] (np.ndarray); normalization="none".
    pair_scorer: (images_a, images_b) over 0..255 images -> same-person
      probability [B]; None without a "verify" signature.
    image_size: (height, width) the export records; None entries when
      unknown.
    loaded: the loaded SavedModel (keeps its variables alive).
  """
  embed: EmbedFn
  pair_scorer: Optional[cir.PairScorer]
  image_size: tuple[Optional[int], Optional[int]]
  loaded: object


def load_saved_model(path: str) -> SavedModelEmbedder:
  """Embedder, pair scorer and input size from an exported SavedModel.

  The SavedModel's "serving_default" signature takes "images" uint8
  [B, H, W, 3] (raw RGB pixels; the model resizes and normalises) and
  returns "embeddings" [B, D]; its optional "verify" signature takes
  "images_a", "images_b" and returns "same_probability" [B]
  (keras_reid.serving.saved_model). Use with normalization="none".

  Returns:
    A SavedModelEmbedder; image_size comes from assets.extra/export_info.json
    or the signature.
  """
  loaded = tf.saved_model.load(path)
  if "serving_default" not in loaded.signatures:
    raise ValueError(
        f"SavedModel {path!r} has no 'serving_default' signature (has "
        f"{list(loaded.signatures)}); export it with "
        "keras_reid.serving.saved_model.export_saved_model.")
  signature = loaded.signatures["serving_default"]
  spec = signature.structured_input_signature[1].get("images")
  if spec is None:
    raise ValueError(f"SavedModel {path!r}: serving_default has no 'images' "
                     f"input (inputs: {signature.structured_input_signature}).")
  size = _saved_model_info(path).get("image_size")
  if size:
    height, width = int(size[0]), int(size[1])
  elif spec.shape.rank == 4:
    height, width = spec.shape[1], spec.shape[2]
  else:
    height = width = None

  def to_pixels(images):
    return tf.cast(tf.clip_by_value(tf.round(tf.cast(images, tf.float32)), 0,
                                    255), tf.uint8)

  def embed(images):
    out = signature(images=to_pixels(images))
    if "embeddings" not in out:
      raise ValueError(f"SavedModel {path!r} returned {list(out)}; expected "
                       "an 'embeddings' output.")
    return out["embeddings"].numpy()

  pair_scorer = None
  if "verify" in loaded.signatures:
    verify = loaded.signatures["verify"]

    def pair_scorer(images_a, images_b):
      out = verify(images_a=to_pixels(images_a), images_b=to_pixels(images_b))
      return out["same_probability"].numpy().reshape(-1)

  return SavedModelEmbedder(embed=embed, pair_scorer=pair_scorer,
                            image_size=(height, width), loaded=loaded)

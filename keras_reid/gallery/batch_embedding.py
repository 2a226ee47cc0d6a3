"""Embedding a large image archive as an Apache Beam pipeline.

    images (a manifest CSV, or a file glob)
      -> BatchElements -> EmbedBatch (Embedder.from_saved_model, once per
         worker in DoFn.setup; unreadable images counted and set aside)
      -> WriteToParquetBatched: OUTPUT-SSSSS-of-NNNNN.parquet
         (keras_reid/gallery/shards.py's format), and OUTPUT-skipped.txt

`python -m keras_reid.gallery.embed_beam` parses the flags into `Settings`
and calls `run`; `python -m keras_reid.gallery build --embeddings=GLOB`
indexes the shards. The runner (DirectRunner, Flink, Spark, Dataflow) and
its options come from Beam's own pipeline options.

Embeddings are the Embedder's (float32 [D], L2-normalised, the SavedModel's
serve_bytes numbers). A missing, corrupt or oversized image is decoded once
by `data.image_files.validate_images` (the training pipeline's decoder),
logged, counted in the Beam counter `keras_reid.gallery/unreadable_images`
and listed in OUTPUT-skipped.txt; it never fails the pipeline.

The workers read the image files and the SavedModel by path (the
Embedder reads files with open()), so on a cluster both must lie on a
filesystem every worker mounts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Iterable, Optional, Sequence

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from keras_reid.gallery import embedding_model
from keras_reid.gallery import ingestion
from keras_reid.gallery import shards

COUNTER_NAMESPACE = "keras_reid.gallery"
EMBEDDED = "embedded_images"
UNREADABLE = "unreadable_images"
SKIPPED_SUFFIX = "-skipped.txt"


@dataclasses.dataclass(frozen=True)
class Settings:
  """What the pipeline reads; the entry point's flags of the same names.

  Attributes:
    saved_model: an exported SavedModel version folder (or the folder of its
      numbered versions: the highest).
    output: the shards' path prefix (OUTPUT-00000-of-00004.parquet ...).
    manifest: a CSV manifest (path[,pid,camid,time], as `gallery build`
      reads it); or
    images: a glob of image files (Beam's MatchFiles: local or any
      filesystem Beam knows). Exactly one of the two.
    min_batch_size, max_batch_size: BatchElements' bounds on the images per
      model call.
    num_shards: output files; 0 = the runner's choice.
  """
  saved_model: str
  output: str
  manifest: Optional[str] = None
  images: Optional[str] = None
  min_batch_size: int = 8
  max_batch_size: int = 64
  num_shards: int = 0


@dataclasses.dataclass(frozen=True)
class Image:
  """One image to embed (a PCollection element). id: its manifest row or None."""
  id: Optional[int]
  path: str
  pid: Optional[int] = None
  camid: Optional[int] = None
  time: Optional[str] = None


def manifest_images(manifest: str) -> list[Image]:
  """The manifest's images (paths made absolute, as `gallery build` does).

  Raises:
    ValueError: `ingestion.list_images`'s errors (the file, the line).
  """
  if os.path.isdir(os.path.abspath(os.path.expanduser(manifest))):
    raise ValueError(f"--manifest {manifest!r} is a folder; expected a CSV "
                     "file. For a folder use --images='FOLDER/*.jpg'.")
  listed = ingestion.list_images(manifest)
  return [Image(i, p, pid, camid, time) for i, (p, pid, camid, time) in
          enumerate(zip(listed.paths, listed.pids, listed.camids,
                        listed.times))]


def export_dimension(saved_model_dir: str) -> int:
  """D of an export, from its assets.extra/export_info.json (no TensorFlow).

  Raises:
    ValueError: the export has no embedding_dim there.
  """
  path = os.path.join(saved_model_dir, "assets.extra", "export_info.json")
  try:
    with open(path) as f:
      dimension = json.load(f).get("embedding_dim")
  except (OSError, ValueError) as e:
    raise ValueError(f"{path!r} cannot be read ({e}); expected the export "
                     "info of python -m keras_reid.export.") from e
  if not isinstance(dimension, int) or dimension < 1:
    raise ValueError(f"{path!r}: embedding_dim is {dimension!r}; expected a "
                     "positive integer (export with python -m "
                     "keras_reid.export).")
  return dimension


class EmbedBatch(beam.DoFn):
  """[Image] -> one pyarrow Table of their embeddings (shards.table), and
  the paths it cannot read on the tagged output UNREADABLE."""

  def __init__(self, saved_model_dir: str, shard_schema):
    self._saved_model_dir = saved_model_dir
    self._schema = shard_schema
    self._embedded = Metrics.counter(COUNTER_NAMESPACE, EMBEDDED)
    self._unreadable = Metrics.counter(COUNTER_NAMESPACE, UNREADABLE)
    self._embedder = None

  def setup(self):
    # TensorFlow is imported on the workers only, once per DoFn instance.
    from keras_reid import embedder
    from keras_reid.data import image_files
    self._embedder = embedder.Embedder.from_saved_model(self._saved_model_dir)
    self._validate = image_files.validate_images

  def process(self, batch: Sequence[Image]) -> Iterable:
    batch = list(batch)
    bad = set(self._validate([image.path for image in batch]))
    for i in sorted(bad):
      logging.warning("unreadable image skipped: %s", batch[i].path)
      yield beam.pvalue.TaggedOutput(UNREADABLE, batch[i].path)
    self._unreadable.inc(len(bad))
    good = [image for i, image in enumerate(batch) if i not in bad]
    if not good:
      return
    vectors = self._embedder.embed([image.path for image in good],
                                   batch_size=len(good))
    self._embedded.inc(len(good))
    images = ingestion.ImageList([im.path for im in good],
                                 [im.pid for im in good],
                                 [im.camid for im in good],
                                 [im.time for im in good])
    yield shards.table(self._schema, [im.id for im in good], images, vectors)


def build(pipeline: beam.Pipeline, settings: Settings) -> dict:
  """Adds the pipeline's transforms to `pipeline` (not run).

  Returns:
    {"shards": the shards' glob, "skipped": the skipped list's path,
     "model_id": the model's id}.

  Raises:
    ValueError: not exactly one of manifest / images, a bad manifest, no
      SavedModel at settings.saved_model, bad batch sizes.
  """
  if (settings.manifest is None) == (settings.images is None):
    raise ValueError("give exactly one of --manifest=CSV and "
                     "--images=GLOB (got "
                     f"{'both' if settings.manifest else 'neither'}).")
  if not 1 <= settings.min_batch_size <= settings.max_batch_size:
    raise ValueError(
        f"--min_batch_size={settings.min_batch_size}, --max_batch_size="
        f"{settings.max_batch_size}: expected 1 <= min <= max.")
  identity = embedding_model.identify(settings.saved_model)
  if identity.kind != embedding_model.SAVED_MODEL:
    raise ValueError(f"--saved_model {settings.saved_model!r} is a training "
                     "run; export it first (python -m keras_reid.export).")
  shard_schema = shards.schema(export_dimension(identity.source),
                               identity.model_id, identity.source)
  if settings.manifest is not None:
    images = pipeline | "ListManifest" >> beam.Create(
        manifest_images(settings.manifest), reshuffle=True)
  else:
    pattern = settings.images
    if "://" not in pattern:  # a local glob: absolute, as the gallery keys
      pattern = os.path.abspath(os.path.expanduser(pattern))
    images = (pipeline
              | "MatchImages" >> fileio.MatchFiles(pattern)
              | "ToImage" >> beam.Map(lambda m: Image(None, m.path))
              | "Spread" >> beam.Reshuffle())
  embedded = (
      images
      | "Batch" >> beam.BatchElements(min_batch_size=settings.min_batch_size,
                                      max_batch_size=settings.max_batch_size)
      | "Embed" >> beam.ParDo(EmbedBatch(identity.source, shard_schema))
      .with_outputs(UNREADABLE, main="tables"))
  _ = embedded.tables | "WriteShards" >> beam.io.WriteToParquetBatched(
      settings.output, shard_schema, file_name_suffix=".parquet",
      num_shards=settings.num_shards)
  skipped = settings.output + SKIPPED_SUFFIX
  _ = embedded[UNREADABLE] | "WriteSkipped" >> beam.io.WriteToText(
      settings.output + "-skipped", file_name_suffix=".txt",
      shard_name_template="")
  return {"shards": settings.output + "-*.parquet", "skipped": skipped,
          "model_id": identity.model_id}


def counter(result, name: str) -> int:
  """A finished pipeline's committed counter `name` (0 if never set)."""
  query = result.metrics().query(
      beam.metrics.MetricsFilter().with_namespace(COUNTER_NAMESPACE)
      .with_name(name))
  return sum(c.committed or 0 for c in query["counters"])


def run(settings: Settings, pipeline_args: Sequence[str] = ()) -> dict:
  """Builds and runs the pipeline to the end with Beam's `pipeline_args`
  (--runner=..., the runner's options).

  Returns:
    build's dict plus {"embedded": n, "unreadable": m} (Beam counters).
  """
  options = PipelineOptions(list(pipeline_args))
  pipeline = beam.Pipeline(options=options)
  out = build(pipeline, settings)
  result = pipeline.run()
  result.wait_until_finish()
  return dict(out, embedded=counter(result, EMBEDDED),
              unreadable=counter(result, UNREADABLE))

"""Query and gallery embeddings for TensorBoard's Embedding Projector.

`write_projector(out_dir, ...)` writes, into a TensorBoard run folder:

  projector_config.pbtxt     tensorboard.plugins.projector.ProjectorConfig
  projector/embeddings.tsv   one embedding per line (tab-separated floats)
  projector/metadata.tsv     header "set\tpid\tcamera\tpath", one row per point
  projector/sprite.png       thumbnails in a square grid (with image paths)

The tensor is a TSV file the projector reads directly (no TF checkpoint).
At most `max_points` points are written: beyond that a seeded random sample
of query and gallery images, said so in the log and in the returned info.
TF-free: NumPy, Pillow and TensorBoard's projector protos.
"""

from __future__ import annotations

import math
import os
from typing import Optional, Sequence

from absl import logging
import numpy as np
from PIL import Image
from google.protobuf import text_format
from tensorboard.plugins.projector import projector_config_pb2

CONFIG_FILE = "projector_config.pbtxt"  # the name the plugin looks for
SUBDIR = "projector"
MAX_POINTS = 3000
# Thumbnail (height, width); the projector's sprite must stay under 8192 px
# a side: ceil(sqrt(3000)) = 55 cells of 32 x 16.
THUMBNAIL = (32, 16)
TENSOR_NAME = "reid_embeddings"


def _atomic_write_text(path: str, text: str) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def sprite_image(paths: Sequence[str], thumbnail: tuple[int, int] = THUMBNAIL
                 ) -> np.ndarray:
  """Thumbnails of `paths` row-major in a ceil(sqrt(N))-wide square grid.

  Returns:
    uint8 [side * h, side * w, 3], side = ceil(sqrt(N)); unused cells white.
  """
  h, w = thumbnail
  side = max(1, math.ceil(math.sqrt(len(paths))))
  sprite = Image.new("RGB", (side * w, side * h), (255, 255, 255))
  for i, path in enumerate(paths):
    with Image.open(path) as image:
      thumb = image.convert("RGB").resize((w, h), Image.BILINEAR)
    sprite.paste(thumb, ((i % side) * w, (i // side) * h))
  return np.asarray(sprite)


def write_projector(out_dir: str, query_features, gallery_features,
                    query_pids, gallery_pids, query_camids, gallery_camids, *,
                    query_paths: Optional[Sequence[str]] = None,
                    gallery_paths: Optional[Sequence[str]] = None,
                    max_points: int = MAX_POINTS, seed: int = 0,
                    thumbnail: tuple[int, int] = THUMBNAIL) -> dict:
  """Writes the projector files for query + gallery embeddings.

  Args:
    out_dir: a TensorBoard run folder (e.g. <workdir>/tensorboard); the
      config goes there, the data under out_dir/projector/.
    query_features, gallery_features: [Q, D], [G, D] embeddings.
    query_pids, gallery_pids, query_camids, gallery_camids: [Q] / [G] ints.
    query_paths, gallery_paths: image files; with both, a thumbnail sprite
      (and the path column of the metadata).
    max_points: cap on query + gallery points; beyond it a seeded random
      sample (without replacement, in query-then-gallery order).
    seed: the sample's seed.
    thumbnail: (height, width) of a sprite cell.

  Returns:
    {"dir", "config", "num_points", "num_available", "sampled", "sprite"
    (path or None)}.
  """
  features = np.concatenate([np.asarray(query_features, np.float32),
                             np.asarray(gallery_features, np.float32)])
  sets = ["query"] * len(query_pids) + ["gallery"] * len(gallery_pids)
  pids = np.concatenate([np.asarray(query_pids), np.asarray(gallery_pids)])
  camids = np.concatenate([np.asarray(query_camids),
                           np.asarray(gallery_camids)])
  paths = None
  if query_paths is not None and gallery_paths is not None:
    paths = list(query_paths) + list(gallery_paths)
  if not (len(features) == len(pids) == len(camids) == len(sets)) or (
      paths is not None and len(paths) != len(features)):
    raise ValueError(
        f"projector: {len(features)} embeddings, {len(pids)} pids, "
        f"{len(camids)} cameras, {len(paths) if paths else 0} paths; give one "
        "of each per query and gallery image.")
  total = len(features)
  keep = np.arange(total)
  if total > max_points:
    keep = np.sort(np.random.default_rng(seed).choice(total, max_points,
                                                      replace=False))
    logging.warning("Projector: %d of %d query + gallery points, a random "
                    "sample (seed %d).", max_points, total, seed)
  data_dir = os.path.join(out_dir, SUBDIR)
  os.makedirs(data_dir, exist_ok=True)
  tensor_path = os.path.join(data_dir, "embeddings.tsv")
  metadata_path = os.path.join(data_dir, "metadata.tsv")
  _atomic_write_text(tensor_path, "".join(
      "\t".join(f"{v:.6g}" for v in row) + "\n" for row in features[keep]))
  rows = ["set\tpid\tcamera\tpath"] + [
      f"{sets[i]}\t{int(pids[i])}\t{int(camids[i])}\t"
      f"{paths[i] if paths else ''}" for i in keep]
  _atomic_write_text(metadata_path, "\n".join(rows) + "\n")

  config = projector_config_pb2.ProjectorConfig()
  embedding = config.embeddings.add()
  embedding.tensor_name = TENSOR_NAME
  embedding.tensor_path = os.path.join(SUBDIR, "embeddings.tsv")
  embedding.tensor_shape.extend([len(keep), features.shape[1]])
  embedding.metadata_path = os.path.join(SUBDIR, "metadata.tsv")
  sprite_path = None
  if paths is not None:
    sprite_path = os.path.join(data_dir, "sprite.png")
    tmp = f"{sprite_path}.tmp{os.getpid()}.png"
    Image.fromarray(sprite_image([paths[i] for i in keep], thumbnail)).save(
        tmp)
    os.replace(tmp, sprite_path)
    embedding.sprite.image_path = os.path.join(SUBDIR, "sprite.png")
    embedding.sprite.single_image_dim.extend([thumbnail[1], thumbnail[0]])
  config_path = os.path.join(out_dir, CONFIG_FILE)
  _atomic_write_text(config_path, text_format.MessageToString(config))
  logging.info("Projector: %d points in %s (tensorboard --logdir %s)",
               len(keep), data_dir, out_dir)
  return {"dir": os.path.abspath(out_dir),
          "config": os.path.abspath(config_path),
          "num_points": int(len(keep)), "num_available": int(total),
          "sampled": bool(total > max_points),
          "sprite": os.path.abspath(sprite_path) if sprite_path else None}

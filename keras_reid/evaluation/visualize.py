"""Ranked-list pictures (image mosaics drawn with Pillow), as PNG.

Each row shows a query and its top-k gallery images with the identity and
camera written under every image. The uint8 arrays can also go to
TensorBoard with `tf.summary.image`. Curves (CMC, ROC) are matplotlib
figures: keras_reid.evaluation.plots.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
from PIL import Image
from PIL import ImageDraw

GREEN, RED, BLUE = (0, 180, 0), (220, 0, 0), (40, 90, 230)


CAPTION_HEIGHT = 26  # two lines of Pillow's default font


def caption(pid, camid) -> str:
  """The text under an image: its identity and camera, one per line."""
  return f"id {pid}\ncam {camid}"


def ranked_list_image(query, gallery: Sequence, correct: Sequence[bool], *,
                      size: tuple[int, int] = (128, 64),
                      border: int = 4,
                      captions: Optional[Sequence[str]] = None
                      ) -> np.ndarray:
  """One row: the query (blue border) then its ranked gallery images.

  Args:
    query: uint8 [h, w, 3] array or a path.
    gallery: top-k images (arrays or paths), best first.
    correct: per gallery image, True = same person (green border), False =
      wrong (red border).
    size: (height, width) every image is resized to.
    border: border width in pixels.
    captions: optional text under each image, the query's first (k + 1
      strings, e.g. `caption(pid, camid)`).

  Returns:
    uint8 [size_h + 2*border (+ CAPTION_HEIGHT with captions),
    (k + 1) * (size_w + 2*border) + gap, 3].
  """
  if len(gallery) != len(correct):
    raise ValueError(f"got {len(gallery)} gallery images but {len(correct)} "
                     "correctness flags; give one flag per image.")
  if captions is not None and len(captions) != len(gallery) + 1:
    raise ValueError(f"got {len(captions)} captions for {len(gallery) + 1} "
                     "images; give one per image, the query's first.")
  h, w = size
  cell_w, cell_h, gap = w + 2 * border, h + 2 * border, 8
  text_h = CAPTION_HEIGHT if captions is not None else 0
  canvas = Image.new("RGB", (cell_w * (len(gallery) + 1) + gap,
                             cell_h + text_h), (255, 255, 255))
  draw = ImageDraw.Draw(canvas)

  def paste(image, x, colour):
    if isinstance(image, (str, os.PathLike)):
      image = Image.open(image).convert("RGB")
    else:
      image = Image.fromarray(np.asarray(image, np.uint8))
    canvas.paste(Image.new("RGB", (cell_w, cell_h), colour), (x, 0))
    canvas.paste(image.resize((w, h), Image.BILINEAR), (x + border, border))

  xs = [0] + [gap + cell_w * (k + 1) for k in range(len(gallery))]
  paste(query, xs[0], BLUE)
  for x, image, ok in zip(xs[1:], gallery, correct):
    paste(image, x, GREEN if ok else RED)
  for x, text in zip(xs, captions or ()):
    draw.multiline_text((x + border, cell_h + 1), text, fill=(0, 0, 0),
                        spacing=1)
  return np.asarray(canvas)


def save_png(image: np.ndarray, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(np.asarray(image, np.uint8)).save(path)
  return path


def save_ranked_lists(query_paths: Sequence[str], gallery_paths: Sequence[str],
                      query_pids, gallery_pids, top: np.ndarray, out_dir: str,
                      *, num_queries: int = 10, k: int = 10,
                      seed: int = 0, images: Optional[list] = None,
                      query_camids=None, gallery_camids=None) -> list[str]:
  """Writes ranked-list PNGs of `num_queries` seeded random queries.

  Args:
    query_paths, gallery_paths: image files.
    query_pids, gallery_pids: ids (correct = same pid).
    top: [Q, >=k] gallery indices per query, best first (e.g. from
      `ranking.features_top_k`; computed on the junk-free gallery the paths
      and pids must describe).
    out_dir: folder for `ranked_<query index>.png`.
    num_queries, k: how many lists, how long.
    seed: which queries.
    images: if a list, the uint8 row images are appended to it (e.g. for
      `run_evaluation.write_tensorboard_images`).
    query_camids, gallery_camids: cameras; when given, every image carries
      its pid and camera under it.

  Returns:
    the written paths.
  """
  rng = np.random.default_rng(seed)
  chosen = np.sort(rng.choice(len(query_paths),
                              min(num_queries, len(query_paths)), False))
  out = []
  for q in chosen:
    idx = top[q, :k]
    captions = None
    if query_camids is not None and gallery_camids is not None:
      captions = [caption(query_pids[q], query_camids[q])] + [
          caption(gallery_pids[g], gallery_camids[g]) for g in idx]
    image = ranked_list_image(
        query_paths[q], [gallery_paths[g] for g in idx],
        [gallery_pids[g] == query_pids[q] for g in idx], captions=captions)
    if images is not None:
      images.append(image)
    out.append(save_png(image, os.path.join(out_dir, f"ranked_{q}.png")))
  return out

"""Pictures people can look at: ranked lists and the CMC curve, as PNG.

Drawn with PIL (a pinned runtime dependency); no matplotlib. The uint8
arrays can also go to TensorBoard with `tf.summary.image`.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
from PIL import Image
from PIL import ImageDraw

GREEN, RED, BLUE = (0, 180, 0), (220, 0, 0), (40, 90, 230)


def ranked_list_image(query, gallery: Sequence, correct: Sequence[bool], *,
                      size: tuple[int, int] = (128, 64),
                      border: int = 4) -> np.ndarray:
  """One row: the query (blue border) then its ranked gallery images.

  Args:
    query: uint8 [h, w, 3] array or a path.
    gallery: top-k images (arrays or paths), best first.
    correct: per gallery image, True = same person (green border), False =
      wrong (red border).
    size: (height, width) every image is resized to.
    border: border width in pixels.

  Returns:
    uint8 [size_h + 2*border, (k + 1) * (size_w + 2*border) + gap, 3].
  """
  if len(gallery) != len(correct):
    raise ValueError(f"got {len(gallery)} gallery images but {len(correct)} "
                     "correctness flags; give one flag per image.")
  h, w = size
  cell_w, cell_h, gap = w + 2 * border, h + 2 * border, 8
  canvas = Image.new("RGB", (cell_w * (len(gallery) + 1) + gap, cell_h),
                     (255, 255, 255))

  def paste(image, x, colour):
    if isinstance(image, (str, os.PathLike)):
      image = Image.open(image).convert("RGB")
    else:
      image = Image.fromarray(np.asarray(image, np.uint8))
    canvas.paste(Image.new("RGB", (cell_w, cell_h), colour), (x, 0))
    canvas.paste(image.resize((w, h), Image.BILINEAR), (x + border, border))

  paste(query, 0, BLUE)
  for k, (image, ok) in enumerate(zip(gallery, correct)):
    paste(image, gap + cell_w * (k + 1), GREEN if ok else RED)
  return np.asarray(canvas)


def cmc_curve_image(cmc: Sequence[float], *, width: int = 480,
                    height: int = 320, title: str = "CMC") -> np.ndarray:
  """A line plot of a CMC curve (rank 1..len on x, 0..1 on y), uint8 RGB."""
  cmc = np.asarray(cmc, np.float64)
  image = Image.new("RGB", (width, height), (255, 255, 255))
  draw = ImageDraw.Draw(image)
  left, right, top, bottom = 40, width - 15, 25, height - 30
  draw.rectangle([left, top, right, bottom], outline=(0, 0, 0))
  for frac in (0.25, 0.5, 0.75):
    y = bottom - frac * (bottom - top)
    draw.line([left, y, right, y], fill=(220, 220, 220))
    draw.text((5, y - 6), f"{frac:.2f}", fill=(0, 0, 0))
  n = max(len(cmc), 2)
  xs = left + (np.arange(len(cmc))) / (n - 1) * (right - left)
  ys = bottom - np.clip(cmc, 0, 1) * (bottom - top)
  if len(cmc) > 1:
    draw.line(list(zip(xs.tolist(), ys.tolist())), fill=BLUE, width=2)
  for k in (1, 5, 10, 20):
    if k <= len(cmc):
      draw.ellipse([xs[k - 1] - 3, ys[k - 1] - 3, xs[k - 1] + 3,
                    ys[k - 1] + 3], fill=RED)
  rank1 = f" rank1={cmc[0]:.3f}" if len(cmc) else ""
  draw.text((left, 5), title + rank1, fill=(0, 0, 0))
  draw.text((left, bottom + 8), "1", fill=(0, 0, 0))
  draw.text((right - 20, bottom + 8), f"{len(cmc)}", fill=(0, 0, 0))
  return np.asarray(image)


def save_png(image: np.ndarray, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(np.asarray(image, np.uint8)).save(path)
  return path


def save_ranked_lists(query_paths: Sequence[str], gallery_paths: Sequence[str],
                      query_pids, gallery_pids, top: np.ndarray, out_dir: str,
                      *, num_queries: int = 10, k: int = 10,
                      seed: int = 0, images: Optional[list] = None
                      ) -> list[str]:
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

  Returns:
    the written paths.
  """
  rng = np.random.default_rng(seed)
  chosen = np.sort(rng.choice(len(query_paths),
                              min(num_queries, len(query_paths)), False))
  out = []
  for q in chosen:
    idx = top[q, :k]
    image = ranked_list_image(
        query_paths[q], [gallery_paths[g] for g in idx],
        [gallery_pids[g] == query_pids[q] for g in idx])
    if images is not None:
      images.append(image)
    out.append(save_png(image, os.path.join(out_dir, f"ranked_{q}.png")))
  return out

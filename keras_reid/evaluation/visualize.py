"""Ranked-list pictures (image mosaics drawn with Pillow), as PNG.

Each row shows a query and the top of the gallery ranking the metric scored
(`ranking.scored_rankings`: junk and the query's identity seen by its own
camera left out), with the rank, distance, identity and camera under every
image and the query's AP above the row. The uint8 arrays can also go to
TensorBoard with `tf.summary.image`. Curves (CMC, ROC) are matplotlib
figures: keras_reid.evaluation.plots.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image
from PIL import ImageDraw

from keras_reid.data import records
from keras_reid.evaluation import ranking

GREEN, RED, BLUE = (0, 180, 0), (220, 0, 0), (40, 90, 230)

CAPTION_HEIGHT = 36  # three lines of Pillow's default font
TITLE_HEIGHT = 28    # two lines


def _c_numbered(camid: int) -> str:
  return f"c{camid + 1}"  # 0002_c1s1_...: the readers subtract 1


def _two_digit(camid: int) -> str:
  return f"cam {camid + 1:02d}"  # MSMT17's third name field, 01-15


def _view(camid: int) -> str:
  return f"view {camid + 1}"  # CUHK03's third name field, 1-2


def _cam_ab(camid: int) -> str:
  return ("cam_a", "cam_b")[camid] if camid in (0, 1) else f"camid {camid}"


def _as_given(camid: int) -> str:
  return f"cam {camid}"  # a manifest's camid column, unchanged


# How each dataset names a camera, from the reader's 0-based camid: the
# names users see in the dataset's own files and folders.
CAMERA_NAMES: dict[str, Callable[[int], str]] = {
    "market1501": _c_numbered,
    "dukemtmcreid": _c_numbered,
    "synthetic": _c_numbered,
    "msmt17": _two_digit,
    "cuhk03": _view,
    "viper": _cam_ab,
    "prid2011": _cam_ab,
    "cuhk01": _cam_ab,
    "manifest": _as_given,
}


def camera_name(dataset: str, camid: int) -> str:
  """A camera as dataset `dataset` names it ("c3" for Market-1501's camid 2).

  Args:
    dataset: a reader's name; "a+b" (pooled training sets) is evaluated on
      a's query / gallery, so a's names are used.
    camid: the record's 0-based camid, -1 unknown.

  Returns:
    The name, "cam ?" for an unknown camera, "camid N" (0-based) for a
    dataset without an entry in CAMERA_NAMES.
  """
  camid = int(camid)
  if camid == records.UNKNOWN_CAMID:
    return "cam ?"
  name = CAMERA_NAMES.get(dataset.split("+")[0])
  return name(camid) if name else f"camid {camid}"


def format_distance(value: float) -> str:
  """A distance in at most 6 characters (fits under a 64-pixel image)."""
  value = float(value)
  if not np.isfinite(value):
    return "-"
  if value < 10:
    return f"{value:.3f}"
  if value < 1000:
    return f"{value:.1f}"
  return f"{value:.2g}"


def caption(pid, camera: str, *, rank: Optional[int] = None,
            distance: Optional[float] = None) -> str:
  """The text under an image, three lines.

  Args:
    pid: its identity.
    camera: its camera's name (`camera_name`).
    rank: 1-based rank in the query's ranking; None for the query.
    distance: its distance to the query (with `rank`).

  Returns:
    "#rank distance\nid pid\ncamera", or "query\nid pid\ncamera";
    "distractor" for pid 0.
  """
  first = "query" if rank is None else (
      f"#{rank}" + ("" if distance is None
                    else f" {format_distance(distance)}"))
  who = "distractor" if int(pid) == records.DISTRACTOR_PID else f"id {pid}"
  return f"{first}\n{who}\n{camera}"


def ranked_list_image(query, gallery: Sequence, correct: Sequence[bool], *,
                      size: tuple[int, int] = (128, 64),
                      border: int = 4,
                      captions: Optional[Sequence[str]] = None,
                      title: Optional[str] = None) -> np.ndarray:
  """One row: the query (blue border) then its ranked gallery images.

  Args:
    query: uint8 [h, w, 3] array or a path.
    gallery: top-k images (arrays or paths), best first.
    correct: per gallery image, True = same person (green border), False =
      wrong (red border).
    size: (height, width) every image is resized to.
    border: border width in pixels.
    captions: optional text under each image, the query's first (k + 1
      strings of at most three lines, e.g. `caption(...)`).
    title: optional text above the row (at most two lines).

  Returns:
    uint8 [(TITLE_HEIGHT with a title) + size_h + 2*border (+ CAPTION_HEIGHT
    with captions), (k + 1) * (size_w + 2*border) + gap, 3].
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
  top = TITLE_HEIGHT if title is not None else 0
  canvas = Image.new("RGB", (cell_w * (len(gallery) + 1) + gap,
                             top + cell_h + text_h), (255, 255, 255))
  draw = ImageDraw.Draw(canvas)

  def paste(image, x, colour):
    if isinstance(image, (str, os.PathLike)):
      image = Image.open(image).convert("RGB")
    else:
      image = Image.fromarray(np.asarray(image, np.uint8))
    canvas.paste(Image.new("RGB", (cell_w, cell_h), colour), (x, top))
    canvas.paste(image.resize((w, h), Image.BILINEAR),
                 (x + border, top + border))

  xs = [0] + [gap + cell_w * (k + 1) for k in range(len(gallery))]
  paste(query, xs[0], BLUE)
  for x, image, ok in zip(xs[1:], gallery, correct):
    paste(image, x, GREEN if ok else RED)
  if title is not None:
    draw.multiline_text((border, 2), title, fill=(0, 0, 0), spacing=1)
  for x, text in zip(xs, captions or ()):
    draw.multiline_text((x + border, top + cell_h + 1), text, fill=(0, 0, 0),
                        spacing=1)
  return np.asarray(canvas)


def save_png(image: np.ndarray, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(np.asarray(image, np.uint8)).save(path)
  return path


def choose_queries(ap, num_queries: int, seed: int = 0
                   ) -> list[tuple[str, int]]:
  """Which queries to picture: best, median and worst AP, then a sample.

  Only queries the metric scores (AP not NaN) are chosen. Ties in AP go to
  the lower query index.

  Args:
    ap: [Q] per-query AP (`ranking.ScoredRankings.ap`).
    num_queries: how many in all.
    seed: seeds the sample of the others.

  Returns:
    (role, query index) pairs: "best", "median", "worst" (as far as
    `num_queries` allows and they differ), then "sample" ones by index.
  """
  ap = np.asarray(ap, np.float64)
  scored = np.nonzero(~np.isnan(ap))[0]
  if not scored.size or num_queries < 1:
    return []
  order = scored[np.argsort(-ap[scored], kind="stable")]
  chosen: list[tuple[str, int]] = []
  for role, q in (("best", order[0]), ("median", order[len(order) // 2]),
                  ("worst", order[-1])):
    if len(chosen) < num_queries and int(q) not in {c for _, c in chosen}:
      chosen.append((role, int(q)))
  rest = np.setdiff1d(scored, [q for _, q in chosen])
  count = min(num_queries - len(chosen), rest.size)
  if count > 0:
    sample = np.random.default_rng(seed).choice(rest, count, replace=False)
    chosen += [("sample", int(q)) for q in np.sort(sample)]
  return chosen


@dataclasses.dataclass(frozen=True)
class RankedListPicture:
  """One pictured ranking: what it shows, to check against the metric.

  Attributes:
    path: the PNG.
    role: "best", "median", "worst" (AP) or "sample".
    query: the query's index.
    gallery: the pictured gallery indices, best first (`ScoredRankings.top`).
    correct: per pictured gallery image, whether it is shown as a true match.
    ap: the query's AP, as averaged into mAP.
    first_match_rank: 1-based rank of its first true match (the metric's).
  """
  path: str
  role: str
  query: int
  gallery: list[int]
  correct: list[bool]
  ap: float
  first_match_rank: int


def save_ranked_lists(query_paths: Sequence[str], gallery_paths: Sequence[str],
                      query_pids, gallery_pids,
                      query_cameras: Sequence[str],
                      gallery_cameras: Sequence[str],
                      rankings: ranking.ScoredRankings, out_dir: str, *,
                      shown_distances: Optional[np.ndarray] = None,
                      distance_name: str = "distance",
                      note: str = "", num_queries: int = 10, seed: int = 0,
                      images: Optional[list] = None
                      ) -> list[RankedListPicture]:
  """Writes PNGs of the rankings the metric scored, for chosen queries.

  Args:
    query_paths, gallery_paths: image files (the gallery `rankings` indexes).
    query_pids, gallery_pids: identities, written under the images.
    query_cameras, gallery_cameras: camera names (`camera_name`).
    rankings: `ranking.scored_rankings` of these queries and gallery: which
      images, in which order, which are true matches, the AP.
    out_dir: folder for `ranked_<role>_<query index>.png`.
    shown_distances: [Q, k] distances written under the images; default
      rankings.distances (e.g. give their square roots for Euclidean).
    distance_name: what the distances are, in the title.
    note: an extra line for the title (e.g. what the filter left out).
    num_queries: how many queries (`choose_queries`).
    seed: which sampled queries.
    images: if a list, the uint8 row images are appended to it (e.g. for
      `run_evaluation.write_tensorboard_images`).

  Returns:
    One RankedListPicture per written PNG.
  """
  shown = rankings.distances if shown_distances is None else shown_distances
  out = []
  for role, q in choose_queries(rankings.ap, num_queries, seed):
    keep = rankings.top[q] >= 0
    idx = [int(g) for g in rankings.top[q][keep]]
    correct = [bool(c) for c in rankings.is_match[q][keep]]
    captions = [caption(query_pids[q], query_cameras[q])] + [
        caption(gallery_pids[g], gallery_cameras[g], rank=r + 1,
                distance=d) for r, (g, d) in enumerate(zip(idx, shown[q]))]
    first = int(rankings.first_match[q]) + 1
    same_cam = int(rankings.num_same_camera[q])
    what = "random sample" if role == "sample" else f"{role} AP"
    title = (f"{what}: query {q} (id {query_pids[q]}, "
             f"{query_cameras[q]}) | AP {rankings.ap[q]:.3f} | first true "
             f"match at rank {first} | {distance_name}\n"
             f"left out as the metric does: junk and {same_cam} image(s) "
             f"of id {query_pids[q]} from {query_cameras[q]}"
             + (f"; {note}" if note else ""))
    image = ranked_list_image(
        query_paths[q], [gallery_paths[g] for g in idx], correct,
        captions=captions, title=title)
    if images is not None:
      images.append(image)
    path = save_png(image, os.path.join(out_dir, f"ranked_{role}_{q}.png"))
    out.append(RankedListPicture(
        path=path, role=role, query=int(q), gallery=idx, correct=correct,
        ap=float(rankings.ap[q]), first_match_rank=first))
  return out

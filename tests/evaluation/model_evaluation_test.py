"""keras_reid.evaluation.model_evaluation's pictures and projector files.

A fixed embedder (mean colour of each image) on a tiny synthetic dataset:
what evaluate_dataset writes must describe that dataset and that report.
"""

import os

import numpy as np
from PIL import Image
import pytest

from keras_reid.data import datasets
from keras_reid.data import records
from keras_reid.data.synthetic import generator as synthetic
from keras_reid.evaluation import embedders
from keras_reid.evaluation import model_evaluation
from keras_reid.evaluation import reference
from keras_reid.evaluation import report
from keras_reid.evaluation import rerank as rerank_lib
from keras_reid.evaluation import visualize


def _mean_colour(images):
  images = np.asarray(images, np.float32)
  return np.concatenate([images.mean(axis=(1, 2)), images.std(axis=(1, 2))],
                        axis=1)


def test_pictures_and_projector_describe_the_evaluation(tmp_path):
  root = synthetic.generate(str(tmp_path / "synthetic"), num_ids=8, seed=0,
                            image_size=(32, 16))
  dataset = datasets.load_dataset("synthetic", root)
  tensorboard: dict = {}
  projector_dir = str(tmp_path / "tb")
  result = model_evaluation.evaluate_dataset(
      _mean_colour, dataset, image_size=(32, 16), normalization="none",
      batch_size=16, report_dir=str(tmp_path / "report"),
      tensorboard=tensorboard, projector_dir=projector_dir)

  pictures = result["pictures"]
  for key in ("cmc", "roc"):
    assert os.path.exists(pictures[key])
    image = np.asarray(Image.open(pictures[key]).convert("RGB"))
    np.testing.assert_array_equal(image, tensorboard[f"eval/{key}"])
  rows = tensorboard["eval/ranked_lists"]
  assert rows.shape[1] == (visualize.TITLE_HEIGHT + 128 + 8
                           + visualize.CAPTION_HEIGHT)
  assert len(pictures["ranked_lists"]) == rows.shape[0]
  roles = [q["role"] for q in pictures["ranked_list_queries"]]
  assert roles[:3] == ["best", "median", "worst"], roles
  assert set(roles[3:]) == {"sample"}

  info = result["projector"]
  n = len(dataset.query) + len(dataset.gallery)
  assert info["num_points"] == n and not info["sampled"]
  with open(os.path.join(projector_dir, "projector", "metadata.tsv")) as f:
    lines = [line.rstrip("\n").split("\t") for line in f]
  expected = [["query", str(r.pid), str(r.camid), r.path]
              for r in dataset.query] + [
                  ["gallery", str(r.pid), str(r.camid), r.path]
                  for r in dataset.gallery]
  assert lines[1:] == expected
  tensor = np.loadtxt(os.path.join(projector_dir, "projector",
                                   "embeddings.tsv"), delimiter="\t")
  # Point k is image k's embedding, the images read as evaluation reads them.
  images = embedders.load_images(dataset.query + dataset.gallery,
                               image_size=(32, 16), normalization="none")
  np.testing.assert_allclose(tensor, _mean_colour(images), rtol=1e-4,
                             atol=1e-3)


# A hand-built test split (2-D features): the gallery holds images of a
# query's identity from the query's own camera (closest of all), junk and a
# distractor, the cases where a plain nearest-neighbour list and the metric
# disagree. (pid, camid, feature) per image.
_QUERY = [(1, 0, (0.0, 0.0)), (2, 0, (10.0, 0.0)), (3, 1, (20.0, 0.0)),
          (1, 1, (0.5, 5.0)), (2, 0, (10.6, 1.0))]
_GALLERY = [
    (1, 0, (0.1, 0.0)),    # 0: query 0's identity and camera: left out
    (1, 0, (0.2, 0.0)),    # 1: the same
    (-1, 0, (10.1, 0.0)),  # 2: junk, closest to query 1: left out
    (0, 1, (0.35, 0.0)),   # 3: a distractor: query 0's metric rank 1, a miss
    (1, 1, (0.6, 0.0)),    # 4: query 0's true match, rank 2
    (2, 1, (10.4, 0.0)),   # 5: query 1's true match
    (2, 0, (10.2, 0.0)),   # 6: query 1's identity and camera: left out
    (3, 0, (20.3, 0.0)),   # 7: query 2's true match, rank 2
    (3, 1, (20.1, 0.0)),   # 8: query 2's identity and camera: left out
    (4, 2, (20.2, 0.0)),   # 9: query 2's metric rank 1, a miss
    (5, 0, (5.0, 5.0)),    # 10
]
_GALLERY_CODE = 100  # image value of gallery image 0


def _hand_built(tmp_path):
  """(ReidDataset "market1501" of uniform images whose red value codes the
  image, the embedder returning each image's hand-built feature)."""
  table = np.zeros((256, 2), np.float32)

  def write(side, items, code0):
    out = []
    for n, (pid, camid, feature) in enumerate(items):
      path = str(tmp_path / f"{side}_{n}.png")
      Image.new("RGB", (16, 32), (code0 + n, 0, 0)).save(path)
      table[code0 + n] = feature
      out.append(records.Record(path, pid, camid))
    return out

  dataset = records.ReidDataset(
      "market1501", [], write("query", _QUERY, 0),
      write("gallery", _GALLERY, _GALLERY_CODE))

  def embed(images):
    return table[np.rint(np.asarray(images, np.float32)[:, 0, 0, 0])
                 .astype(int)]
  return dataset, embed


def _oracle_distances(multi_query: bool, rerank: bool):
  """[Q, G] distances the protocol ranks by, written independently: query
  features averaged over (pid, camera) with multi_query; the dense
  re-ranking of the junk-free gallery with rerank (junk columns NaN)."""
  qf = np.array([f for _, _, f in _QUERY], np.float64)
  gf = np.array([f for _, _, f in _GALLERY], np.float64)
  if multi_query:
    keys = [(p, c) for p, c, _ in _QUERY]
    qf = np.array([qf[[k == key for k in keys]].mean(0) for key in keys])
  junk = np.array([p == records.JUNK_PID for p, _, _ in _GALLERY])
  if rerank:
    dist = np.full((len(qf), len(gf)), np.nan)
    dist[:, ~junk] = rerank_lib.reference_rerank(qf, gf[~junk])
    return dist
  return ((qf[:, None] - gf[None]) ** 2).sum(-1)


@pytest.mark.parametrize("multi_query,rerank", [(False, False),
                                                (True, False),
                                                (False, True)])
def test_ranked_lists_show_the_ranking_the_metric_scored(tmp_path,
                                                         multi_query, rerank):
  dataset, embed = _hand_built(tmp_path)
  result = model_evaluation.evaluate_dataset(
      embed, dataset, image_size=(32, 16), normalization="none",
      batch_size=4, multi_query=multi_query, rerank=rerank,
      verification=False, report_dir=str(tmp_path / "report"))
  dist = _oracle_distances(multi_query, rerank)
  for row in dist:  # no ties: the order does not hang on float rounding
    finite = row[np.isfinite(row)]
    assert np.unique(finite).size == finite.size
  gp = np.array([p for p, _, _ in _GALLERY])
  gc = np.array([c for _, c, _ in _GALLERY])
  pictured = result["pictures"]["ranked_list_queries"]
  # Every query has a valid true match: all five are pictured.
  assert sorted(p["query"] for p in pictured) == list(range(len(_QUERY)))
  for p in pictured:
    q = p["query"]
    qp, qc, _ = _QUERY[q]
    # The metric's ranking (Market-1501 rules): junk and the query's
    # identity seen by its own camera left out; (distance, index) order.
    valid = (gp != records.JUNK_PID) & ~((gp == qp) & (gc == qc))
    cols = np.nonzero(valid)[0]
    order = cols[np.lexsort((cols, dist[q, cols]))]
    assert p["gallery"] == order[:10].tolist(), q
    assert p["correct"] == (gp[order[:10]] == qp).tolist(), q
    # The metric on this query alone: its Rank-1 and AP.
    keep = gp != records.JUNK_PID
    alone = reference.eval_market1501(dist[q:q + 1][:, keep], [qp], gp[keep],
                                      [qc], gc[keep])
    assert p["correct"][0] == (alone["rank1"] == 1.0), q
    assert p["ap"] == pytest.approx(alone["mAP"]), q
    first = int(np.argmax(gp[order] == qp)) + 1
    assert p["first_match_rank"] == first, q
  if not (multi_query or rerank):
    # Query 0: the nearest images are its own camera's, which the metric
    # ignores; its metric rank 1 is the distractor, a miss.
    q0 = next(p for p in pictured if p["query"] == 0)
    assert q0["gallery"][:2] == [3, 4] and q0["correct"][:2] == [False, True]
    assert q0["first_match_rank"] == 2
  ap = {p["query"]: p["ap"] for p in pictured}
  roles = {p["role"]: p["query"] for p in pictured}
  assert ap[roles["best"]] == max(ap.values())
  assert ap[roles["worst"]] == min(ap.values())
  # The mean of the per-query APs is the report's mAP.
  assert np.mean(list(ap.values())) == pytest.approx(result["mAP"])


def test_verification_report_is_on_the_test_splits_pairs(tmp_path):
  # No training identities at all: the report needs only the test split.
  dataset, embed = _hand_built(tmp_path)
  result = model_evaluation.evaluate_dataset(
      embed, dataset, image_size=(32, 16), normalization="none",
      batch_size=4, test_ids_seen_in_training=False,
      report_dir=str(tmp_path / "report"))
  ver = result["verification"]
  assert ver["split"] == "test" and ver["seen_in_training"] is False
  # Identities 1-5 (not the junk nor the distractor).
  assert ver["num_ids"] == 5
  sir = ver["sir_distance"]
  # Query x gallery pairs as the ranking scores them: the 6 true-match
  # pairs, all 38 different-identity pairs without junk; none of the 6
  # pairs of one identity from one camera.
  assert (sir["num_positive"], sir["num_pairs"]) == (6, 44)
  assert 0.0 <= sir["auc"] <= 1.0
  assert "open-set" in report.roc_title(ver)
  assert os.path.exists(result["pictures"]["roc"])


def test_cosine_threshold_is_the_distance_one_on_unit_features():
  # On unit-norm features |a - b|^2 = 2 - 2 cos(a, b): the same ROC, and
  # the cosine threshold is 1 - d^2 / 2 of the distance threshold (an
  # oracle independent of pair_cosines).
  rng = np.random.default_rng(3)
  qp, qc = rng.integers(1, 8, 40), np.zeros(40, int)
  gp, gc = rng.integers(1, 8, 120), np.ones(120, int)
  centres = rng.normal(size=(8, 16))
  qf = centres[qp] + rng.normal(size=(40, 16))
  gf = centres[gp] + rng.normal(size=(120, 16))
  unit = lambda f: f / np.linalg.norm(f, axis=1, keepdims=True)
  ver = report.split_verification_report(unit(qf), unit(gf), qp, qc, gp, gc)
  dist, cos = ver["sir_distance"], ver["sir_cosine"]
  assert cos["auc"] == pytest.approx(dist["auc"], abs=1e-6)
  assert cos["eer"] == pytest.approx(dist["eer"], abs=1e-6)
  assert cos["threshold"] == pytest.approx(1 - dist["threshold"]**2 / 2,
                                           abs=1e-5)
  assert 0.5 < cos["auc"] <= 1.0 and -1.0 <= cos["threshold"] <= 1.0
  # Cosines ignore the features' norms; distances do not.
  scaled = report.split_verification_report(
      qf * rng.uniform(0.1, 10, (40, 1)), gf * rng.uniform(0.1, 10, (120, 1)),
      qp, qc, gp, gc)
  assert scaled["sir_cosine"]["threshold"] == pytest.approx(
      report.split_verification_report(qf, gf, qp, qc, gp, gc)[
          "sir_cosine"]["threshold"], abs=1e-6)
  assert scaled["sir_distance"]["auc"] != pytest.approx(dist["auc"])


@pytest.mark.parametrize("max_pairs", [300, 10**6])
def test_test_split_pairs_are_the_pairs_the_ranking_scores(max_pairs):
  rng = np.random.default_rng(0)
  qp, qc = rng.integers(1, 10, 50), rng.integers(0, 3, 50)
  gp, gc = rng.integers(-1, 10, 200), rng.integers(0, 3, 200)
  qi, gi, same = report.test_split_pairs(qp, qc, gp, gc, max_pairs=max_pairs)
  pairs = set(zip(qi.tolist(), gi.tolist()))
  assert len(pairs) == qi.size  # no pair twice
  assert (gp[gi] != records.JUNK_PID).all()
  np.testing.assert_array_equal(same, qp[qi] == gp[gi])
  # Never a pair of one identity seen by one camera.
  assert not ((qp[qi] == gp[gi]) & (qc[qi] == gc[gi])).any()
  valid = ((qp[:, None] == gp[None]) & (qc[:, None] != gc[None]))
  different = (qp[:, None] != gp[None]) & (gp[None] != records.JUNK_PID)
  if max_pairs >= valid.size:  # every pair
    assert same.sum() == valid.sum() and (~same).sum() == different.sum()
  else:  # positives up to half, negatives filling the rest
    assert qi.size == max_pairs and same.sum() == max_pairs // 2
  assert np.all(np.diff(qi * 1000 + gi) > 0)  # ordered by (query, gallery)


def test_roc_title_says_open_set_only_for_unseen_identities():
  unseen = report.roc_title({"split": "test", "seen_in_training": False,
                             "num_ids": 316})
  assert unseen == "ROC, open-set: 316 test identities unseen in training"
  for seen in ({"split": "test", "seen_in_training": True, "num_ids": 3},
               {"split": "train", "seen_in_training": True}):
    title = report.roc_title(seen)
    assert "seen identities" in title and "open-set" not in title
  for unknown in ({"split": "test", "seen_in_training": None},
                  {"split": "val_features / val_pids of the .npz"}):
    assert "open-set" not in report.roc_title(unknown)


def test_flip_averaged_features_are_the_mean_with_the_mirror_image(tmp_path):
  root = synthetic.generate(str(tmp_path / "synthetic"), num_ids=4, seed=0,
                            image_size=(32, 16))
  records = datasets.load_dataset("synthetic", root).query

  def first_row(images):  # left-right sensitive: pixel order of row 0
    return np.asarray(images, np.float32)[:, 0, :, 0]

  features = embedders.extract_features(
      embedders.flip_averaged(first_row), records, image_size=(32, 16),
      normalization="none", batch_size=3)
  images = embedders.load_images(records, image_size=(32, 16),
                               normalization="none", dtype=np.float32)
  row = images[:, 0, :, 0]
  np.testing.assert_allclose(features, (row + row[:, ::-1]) / 2, rtol=1e-6)
  assert not np.allclose(features, row)  # the images are not symmetric


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

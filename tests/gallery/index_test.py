"""The gallery index: exact search equals the evaluator, updates, bad files.

Oracle: `keras_reid.evaluation.ranking.features_top_k` (the evaluator's
ranking: squared Euclidean distances, ties by gallery index) on the same
L2-normalised embeddings.
"""

import json
import os

import numpy as np
import pytest

from keras_reid.evaluation import ranking
from keras_reid.gallery import index as gi


def _unit(x):
  x = np.asarray(x, np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _random(n, d, seed):
  return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _clustered(n, d, seed, per_id=5):
  """Identities of `per_id` images around random centres (unit rows)."""
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((n // per_id + 1, d))
  return _unit(centres[np.arange(n) // per_id]
               + 0.5 * rng.standard_normal((n, d))), centres


def _gallery(x, index_type="flat", model_id="model-a", **options):
  g = gi.Gallery.create(model_id, x.shape[1],
                        gi.IndexOptions(index_type=index_type, **options))
  g.add(x, [f"img{i}.jpg" for i in range(len(x))],
        pids=[i // 5 for i in range(len(x))])
  return g


@pytest.mark.parametrize("num_gallery, num_queries, d, k", [
    (300, 40, 16, 10), (57, 9, 128, 57), (5, 3, 8, 8)])
def test_flat_ranking_equals_the_evaluator(num_gallery, num_queries, d, k):
  # Not normalised on purpose: the gallery normalises, the oracle is given
  # the normalised features.
  g_feats = _random(num_gallery, d, 0) * 3
  q_feats = _random(num_queries, d, 1)
  gallery = _gallery(g_feats)
  result = gallery.search(q_feats, k)
  kk = min(k, num_gallery)
  expected = ranking.features_top_k(_unit(q_feats), _unit(g_feats), kk)
  np.testing.assert_array_equal(result.rows[:, :kk], expected)
  sq = ranking.squared_euclidean(_unit(q_feats), _unit(g_feats))
  np.testing.assert_allclose(
      result.distances[:, :kk],
      np.sqrt(np.maximum(np.take_along_axis(sq, expected, 1), 0)), atol=1e-4)
  # Fewer gallery images than k: padded with -1 / NaN.
  assert (result.rows[:, kk:] == -1).all()
  assert np.isnan(result.distances[:, kk:]).all()


@pytest.mark.parametrize("index_type, options", [
    ("ivfpq", dict(nlist=8, pq_m=4, nprobe=8, refine=10)),
    ("hnsw", dict(hnsw_m=16, ef_search=64))])
def test_approximate_indexes_find_the_exact_neighbours(index_type, options):
  x, _ = _clustered(2000, 32, 0)
  q, _ = _clustered(100, 32, 1)
  exact = _gallery(x).search(q, 10)
  approx = _gallery(x, index_type, **options).search(q, 10)
  # Every cell visited (nprobe = nlist) and 100 candidates re-ranked: the
  # ivfpq top-1 is the exact one; HNSW at ef 64 on 2000 points likewise.
  assert np.mean(approx.rows[:, 0] == exact.rows[:, 0]) >= 0.98
  # The distances are exact, recomputed from the stored embeddings.
  same = approx.rows == exact.rows
  np.testing.assert_allclose(approx.distances[same], exact.distances[same],
                             atol=1e-5)


@pytest.mark.parametrize("index_type", gi.INDEX_TYPES)
def test_add_remove_and_reopen_equal_a_fresh_index(index_type, tmp_path):
  x = _random(400, 16, 0)
  q = _random(20, 16, 1)
  options = dict(nlist=4, pq_m=4, nprobe=4, refine=100) \
      if index_type == "ivfpq" else {}
  g = _gallery(x, index_type, **options)
  removed, missing = g.remove(["img3.jpg", "img10.jpg", "nope.jpg"])
  assert removed == ["img3.jpg", "img10.jpg"] and missing == ["nope.jpg"]
  assert len(g) == 398
  keep = np.setdiff1d(np.arange(400), [3, 10])
  g.save(str(tmp_path))
  reopened = gi.Gallery.open(str(tmp_path))
  for gallery in (g, reopened):
    result = gallery.search(q, 5)
    paths = np.array(gallery.metadata.column("path").to_pylist())
    expected = ranking.features_top_k(_unit(q), _unit(x[keep]), 5)
    np.testing.assert_array_equal(paths[result.rows],
                                  np.array([f"img{i}.jpg" for i in keep])[expected])
  # Adding a path again replaces its embedding and metadata.
  replaced = reopened.add(q[:1], ["img0.jpg"], pids=[77], times=["t0"])
  assert replaced == 1 and len(reopened) == 398
  top = reopened.search(q[:1], 1).rows[0, 0]
  row = reopened.metadata.slice(top, 1).to_pylist()[0]
  assert row["path"] == "img0.jpg" and row["pid"] == 77
  assert row["time"] == "t0" and row["camid"] is None
  assert reopened.search(q[:1], 1).distances[0, 0] == pytest.approx(0, abs=1e-3)


def test_save_is_generational_and_manifest_counts(tmp_path):
  x = _random(30, 8, 0)
  g = _gallery(x)
  first = g.save(str(tmp_path))
  g.remove(["img0.jpg"])
  second = g.save(str(tmp_path))
  assert second["generation"] == first["generation"] + 1
  names = sorted(os.listdir(tmp_path))
  assert names == sorted([gi.MANIFEST_FILE, second["files"]["table"]["name"],
                          second["files"]["index"]["name"]])
  assert second["counts"] == {"images": 29, "with_pid": 29, "identities": 6,
                              "with_camera": 0}
  assert second["model_id"] == "model-a" and second["dimension"] == 8
  assert second["index"]["index_type"] == "flat"


def _saved(tmp_path, n=50):
  g = _gallery(_random(n, 8, 0))
  return g.save(str(tmp_path))


@pytest.mark.parametrize("which", ["table", "index"])
def test_truncated_file_is_refused(tmp_path, which):
  manifest = _saved(tmp_path)
  path = tmp_path / manifest["files"][which]["name"]
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  with pytest.raises(gi.IndexFileError) as e:
    gi.Gallery.open(str(tmp_path))
  # (tmp_path's name holds the test's: match the message, not the path.)
  assert (f"{path} has {len(data) // 2} bytes, the manifest {len(data)}: "
          "the file is truncated") in str(e.value)


def test_changed_file_of_the_same_size_is_refused(tmp_path):
  manifest = _saved(tmp_path)
  path = tmp_path / manifest["files"]["index"]["name"]
  data = bytearray(path.read_bytes())
  data[-1] ^= 0xFF
  path.write_bytes(bytes(data))
  with pytest.raises(gi.IndexFileError, match="SHA-256"):
    gi.Gallery.open(str(tmp_path))


def test_other_format_version_and_missing_manifest_are_refused(tmp_path):
  _saved(tmp_path)
  manifest_path = tmp_path / gi.MANIFEST_FILE
  manifest = json.loads(manifest_path.read_text())
  manifest["format_version"] = gi.FORMAT_VERSION + 1
  manifest_path.write_text(json.dumps(manifest))
  with pytest.raises(gi.IndexFileError,
                     match=f"version {gi.FORMAT_VERSION + 1}.*reads version "
                     f"{gi.FORMAT_VERSION}"):
    gi.Gallery.open(str(tmp_path))
  manifest_path.write_text("{\"format_version\": 1, ")
  with pytest.raises(gi.IndexFileError, match="not readable JSON"):
    gi.Gallery.open(str(tmp_path))
  with pytest.raises(gi.IndexFileError, match="has no manifest.json"):
    gi.Gallery.open(str(tmp_path / "elsewhere"))


def test_a_file_disagreeing_with_the_manifest_is_refused(tmp_path):
  # Sizes and hashes updated, contents not: e.g. a manifest edited by hand.
  manifest = _saved(tmp_path)
  manifest["counts"]["images"] = 49
  (tmp_path / gi.MANIFEST_FILE).write_text(json.dumps(manifest))
  with pytest.raises(gi.IndexFileError, match="50 rows.*expects 49 rows"):
    gi.Gallery.open(str(tmp_path))


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_empty_index_search_says_so(tmp_path, index_type):
  g = _gallery(_random(5, 8, 0), index_type)
  g.remove([f"img{i}.jpg" for i in range(5)])
  g.save(str(tmp_path))
  empty = gi.Gallery.open(str(tmp_path))
  assert len(empty) == 0
  with pytest.raises(gi.EmptyIndexError, match="holds no images"):
    empty.search(_random(1, 8, 1), 3)
  fresh = gi.Gallery.create("m", 8)
  with pytest.raises(gi.EmptyIndexError):
    fresh.search(_random(1, 8, 1))


def test_query_of_another_model_is_refused_naming_both():
  g = _gallery(_random(20, 8, 0), model_id="osnet-run-1")
  with pytest.raises(gi.ModelMismatchError,
                     match="dimension 16, the index 8"):
    g.search(_random(1, 16, 1))
  with pytest.raises(gi.ModelMismatchError,
                     match="'resnet-run-2'.*'osnet-run-1'"):
    g.search(_random(1, 8, 1), model_id="resnet-run-2")
  with pytest.raises(gi.ModelMismatchError, match="dimension 4, the index 8"):
    g.add(_random(1, 4, 1), ["x.jpg"])
  # The right model id passes.
  assert g.search(_random(1, 8, 1), 2, model_id="osnet-run-1").rows.shape == (1, 2)


def test_bad_embeddings_and_options_are_refused():
  g = gi.Gallery.create("m", 4)
  with pytest.raises(gi.GalleryError, match="row 1 is all zeros"):
    g.add(np.array([[1, 0, 0, 0], [0, 0, 0, 0]], np.float32), ["a", "b"])
  with pytest.raises(gi.GalleryError, match="row 0 has a non-finite"):
    g.add(np.array([[np.nan, 0, 0, 0]], np.float32), ["a"])
  with pytest.raises(gi.GalleryError, match="listed twice"):
    g.add(np.eye(4, dtype=np.float32)[:2], ["a", "a"])
  with pytest.raises(gi.GalleryError, match="index_type 'lsh'"):
    gi.IndexOptions(index_type="lsh")
  with pytest.raises(gi.GalleryError, match="pq_m=3 does not divide"):
    gi.Gallery.create("m", 8, gi.IndexOptions(index_type="ivfpq", pq_m=3))
  ivf = gi.Gallery.create("m", 8, gi.IndexOptions(index_type="ivfpq"))
  with pytest.raises(gi.GalleryError, match="Add at least 256"):
    ivf.add(_random(10, 8, 0), [str(i) for i in range(10)])
  with pytest.raises(gi.GalleryError, match="only.*can change"):
    g.set_search_options(nlist=3)


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

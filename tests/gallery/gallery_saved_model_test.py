"""`python -m keras_reid.gallery` end to end with a real (tiny) SavedModel.

Oracle: `keras_reid.Embedder.from_saved_model` embeds the same files, and
the evaluator's ranking (`ranking.features_top_k`) orders the gallery for
each query; the command's printed top-k must be that ranking, with those
distances.
"""

import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

import keras_reid
from keras_reid.evaluation import ranking
from keras_reid.gallery import embedding_model
from keras_reid.gallery import index as index_lib
from tests.serving.conftest import exported  # noqa: F401  (the fixture)
from tests.serving.conftest import IMAGE_SIZE

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _gallery_command(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run([sys.executable, "-m", "keras_reid.gallery", *args],
                        cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=600)


def test_build_and_search_equal_the_embedder_and_the_evaluator(
    exported, tmp_path):  # noqa: F811
  folder = tmp_path / "gallery"
  folder.mkdir()
  pixels = exported.images(1, 8, *IMAGE_SIZE)
  paths = []
  for i, image in enumerate(pixels):
    paths.append(str(folder / f"{i}.png"))
    Image.fromarray(image).save(paths[-1])
  (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
  index = str(tmp_path / "index")

  proc = _gallery_command("build", f"--embedder={exported.base}",
                          f"--images={folder}", f"--index={index}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "indexed 8 images (1 skipped)" in proc.stdout
  assert str(folder / "broken.jpg") in proc.stderr
  manifest = index_lib.read_manifest(index)
  assert manifest["model_id"] == \
      embedding_model.identify(exported.path).model_id

  embedder = keras_reid.Embedder.from_saved_model(exported.path)
  gallery_features = embedder.embed(paths)
  stored = index_lib.Gallery.open(index)
  order = [stored.metadata.column("path").to_pylist().index(p) for p in paths]
  np.testing.assert_allclose(stored.embeddings[order], gallery_features,
                             atol=1e-5)

  queries = [paths[2], paths[5]]
  proc = _gallery_command("search", f"--index={index}", "--k=4", *queries)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.splitlines()
  query_features = embedder.embed(queries)
  top = ranking.features_top_k(query_features, gallery_features, 4)
  sq = ranking.squared_euclidean(query_features, gallery_features)
  for q, query in enumerate(queries):
    start = lines.index(f"{query}:") + 1
    printed = [line.split() for line in lines[start:start + 4]]
    assert [p[2] for p in printed] == [paths[j] for j in top[q]]
    # Squared: the oracle's GEMM form leaves ~1e-7 for an image and itself
    # (3e-4 after a square root); 4 printed decimals, d <= 2.
    np.testing.assert_allclose(
        np.square([float(p[1]) for p in printed]), sq[q, top[q]], atol=3e-4)

  # Another model's SavedModel: refused, naming both models, one line.
  other = tmp_path / "other" / "1"
  os.makedirs(other / "variables")
  (other / "saved_model.pb").write_bytes(b"x")
  (other / "variables" / "variables.index").write_bytes(b"y")
  proc = _gallery_command("search", f"--index={index}", f"--embedder={other}",
                          queries[0])
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert manifest["model_id"] in proc.stderr
  assert embedding_model.identify(str(other)).model_id in proc.stderr


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

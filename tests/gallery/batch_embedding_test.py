"""The Apache Beam embedding pipeline on the DirectRunner, with a tiny export.

Oracles: `keras_reid.Embedder.from_saved_model(...).embed(paths)` (the
embeddings, to 1e-5) and `gallery build --images=MANIFEST` (building from
the pipeline's shards gives the same index). A corrupt image is counted
(Beam counter), listed, and does not fail the pipeline.

Needs apache-beam (the environment of requirements-beam.txt: it cannot
share one with requirements.txt's protobuf / pyarrow pins); skipped without.
"""

import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

try:
  import apache_beam as beam
except ImportError:
  if __name__ == "__main__":
    # Bazel runs this file as a script, where pytest's skip is an error:
    # say why nothing runs (the Beam environment runs it: .ci/run).
    print("apache_beam is not installed (requirements-beam.txt): skipped.")
    raise SystemExit(0) from None
  beam = pytest.importorskip("apache_beam")

import keras_reid  # noqa: E402
from keras_reid.gallery import batch_embedding  # noqa: E402
from keras_reid.gallery import commands  # noqa: E402
from keras_reid.gallery import index as index_lib  # noqa: E402
from keras_reid.gallery import shards  # noqa: E402
from tests.serving.conftest import exported  # noqa: E402,F401  (the fixture)
from tests.serving.conftest import IMAGE_SIZE  # noqa: E402

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
DIRECT = ["--runner=DirectRunner"]


def _images(exported, folder, n=9):  # noqa: F811
  """n images (PNG, JPEG and one BMP; one corrupt file) and their manifest."""
  folder.mkdir()
  paths = []
  for i, image in enumerate(exported.images(3, n, *IMAGE_SIZE)):
    paths.append(str(folder / f"{i:02d}.{('png', 'jpg', 'bmp')[i % 3]}"))
    Image.fromarray(image).save(paths[-1])
  broken = folder / "broken.png"
  broken.write_bytes(b"\x89PNG not really")
  rows = ["path,pid,camid,time"] + [
      f"{os.path.basename(p)},{i // 2},{i % 3},t{i}" for i, p in
      enumerate(paths)]
  rows.insert(4, "broken.png,7,1,")
  csv = folder / "manifest.csv"
  csv.write_text("\n".join(rows) + "\n")
  return paths, str(broken), str(csv)


def test_manifest_pipeline_equals_the_embedder_and_a_direct_build(
    exported, tmp_path):  # noqa: F811
  paths, broken, csv = _images(exported, tmp_path / "images")
  output = str(tmp_path / "out" / "emb")
  out = batch_embedding.run(batch_embedding.Settings(
      saved_model=exported.base, output=output, manifest=csv,
      min_batch_size=2, max_batch_size=4, num_shards=3), DIRECT)
  assert (out["embedded"], out["unreadable"]) == (len(paths), 1)
  with open(out["skipped"]) as f:
    assert f.read().split() == [broken]
  read = shards.read_shards(out["shards"])
  assert len(read.files) == 3
  assert read.images.paths == paths  # the manifest's order
  assert read.images.pids == [i // 2 for i in range(len(paths))]
  assert read.images.camids == [i % 3 for i in range(len(paths))]
  assert read.images.times == [f"t{i}" for i in range(len(paths))]
  oracle = keras_reid.Embedder.from_saved_model(exported.path).embed(paths)
  np.testing.assert_allclose(read.embeddings, oracle, atol=1e-5)

  direct, from_shards = str(tmp_path / "direct"), str(tmp_path / "shards")
  commands.run("build", commands.Settings(index=direct,
                                          embedder=exported.base, images=csv))
  commands.run("build", commands.Settings(index=from_shards,
                                          embeddings=out["shards"]))
  a, b = index_lib.Gallery.open(direct), index_lib.Gallery.open(from_shards)
  assert b.metadata.to_pylist() == a.metadata.to_pylist()
  assert (b.model_id, b.model_info) == (a.model_id, a.model_info)
  np.testing.assert_allclose(b.embeddings, a.embeddings, atol=1e-5)
  ra, rb = a.search(oracle[:3], 5), b.search(oracle[:3], 5)
  np.testing.assert_array_equal(rb.rows, ra.rows)
  np.testing.assert_allclose(rb.distances, ra.distances, atol=1e-4)


def test_the_entry_point_embeds_a_glob(exported, tmp_path):  # noqa: F811
  paths, broken, _ = _images(exported, tmp_path / "images", n=5)
  output = str(tmp_path / "out" / "emb")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run(
      [sys.executable, "-m", "keras_reid.gallery.embed_beam",
       f"--saved_model={exported.path}", f"--images={tmp_path}/images/*.[pjb][npm][gp]",
       f"--output={output}", "--runner=DirectRunner",
       "--direct_num_workers=1"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "embedded 5 images" in proc.stdout and "1 unreadable" in proc.stdout
  assert broken in proc.stderr  # logged as it is skipped
  read = shards.read_shards(output + "-*.parquet")
  assert read.images.paths == sorted(paths)  # a folder's order
  assert read.images.pids == [None] * 5
  oracle = keras_reid.Embedder.from_saved_model(exported.path).embed(
      sorted(paths))
  np.testing.assert_allclose(read.embeddings, oracle, atol=1e-5)


def test_bad_settings_fail_before_running(exported, tmp_path):  # noqa: F811
  pipeline = beam.Pipeline(runner="DirectRunner")
  with pytest.raises(ValueError, match="exactly one of --manifest"):
    batch_embedding.build(pipeline, batch_embedding.Settings(
        saved_model=exported.path, output=str(tmp_path / "o")))
  with pytest.raises(ValueError, match="is a folder"):
    batch_embedding.build(pipeline, batch_embedding.Settings(
        saved_model=exported.path, output=str(tmp_path / "o"),
        manifest=str(tmp_path)))
  with pytest.raises(ValueError, match="min <= max"):
    batch_embedding.build(pipeline, batch_embedding.Settings(
        saved_model=exported.path, output=str(tmp_path / "o"),
        images="x/*.jpg", min_batch_size=8, max_batch_size=4))


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

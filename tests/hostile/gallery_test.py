"""Hostile input to `python -m keras_reid.gallery`.

Guaranteed: an index directory that is truncated, altered, of another
format version or not an index at all, an empty index, another model's
--embedder, a CSV with a bad pid, a pending build of other images, paths the
index does not hold: each is one line on stderr naming the file or value
and the way out, exit status 1, no traceback, and the index directory is
left byte for byte as it was. None of these needs the model to be loaded.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keras_reid.gallery import embedding_model
from keras_reid.gallery import index as index_lib
from keras_reid.gallery import ingestion

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run([sys.executable, "-m", "keras_reid.gallery", *args],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=300)


def _one_line_error(proc) -> str:
  assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
  return lines[0]


def _snapshot(folder):
  out = {}
  for parent, _, files in os.walk(folder):
    for name in files:
      with open(os.path.join(parent, name), "rb") as f:
        out[os.path.relpath(os.path.join(parent, name), folder)] = f.read()
  return out


def _model(path, weights=b"a"):
  os.makedirs(path / "variables")
  (path / "saved_model.pb").write_bytes(b"graph")
  (path / "variables" / "variables.index").write_bytes(weights)
  return embedding_model.identify(str(path))


@pytest.fixture
def index(tmp_path):
  """An index of 20 images built by the library with a stand-in model."""
  identity = _model(tmp_path / "export" / "1")
  gallery = index_lib.Gallery.create(
      identity.model_id, 8, model_info={"source": identity.source,
                                        "kind": identity.kind})
  gallery.add(np.random.default_rng(0).standard_normal((20, 8)),
              [str(tmp_path / f"img{i}.jpg") for i in range(20)])
  folder = tmp_path / "index"
  manifest = gallery.save(str(folder))
  return folder, manifest


def test_damaged_or_foreign_index_is_refused_untouched(index, tmp_path):
  folder, manifest = index
  table = folder / manifest["files"]["table"]["name"]
  data = table.read_bytes()
  table.write_bytes(data[:-100])
  before = _snapshot(folder)
  line = _one_line_error(_run("search", f"--index={folder}", "q.jpg"))
  assert f"{table} has {len(data) - 100} bytes, the manifest {len(data)}" in line
  line = _one_line_error(_run("add", f"--index={folder}",
                              f"--images={tmp_path}"))
  assert "is truncated or was replaced" in line
  assert _snapshot(folder) == before
  table.write_bytes(data)

  manifest_path = folder / index_lib.MANIFEST_FILE
  changed = dict(manifest, format_version=99)
  manifest_path.write_text(json.dumps(changed))
  line = _one_line_error(_run("remove", f"--index={folder}", "x.jpg"))
  assert "index format version 99; this keras-reid reads version 1" in line

  line = _one_line_error(_run("search", f"--index={tmp_path / 'export'}",
                              "q.jpg"))
  assert "is not a gallery index: it has no manifest.json" in line


def test_empty_index_and_another_model(index, tmp_path):
  folder, manifest = index
  other = _model(tmp_path / "other" / "1", weights=b"b")
  before = _snapshot(folder)
  line = _one_line_error(_run("search", f"--index={folder}",
                              f"--embedder={other.source}", "q.jpg"))
  assert manifest["model_id"] in line and other.model_id in line
  assert _snapshot(folder) == before

  gallery = index_lib.Gallery.open(str(folder))
  gallery.remove(gallery.metadata.column("path").to_pylist())
  gallery.save(str(folder))
  line = _one_line_error(_run("search", f"--index={folder}", "q.jpg"))
  assert "holds no images" in line


def test_bad_inputs_to_build_and_remove(index, tmp_path):
  folder, _ = index
  before = _snapshot(folder)
  model = str(tmp_path / "export" / "1")
  line = _one_line_error(_run("build", f"--embedder={model}",
                              f"--images={tmp_path}", f"--index={folder}"))
  assert "already holds an index" in line
  line = _one_line_error(_run("remove", f"--index={folder}",
                              str(tmp_path / "never.jpg")))
  assert "none of the 1 paths is in the index" in line
  assert _snapshot(folder) == before

  csv_path = tmp_path / "list.csv"
  csv_path.write_text("path,pid\na.jpg,7\nb.jpg,bob\n")
  line = _one_line_error(_run("build", f"--embedder={model}",
                              f"--images={csv_path}",
                              f"--index={tmp_path / 'new'}"))
  assert f"manifest {str(csv_path)!r} line 3: pid 'bob' is not an integer" \
      in line
  line = _one_line_error(_run("build", f"--embedder={tmp_path / 'nothing'}",
                              f"--images={csv_path}",
                              f"--index={tmp_path / 'new'}"))
  assert "is neither an exported SavedModel" in line

  # A pending build of other images is kept, not mixed in or deleted.
  pending = tmp_path / "new2" / "pending"
  os.makedirs(pending)
  (pending / ingestion.PLAN_FILE).write_text(json.dumps(
      {"model_id": "x", "num_images": 3, "paths_sha256": "0",
       "chunk_size": 1024}))
  (tmp_path / "imgs").mkdir()
  np.save(tmp_path / "imgs" / "not_an_image.npy", np.zeros(1))
  from PIL import Image  # pylint: disable=g-import-not-at-top
  Image.new("RGB", (8, 16)).save(tmp_path / "imgs" / "a.png")
  kept = _snapshot(pending)
  line = _one_line_error(_run("build", f"--embedder={model}",
                              f"--images={tmp_path / 'imgs'}",
                              f"--index={tmp_path / 'new2'}"))
  assert "holds an unfinished build of other images" in line
  assert _snapshot(pending) == kept


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

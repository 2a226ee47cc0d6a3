"""`gallery build --embeddings=GLOB`: indexing embedding shards (no Beam).

Oracle: the same images built directly (`build --images=MANIFEST`, which
embeds them) with a stand-in model (an image's 8x4 thumbnail); shards
written in another order, split in two files, must give the same index:
the same rows (ids, paths, pids, cameras, times) in the same order, the same
embeddings, the same search results. The Beam pipeline that writes real
shards is tested in batch_embedding_test.py.
"""

import os

import numpy as np
from PIL import Image
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keras_reid.gallery import commands
from keras_reid.gallery import embedding_model
from keras_reid.gallery import index as index_lib
from keras_reid.gallery import ingestion
from keras_reid.gallery import shards


def _thumbnails(paths):
  x = np.stack([np.asarray(Image.open(p).convert("RGB").resize((4, 8)),
                           np.float32).reshape(-1) + 1 for p in paths])
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class _PixelModel:
  def __init__(self, identity, batch_size=64):
    self.identity = identity
    self.cosine_threshold = None

  def embed(self, paths):
    return _thumbnails(paths)


@pytest.fixture(autouse=True)
def _model(monkeypatch):
  monkeypatch.setattr(embedding_model, "Model", _PixelModel)


def _saved_model(path, weights=b"weights-a"):
  os.makedirs(os.path.join(path, "variables"), exist_ok=True)
  (path / "saved_model.pb").write_bytes(b"graph")
  (path / "variables" / "variables.index").write_bytes(weights)
  return str(path)


def _manifest(tmp_path, n=7):
  """A CSV of n PNGs, their rows not in path order, some metadata unknown."""
  folder = tmp_path / "images"
  folder.mkdir()
  rng = np.random.default_rng(0)
  rows = ["path,pid,camid,time"]
  for i in reversed(range(n)):
    Image.fromarray(rng.integers(0, 255, (16, 8, 3), np.uint8)).save(
        folder / f"im{i}.png")
    rows.append(f"images/im{i}.png,{i // 2 if i != 3 else ''},{i % 2},"
                f"{'' if i == 5 else f't{i}'}")
  csv = tmp_path / "manifest.csv"
  csv.write_text("\n".join(rows) + "\n")
  return str(csv)


def _write_shards(prefix, model, images_csv, split=(0, 4), order=None):
  """The manifest's images as shards (rows shuffled, two files)."""
  os.makedirs(os.path.dirname(prefix), exist_ok=True)
  identity = embedding_model.identify(model)
  listed = ingestion.list_images(images_csv)
  vectors = _thumbnails(listed.paths)
  schema = shards.schema(vectors.shape[1], identity.model_id, identity.source)
  order = np.random.default_rng(1).permutation(len(listed)) if order is None \
      else order
  parts = np.split(order, [split[1]])
  for s, part in enumerate(parts):
    table = shards.table(schema, part.tolist(), listed.select(part.tolist()),
                         vectors[part])
    pq.write_table(table, f"{prefix}-{s:05d}-of-{len(parts):05d}.parquet")
  return f"{prefix}-*.parquet"


def _index(path):
  gallery = index_lib.Gallery.open(path)
  return gallery, gallery.metadata.to_pylist()


def test_building_from_shards_equals_building_from_the_images(
    tmp_path, capsys):
  model = _saved_model(tmp_path / "export" / "1")
  csv = _manifest(tmp_path)
  pattern = _write_shards(str(tmp_path / "out" / "emb"), model, csv)
  direct, from_shards = str(tmp_path / "direct"), str(tmp_path / "shards")
  commands.run("build", commands.Settings(index=direct, embedder=model,
                                          images=csv))
  commands.run("build", commands.Settings(index=from_shards,
                                          embeddings=pattern))
  assert "indexed 7 images" in capsys.readouterr().out
  a, rows_a = _index(direct)
  b, rows_b = _index(from_shards)
  assert rows_b == rows_a  # row ids, paths, pids, cameras, times, in order
  assert [r["pid"] for r in rows_b] == [3, 2, 2, None, 1, 0, 0]
  assert [r["time"] for r in rows_b][:3] == ["t6", None, "t4"]
  np.testing.assert_array_equal(b.embeddings, a.embeddings)
  assert (b.model_id, b.model_info) == (a.model_id, a.model_info)
  queries = a.embeddings[[0, 4]]
  ra, rb = a.search(queries, 5), b.search(queries, 5)
  np.testing.assert_array_equal(rb.rows, ra.rows)
  np.testing.assert_array_equal(rb.distances, ra.distances)


def test_a_glob_s_shards_come_back_in_path_order(tmp_path):
  model = _saved_model(tmp_path / "export" / "1")
  csv = _manifest(tmp_path, n=5)
  identity = embedding_model.identify(model)
  listed = ingestion.list_images(csv)
  schema = shards.schema(96, identity.model_id, identity.source)
  pq.write_table(shards.table(schema, [None] * 5, listed,
                              _thumbnails(listed.paths)),
                 str(tmp_path / "g-00000-of-00001.parquet"))
  read = shards.read_shards(str(tmp_path / "g-*.parquet"))
  assert read.images.paths == sorted(listed.paths)
  np.testing.assert_array_equal(read.embeddings,
                                _thumbnails(sorted(listed.paths)))


def test_bad_shards_are_refused_naming_the_file(tmp_path):
  model = _saved_model(tmp_path / "export" / "1")
  other = _saved_model(tmp_path / "other" / "1", weights=b"weights-b")
  csv = _manifest(tmp_path)
  pattern = _write_shards(str(tmp_path / "a" / "emb"), model, csv)
  with pytest.raises(ValueError, match="matches no file"):
    shards.read_shards(str(tmp_path / "nothing-*.parquet"))
  # An --embedder of another model than the shards'.
  with pytest.raises(index_lib.ModelMismatchError,
                     match=embedding_model.identify(other).model_id):
    commands.run("build", commands.Settings(
        index=str(tmp_path / "i1"), embeddings=pattern, embedder=other))
  # --embeddings is build's only, and not with --images.
  with pytest.raises(ValueError, match="input of build only"):
    commands.run("build", commands.Settings(
        index=str(tmp_path / "i2"), embeddings=pattern, images=csv))
  # Shards of two models.
  _write_shards(str(tmp_path / "a" / "emc"), other, csv)
  with pytest.raises(ValueError, match="different models"):
    shards.read_shards(str(tmp_path / "a" / "em*.parquet"))
  # The same image in two outputs.
  _write_shards(str(tmp_path / "a" / "emd"), model, csv)
  with pytest.raises(ValueError, match="twice"):
    shards.read_shards(str(tmp_path / "a" / "em[bd]-*.parquet"))
  # A truncated shard.
  first = sorted(str(p) for p in (tmp_path / "a").glob("emb-*"))[0]
  data = open(first, "rb").read()
  with open(first, "wb") as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(ValueError, match="truncated") as e:
    shards.read_shards(pattern)
  assert first in str(e.value)
  # A Parquet file that is not a shard.
  plain = str(tmp_path / "plain-00000.parquet")
  pq.write_table(pa.table({"path": ["x"]}), plain)
  with pytest.raises(ValueError, match="keras_reid.model_id"):
    shards.read_shards(plain)


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

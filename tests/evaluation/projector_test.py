"""Tests for keras_reid.evaluation.projector (TensorBoard projector files)."""

import os

import numpy as np
from PIL import Image
import pytest
from google.protobuf import text_format
from tensorboard.plugins.projector import projector_config_pb2

from keras_reid.evaluation import projector
from keras_reid.evaluation import report


def _images(folder, n, prefix):
  paths = []
  for i in range(n):
    path = os.path.join(folder, f"{prefix}{i}.png")
    Image.new("RGB", (16, 32), (10 * i, 100, 200)).save(path)
    paths.append(path)
  return paths


def _read(out_dir):
  with open(os.path.join(out_dir, projector.CONFIG_FILE)) as f:
    config = text_format.Parse(f.read(), projector_config_pb2.ProjectorConfig())
  embedding = config.embeddings[0]
  tensor = np.loadtxt(os.path.join(out_dir, embedding.tensor_path),
                      delimiter="\t", ndmin=2)
  with open(os.path.join(out_dir, embedding.metadata_path)) as f:
    rows = [line.rstrip("\n").split("\t") for line in f]
  return embedding, tensor, rows


@pytest.mark.parametrize("max_points", [100, 7])
def test_projector_files_match_the_points(tmp_path, max_points):
  q, g = 4, 6
  # Each embedding encodes its point: (index, pid, camera).
  pids = np.array([1, 2, 3, 4, 1, 2, 3, 4, 5, 0])
  cams = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
  feats = np.stack([np.arange(q + g), pids, cams], 1).astype(np.float32)
  paths = _images(str(tmp_path), q + g, "img")
  out = str(tmp_path / "tb")
  info = projector.write_projector(
      out, feats[:q], feats[q:], pids[:q], pids[q:], cams[:q], cams[q:],
      query_paths=paths[:q], gallery_paths=paths[q:], max_points=max_points)
  embedding, tensor, rows = _read(out)
  n = min(max_points, q + g)
  assert info["num_points"] == n and info["num_available"] == q + g
  assert info["sampled"] == (max_points < q + g)
  assert list(embedding.tensor_shape) == [n, 3] and tensor.shape == (n, 3)
  assert rows[0] == ["set", "pid", "camera", "path"] and len(rows) == n + 1
  for (index, pid, cam), row in zip(tensor, rows[1:]):
    index = int(index)
    assert row == ["query" if index < q else "gallery", str(int(pid)),
                   str(int(cam)), paths[index]]
  side = int(np.ceil(np.sqrt(n)))
  sprite = np.asarray(Image.open(os.path.join(out, embedding.sprite.image_path)))
  assert sprite.shape == (side * 32, side * 16, 3)
  assert list(embedding.sprite.single_image_dim) == [16, 32]
  # The k-th cell holds the k-th point's image (its red channel is 10 * i).
  for k, (index, _, _) in enumerate(tensor):
    cell = sprite[(k // side) * 32 + 16, (k % side) * 16 + 8]
    assert tuple(cell) == (10 * int(index), 100, 200)


def test_projector_without_images_has_no_sprite(tmp_path):
  feats = np.eye(3, dtype=np.float32)
  info = projector.write_projector(str(tmp_path), feats[:1], feats[1:], [1],
                                   [1, 2], [0], [1, 1])
  embedding, tensor, rows = _read(str(tmp_path))
  assert info["sprite"] is None and not embedding.sprite.image_path
  np.testing.assert_allclose(tensor, np.eye(3))
  assert [r[:3] for r in rows[1:]] == [["query", "1", "0"],
                                       ["gallery", "1", "1"],
                                       ["gallery", "2", "1"]]
  with pytest.raises(ValueError, match="one of each"):
    projector.write_projector(str(tmp_path), feats, feats, [1], [1], [0], [0])


def test_feature_file_evaluation_writes_the_projector(tmp_path):
  rng = np.random.default_rng(0)
  arrays = dict(query_features=rng.normal(size=(3, 4)),
                gallery_features=rng.normal(size=(5, 4)),
                query_pids=np.array([1, 2, 3]),
                gallery_pids=np.array([1, 2, 3, 4, 5]),
                query_camids=np.zeros(3, int), gallery_camids=np.ones(5, int))
  path = str(tmp_path / "feats.npz")
  np.savez(path, **arrays)
  result = report.evaluate_feature_file(
      path, output_json=str(tmp_path / "eval.json"), pictures=False,
      verification=False, projector=True)
  out = os.path.join(str(tmp_path / "eval_report"), "projector")
  assert result["projector"]["dir"] == out and result["projector"][
      "num_points"] == 8
  _, tensor, rows = _read(out)
  np.testing.assert_allclose(tensor, np.concatenate(
      [arrays["query_features"], arrays["gallery_features"]]), rtol=1e-5)
  assert [r[1:3] for r in rows[1:]] == [
      [str(p), str(c)] for p, c in zip(
          np.r_[arrays["query_pids"], arrays["gallery_pids"]],
          np.r_[arrays["query_camids"], arrays["gallery_camids"]])]


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

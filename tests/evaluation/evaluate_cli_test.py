"""End-to-end test of `python -m keras_reid.evaluate --features=...`."""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from keras_reid.data import records
from keras_reid.evaluation import embedders
from keras_reid.evaluation import feature_files
from keras_reid.evaluation import protocols
from keras_reid.evaluation import ranking
from keras_reid.evaluation import reference
from keras_reid.evaluation import report as report_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _features(path, **overrides):
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(5, 8))
  q_pids = np.array([1, 2, 3, 4, 4])
  g_pids = np.array([1, 1, 2, 3, 4, 0, -1, 2])
  arrays = dict(
      query_features=centres[q_pids] + .8 * rng.normal(size=(5, 8)),
      gallery_features=centres[np.maximum(g_pids, 0)]
      + .8 * rng.normal(size=(8, 8)),
      query_pids=q_pids, gallery_pids=g_pids,
      query_camids=np.array([0, 0, 1, 1, 2]),
      gallery_camids=np.array([1, 0, 1, 1, 1, 0, 2, 0]))
  arrays.update(overrides)
  np.savez(path, **arrays)
  return arrays


@pytest.mark.slow
def test_features_end_to_end(tmp_path):
  arrays = _features(tmp_path / "f.npz")
  out = tmp_path / "out" / "eval.json"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run(
      [sys.executable, "-m", "keras_reid.evaluate",
       f"--features={tmp_path / 'f.npz'}", f"--output_json={out}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  report = json.loads(out.read_text())
  want = reference.evaluate_features(*[arrays[k] for k in
                                       feature_files.FEATURE_KEYS])
  for key in ranking.METRIC_KEYS:
    assert report[key] == pytest.approx(want[key]), key
  assert len(report["cmc"]) == 50
  # pid 3 and the camera-1 image of pid 4 have only same-camera matches.
  assert report["num_queries"] == want["num_queries"] == 3
  assert report["num_skipped_queries"] == 2
  assert json.loads(proc.stdout.strip().splitlines()[-1])["mAP"] == \
      pytest.approx(want["mAP"])


@pytest.mark.slow
def test_features_refuse_flags_they_would_ignore(tmp_path):
  _features(tmp_path / "f.npz")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run(
      [sys.executable, "-m", "keras_reid.evaluate",
       f"--features={tmp_path / 'f.npz'}", "--dataset=viper", "--split=3",
       f"--output_json={tmp_path / 'x.json'}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert "--dataset, --split would be ignored" in proc.stderr
  assert not (tmp_path / "x.json").exists()


def test_feature_file_with_the_cuhk03_metric(tmp_path):
  arrays = _features(tmp_path / "f.npz")
  result = report_lib.evaluate_feature_file(
      str(tmp_path / "f.npz"), cuhk03_metric=True, verification=False,
      pictures=False)
  want = protocols.evaluate_cuhk03(*[arrays[k] for k in
                                     feature_files.FEATURE_KEYS])
  assert result["protocol"] == "single_query+cuhk03_single_gallery_shot"
  for key in ranking.METRIC_KEYS:
    assert result[key] == pytest.approx(want[key]), key
  with pytest.raises(ValueError, match="--rerank"):
    feature_files.evaluate_arrays(arrays, cuhk03_metric=True, rerank=True)


def test_missing_key_and_shape_errors(tmp_path):
  path = tmp_path / "bad.npz"
  np.savez(path, query_features=np.zeros((2, 3)))
  with pytest.raises(ValueError, match="gallery_features"):
    feature_files.load_feature_file(str(path))
  _features(path, query_pids=np.array([1, 2]))
  with pytest.raises(ValueError, match=r"query_pids has shape \(2,\)"):
    feature_files.load_feature_file(str(path))
  _features(path, gallery_features=np.zeros((8, 4)))
  with pytest.raises(ValueError, match="dimension"):
    feature_files.load_feature_file(str(path))


def test_evaluate_arrays_multi_query_protocol(tmp_path):
  arrays = _features(tmp_path / "f.npz")
  result = feature_files.evaluate_arrays(arrays, multi_query=True, max_rank=5)
  assert result["protocol"] == "multi_query"
  assert len(result["cmc"]) == 5


@pytest.mark.slow
def test_evaluate_embedder_on_generated_images(tmp_path):
  colours = {1: (200, 30, 30), 2: (30, 200, 30), 3: (30, 30, 200)}
  recs = {"query": [], "gallery": []}
  for pid, colour in colours.items():
    for split, cam in (("query", 0), ("gallery", 1), ("gallery", 0)):
      path = tmp_path / f"{pid}_{split}_{cam}.png"
      Image.new("RGB", (16, 32), colour).save(path)
      recs[split].append(records.Record(str(path), pid, cam))
  dataset = records.ReidDataset("tiny", [], recs["query"], recs["gallery"])
  calls = []

  def embed(images):  # mean colour per channel: [B, 3]
    calls.append(images.shape)
    return np.asarray(images).mean(axis=(1, 2))

  result = embedders.evaluate_embedder(embed, dataset, image_size=(32, 16),
                                     normalization="none", batch_size=2,
                                     max_rank=3)
  assert tuple(calls[0]) == (2, 32, 16, 3)
  assert result["num_queries"] == 3 and result["num_skipped_queries"] == 0
  assert result["rank1"] == 1.0 and result["mAP"] == 1.0
  assert result["dataset"] == "tiny"


def test_parse_splits():
  assert report_lib.parse_splits("0-3") == [0, 1, 2, 3]
  assert report_lib.parse_splits("1-2,7") == [1, 2, 7]
  with pytest.raises(ValueError, match="split indices"):
    report_lib.parse_splits("a-b")


def test_evaluate_feature_files_average_and_verification(tmp_path):
  a = _features(tmp_path / "s0.npz")
  rng = np.random.default_rng(1)
  val_pids = np.repeat(np.arange(4), 3)
  centres = rng.normal(size=(4, 8))
  _features(tmp_path / "s1.npz", query_features=a["query_features"] + 3.0,
            val_features=centres[val_pids] + .1 * rng.normal(size=(12, 8)),
            val_pids=val_pids)
  paths = [str(tmp_path / "s0.npz"), str(tmp_path / "s1.npz")]
  out = tmp_path / "avg.json"
  result = report_lib.evaluate_feature_file(paths, output_json=str(out))
  per = [report_lib.evaluate_feature_file(
      p, output_json=str(tmp_path / "x.json"), pictures=False) for p in paths]
  assert result["num_splits"] == 2
  assert result["mAP"] == pytest.approx((per[0]["mAP"] + per[1]["mAP"]) / 2)
  assert result["mAP_std"] == pytest.approx(abs(per[0]["mAP"] -
                                                per[1]["mAP"]) / 2)
  assert json.loads(out.read_text())["features"] == paths
  assert os.path.exists(result["pictures"]["cmc"])
  # Only the second file has val_* arrays: well separated ids -> EER 0.
  assert "verification" not in per[0]
  assert per[1]["verification"]["sir_distance"]["eer"] == pytest.approx(0.0)
  assert per[1]["verification"]["sir_distance"]["auc"] == pytest.approx(1.0)


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

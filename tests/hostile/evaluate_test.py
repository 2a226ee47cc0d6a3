"""Hostile input to the evaluation: `python -m keras_reid.evaluate --features`.

Guaranteed, for features and ids from any model or file:
  * the scores are fractions in [0, 1] and equal those of the float64
    reference (`reference.evaluate_features(..., dtype=np.float64)`, exact
    differences) for features of any finite float32 magnitude (about 1e20,
    about 1e-20) and for features sharing a large common offset (every
    feature + 100; near-identical features of a barely trained model), where
    a float32 a^2 + b^2 - 2ab overflows or cancels;
  * the rerank and CUHK03 protocols give the same scores with and without
    a common offset;
  * non-finite features, feature arrays without dimensions, and pids /
    camids that are not integers in int64 range (1e30 as a float, 2**64 - 1
    as uint64, 1.5) are refused with a ValueError naming the array, the row
    or value and the fix, by the library (`ranking.evaluate_features`,
    `feature_files.evaluate_arrays`, `feature_files.load_feature_file`) and
    by the command line as one "error: ..." line with exit status 1;
  * an array whose .npy header declares more bytes than the archive holds
    (36 TiB in 1.6 KB) is refused before NumPy allocates it, and an array of
    Python objects without np.load's allow_pickle hint, naming the file and
    the array;
  * a run directory whose config.json is not a JSON object is one line
    naming that file.

For a run (`--workdir`) whose final checkpoint is cut short (its data file
truncated): the model is restored from the previous checkpoint the step's
CheckpointManager kept, with exactly the weights of that checkpoint, and
the command line says so in one line naming the bad file and the checkpoint
used instead.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from keras_reid import runs
from keras_reid.evaluation import feature_files
from keras_reid.evaluation import ranking
from keras_reid.evaluation import reference
from tests.hostile import tiny_run

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _problem(seed=0, num_ids=40, dim=32, noise=0.35):
  """Features around identity centres; every query has true matches.

  Returns the six arrays of a features file (float64 features, which each
  test scales and casts to float32), two cameras, distractors and junk.
  """
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_ids + 1, dim))
  q_pids = np.arange(1, num_ids + 1)
  g_pids = np.concatenate([np.repeat(q_pids, 3), np.zeros(10, np.int64),
                           np.full(5, -1)])
  q_feat = centres[q_pids] + noise * rng.normal(size=(num_ids, dim))
  g_feat = (centres[np.maximum(g_pids, 0)]
            + noise * rng.normal(size=(g_pids.size, dim)))
  return dict(query_features=q_feat, gallery_features=g_feat,
              query_pids=q_pids, gallery_pids=g_pids,
              query_camids=np.zeros(num_ids, np.int64),
              gallery_camids=np.ones(g_pids.size, np.int64))


def _transformed(arrays, scale=1.0, offset=0.0):
  out = dict(arrays)
  for key in ("query_features", "gallery_features"):
    out[key] = (scale * arrays[key] + offset).astype(np.float32)
  return out


def _reference(arrays):
  return reference.evaluate_features(
      *[arrays[k] for k in feature_files.FEATURE_KEYS], dtype=np.float64)


def _assert_same_scores(got, want):
  for key in (*ranking.METRIC_KEYS, "cmc"):
    values = np.asarray(got[key], np.float64)
    assert np.all((values >= 0) & (values <= 1)), (key, got[key])
    np.testing.assert_allclose(got[key], want[key], rtol=1e-12, err_msg=key)
  assert got["num_queries"] == want["num_queries"]


def _write(path, arrays):
  np.savez(path, **arrays)
  return str(path)


@pytest.mark.parametrize("scale,offset", [
    (1e20, 0.0),     # squared distances ~1e40: beyond float32
    (1e-20, 0.0),    # squared distances ~1e-40: below float32's normals
    (1e18, 1e20),    # both
    (0.01, 100.0),   # distances ~1e-3 under norms ~1e4: cancellation
])
def test_scores_equal_the_float64_reference(scale, offset):
  arrays = _transformed(_problem(), scale, offset)
  want = _reference(arrays)
  assert want["rank1"] > 0.9  # a well separated problem at every scale
  args = [arrays[k] for k in feature_files.FEATURE_KEYS]
  _assert_same_scores(ranking.evaluate_features(*args), want)
  _assert_same_scores(feature_files.evaluate_arrays(arrays), want)
  np.testing.assert_array_equal(
      ranking.features_top_k(args[0], args[1][args[3] != -1], 5),
      np.argsort(reference.distance_matrix(args[0], args[1][args[3] != -1],
                                           dtype=np.float64),
                 axis=1, kind="stable")[:, :5])


def test_identical_images_of_a_barely_trained_model_rank_first():
  # An untrained network maps every image near one point: the features are
  # a shared vector plus differences 1e-4 of its size. The gallery holds a
  # copy of every query image (another camera) besides other images.
  rng = np.random.default_rng(1)
  num_ids, dim = 50, 64
  shared = 10.0 * rng.normal(size=dim)
  q_feat = shared + 1e-3 * rng.normal(size=(num_ids, dim))
  others = shared + 1e-3 * rng.normal(size=(2 * num_ids, dim))
  arrays = dict(
      query_features=q_feat.astype(np.float32),
      gallery_features=np.concatenate([q_feat, others]).astype(np.float32),
      query_pids=np.arange(1, num_ids + 1),
      gallery_pids=np.concatenate([np.arange(1, num_ids + 1),
                                   np.tile(np.arange(1, num_ids + 1), 2)]),
      query_camids=np.zeros(num_ids, np.int64),
      gallery_camids=np.ones(3 * num_ids, np.int64))
  want = _reference(arrays)
  assert want["rank1"] == 1.0
  got = ranking.evaluate_features(
      *[arrays[k] for k in feature_files.FEATURE_KEYS])
  _assert_same_scores(got, want)


def test_rerank_and_cuhk03_protocols_ignore_a_common_offset():
  base = _transformed(_problem(seed=2, noise=0.6))
  shifted = _transformed(_problem(seed=2, noise=0.6), offset=1e4)
  # float32 holds base + 1e4 to 1e-3: compare with the base features
  # rounded the same way.
  base = dict(base)
  for key in ("query_features", "gallery_features"):
    base[key] = (shifted[key].astype(np.float64) - 1e4).astype(np.float32)
  for options in (dict(rerank=True), dict(cuhk03_metric=True)):
    got = feature_files.evaluate_arrays(shifted, **options)
    want = feature_files.evaluate_arrays(base, **options)
    for key in ranking.METRIC_KEYS:
      assert 0 <= got[key] <= 1
      assert got[key] == pytest.approx(want[key], abs=1e-12), (options, key)
  assert want["rank1"] > 0.5


def _bad_arrays():
  """(name, arrays, message) for every refused input."""
  good = _transformed(_problem())
  cases = []

  def case(name, message, **changes):
    arrays = dict(good)
    arrays.update(changes)
    cases.append(pytest.param(arrays, message, id=name))

  q = good["query_features"].copy()
  q[3, 5] = np.nan
  case("nan_query", r"query_features contains NaN/inf at row 3",
       query_features=q)
  g = good["gallery_features"].copy()
  g[7, 0] = -np.inf
  case("inf_gallery", r"gallery_features contains NaN/inf at row 7",
       gallery_features=g)
  pids = good["gallery_pids"].astype(np.float64)
  pids[[0, 1, 2]] = 1e30
  pids[[3, 4, 5]] = 2e30  # both would become INT64_MIN and merge
  case("float_pid_1e30",
       r"gallery_pids: 1e\+30 is not an integer id in int64 range \(at "
       r"index 0\)", gallery_pids=pids)
  pids = good["query_pids"].astype(np.uint64)
  pids[4] = 2**64 - 1  # would become the junk id -1
  case("uint64_pid", r"query_pids: 18446744073709551615 is not an integer "
       r"id in int64 range \(at index 4\)", query_pids=pids)
  cams = good["query_camids"].astype(np.float64)
  cams[2] = 1.5
  case("fractional_camid", r"query_camids: 1\.5 is not an integer id in "
       r"int64 range \(at index 2\)", query_camids=cams)
  cams = good["gallery_camids"].astype(np.float64)
  cams[1] = np.nan
  case("nan_camid", r"gallery_camids: nan is not an integer id in int64 "
       r"range \(at index 1\)", gallery_camids=cams)
  case("string_pids", r"query_pids must hold integer ids, got dtype <U",
       query_pids=good["query_pids"].astype(str))
  case("no_dimensions", r"query_features has no feature dimensions",
       query_features=np.zeros((good["query_pids"].size, 0), np.float32),
       gallery_features=np.zeros((good["gallery_pids"].size, 0),
                                 np.float32))
  return cases


@pytest.mark.parametrize("arrays,message", _bad_arrays())
def test_refused_by_the_library(arrays, message, tmp_path):
  args = [arrays[k] for k in feature_files.FEATURE_KEYS]
  with pytest.raises(ValueError, match=message):
    ranking.evaluate_features(*args)
  for options in (dict(), dict(rerank=True), dict(cuhk03_metric=True),
                  dict(multi_query=True)):
    with pytest.raises(ValueError, match=message):
      feature_files.evaluate_arrays(arrays, **options)
  path = _write(tmp_path / "f.npz", arrays)
  with pytest.raises(ValueError, match=re.escape(path) + ": " + message):
    feature_files.load_feature_file(path)


def _evaluate_cli(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run(
      [sys.executable, "-m", "keras_reid.evaluate", "--nopictures",
       "--noverification", *args],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_refused_by_the_command_line_in_one_line(tmp_path):
  arrays = _transformed(_problem())
  arrays["gallery_pids"] = arrays["gallery_pids"].astype(np.float64)
  arrays["gallery_pids"][:3] = 1e30
  path = _write(tmp_path / "f.npz", arrays)
  proc = _evaluate_cli(f"--features={path}",
                       f"--output_json={tmp_path / 'x.json'}")
  assert proc.returncode == 1, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith(f"error: {path}: gallery_pids: 1e+30 is not an "
                             "integer id in int64 range (at index 0)")
  assert not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_huge_features_scored_by_the_command_line(tmp_path):
  arrays = _transformed(_problem(), scale=1e20)
  path = _write(tmp_path / "f.npz", arrays)
  proc = _evaluate_cli(f"--features={path}",
                       f"--output_json={tmp_path / 'x.json'}")
  assert proc.returncode == 0, proc.stderr
  with open(tmp_path / "x.json") as f:
    _assert_same_scores(json.load(f), _reference(arrays))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  return tiny_run.trained(str(tmp_path_factory.getbasetemp() / "tiny_run"))


def _weights(model):
  return [w.numpy() for w in model.weights]


@pytest.mark.slow
def test_truncated_final_checkpoint_falls_back_to_the_previous(tiny,
                                                               tmp_path):
  # Imported here: the tests above stay TensorFlow-free.
  from keras_reid.models import restore  # pylint: disable=g-import-not-at-top
  broken = tiny_run.copy(tiny, str(tmp_path / "run"))
  bad = tiny_run.truncate(tiny_run.data_file(broken, 4))
  model, config = restore.restore_training_model(broken)
  num_classes = runs.Progress.load(tiny).last.num_classes
  step2 = os.path.join(tiny, tiny_run.STEP2)
  previous = _weights(restore.rebuild_model(config, num_classes,
                                            os.path.join(step2, "ckpt-2")))
  final = _weights(restore.rebuild_model(config, num_classes,
                                         os.path.join(step2, "ckpt-4")))
  got = _weights(model)
  assert all(np.array_equal(a, b) for a, b in zip(got, previous))
  assert not all(np.array_equal(a, b) for a, b in zip(got, final))

  out = tmp_path / "eval.json"
  proc = _evaluate_cli(f"--workdir={broken}", f"--output_json={out}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  said = [line for line in proc.stderr.splitlines() if "unreadable" in line]
  assert len(said) == 1, proc.stderr[-3000:]
  assert (f"Checkpoint file {bad} is unreadable (cut short" in said[0]
          and "using the previous checkpoint "
          f"{os.path.join(broken, tiny_run.STEP2, 'ckpt-2')} (iteration 2) "
          "instead." in said[0]), said
  assert "Traceback" not in proc.stderr
  with open(out) as f:
    assert 0 <= json.load(f)["rank1"] <= 1


def _npz_with_header(path, key, shape, dtype="<f4"):
  """A features .npz whose `key` member's header declares `shape` over 64
  bytes of data; the other arrays are those of a small valid problem."""
  arrays = _transformed(_problem())
  with zipfile.ZipFile(path, "w") as archive:
    for name, value in arrays.items():
      member = io.BytesIO()
      if name == key:
        np.lib.format.write_array_header_1_0(member, {
            "descr": dtype, "fortran_order": False, "shape": shape})
        member.write(b"\0" * 64)
      else:
        np.save(member, value)
      archive.writestr(f"{name}.npy", member.getvalue())
  return str(path)


def test_a_header_declaring_terabytes_is_refused_before_allocating(tmp_path):
  # 2^20 x 9 * 2^20 float32: 36 TiB declared, 64 bytes held.
  path = _npz_with_header(tmp_path / "huge.npz", "query_features",
                          (2**20, 9 * 2**20))
  with pytest.raises(ValueError, match=re.escape(
      f"{path}: query_features declares shape (1048576, 9437184) of float32 "
      "(36.0 TiB) but the archive holds 64 bytes for it")):
    feature_files.load_feature_file(path)
  # A header short of its data by one element is refused too.
  path = _npz_with_header(tmp_path / "short.npz", "gallery_pids", (9,), "<i8")
  with pytest.raises(ValueError, match=r"gallery_pids declares shape \(9,\) "
                     r"of int64 \(72 bytes\) but the archive holds 64 bytes"):
    feature_files.load_feature_file(path)


def test_object_arrays_are_refused_naming_the_file(tmp_path):
  arrays = _transformed(_problem())
  arrays["query_pids"] = arrays["query_pids"].astype(object)
  path = _write(tmp_path / "objects.npz", arrays)
  with pytest.raises(ValueError, match=re.escape(
      f"{path}: query_pids holds Python objects (dtype object)")):
    feature_files.load_feature_file(path)


@pytest.mark.slow
def test_terabyte_header_is_one_line_on_the_command_line(tmp_path):
  path = _npz_with_header(tmp_path / "huge.npz", "gallery_features",
                          (2**20, 9 * 2**20))
  proc = _evaluate_cli(f"--features={path}",
                       f"--output_json={tmp_path / 'x.json'}")
  assert proc.returncode == 1, proc.stderr[-3000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr[-3000:]
  assert lines[0].startswith(f"error: {path}: gallery_features declares "
                             "shape (1048576, 9437184) of float32 (36.0 TiB)")


@pytest.mark.slow
@pytest.mark.parametrize("content, reason", [
    ('{"data": ', "is not valid JSON (Expecting value"),
    ("[1, 2]", "holds a JSON list, not the config object"),
])
def test_invalid_config_json_is_one_line_naming_it(tmp_path, content, reason):
  run = tmp_path / "run"
  run.mkdir()
  (run / "config.json").write_text(content)
  proc = _evaluate_cli(f"--workdir={run}",
                       f"--output_json={tmp_path / 'x.json'}")
  assert proc.returncode == 1, proc.stderr[-3000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr[-3000:]
  assert lines[0].startswith(f"error: {run / 'config.json'} {reason}"), lines


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

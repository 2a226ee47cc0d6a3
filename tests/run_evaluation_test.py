"""End-to-end tests of the evaluation of one tiny trained run (and its export)."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_reid import run_evaluation
from keras_reid.data import from_config
from keras_reid.data import records
from keras_reid.evaluation import cir
from keras_reid.evaluation import embedders
from keras_reid.evaluation import model_evaluation
from keras_reid.evaluation import reference
from keras_reid.evaluation import report as report_lib
from keras_reid.models import builders
from keras_reid.models import restore
from keras_reid.serving import saved_model
from keras_reid.training import stage_setup
from keras_reid.training import stages
from tests.training import tiny_config

pytestmark = pytest.mark.slow


def _ids(recs):
  """(pids, camids) int arrays of records."""
  return (np.array([r.pid for r in recs]), np.array([r.camid for r in recs]))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(workdir, config, training metrics) of one tiny run shared by all tests."""
  base = tmp_path_factory.mktemp("eval_run")
  config = tiny_config.get_config()
  config.data.synthetic_dir = str(base / "synthetic")
  workdir = str(base / "run")
  metrics = stages.train(config, workdir)
  return workdir, config, metrics


def _tag_counts(logdir) -> dict:
  """tag -> number of summaries in the event files of `logdir` (not below)."""
  counts: dict = {}
  for name in os.listdir(logdir):
    if not os.path.isfile(os.path.join(logdir, name)):
      continue
    for event in tf.compat.v1.train.summary_iterator(
        os.path.join(logdir, name)):
      for v in event.summary.value:
        counts[v.tag] = counts.get(v.tag, 0) + 1
  return counts


def _tags(logdir):
  return set(_tag_counts(logdir))


def test_workdir_default_matches_training_eval(run, tmp_path):
  workdir, config, metrics = run
  out = str(tmp_path / "eval.json")
  result = run_evaluation.evaluate_run(workdir, output_json=out)
  with open(out) as f:
    written = json.load(f)
  # Same dataset (the stage's synthetic set), same weights, same metrics.
  for key in ("rank1", "rank5", "mAP", "mINP", "num_queries"):
    assert written[key] == pytest.approx(metrics[key]), key
  assert len(written["cmc"]) == 50 and written["split"] == 0
  assert "cir" not in written  # off by default
  # The verification report is on the test split's pairs: identities the
  # run never trained on (synthetic: its one fixed split).
  ver = written["verification"]
  assert ver["split"] == "test" and ver["seen_in_training"] is False
  data = from_config.load_stage_dataset(config.stages.synthetic, config)
  test_ids = ({r.pid for r in data.query + data.gallery}
              - {records.JUNK_PID, records.DISTRACTOR_PID})
  assert ver["num_ids"] == len(test_ids)
  assert not test_ids & {r.pid for r in data.train}
  assert "open-set" in report_lib.roc_title(ver)
  for part in ("sir_distance", "verification_head"):
    assert 0.0 <= ver[part]["auc"] <= 1.0 and 0.0 <= ver[part]["eer"] <= 1.0
  # A Euclidean distance threshold, and a probability one.
  assert ver["sir_distance"]["threshold"] >= 0.0
  assert 0.0 <= ver["verification_head"]["threshold"] <= 1.0
  pictures = result["pictures"]
  assert len(pictures["ranked_lists"]) == min(10, result["num_queries"] +
                                              result["num_skipped_queries"])
  for path in pictures["ranked_lists"] + [pictures["cmc"]]:
    assert os.path.exists(path) and path.startswith(str(tmp_path))
  tags = _tags(os.path.join(workdir, "tensorboard"))
  assert {"eval/ranked_lists", "eval/cmc", "eval/roc"} <= tags, sorted(tags)


def test_workdir_cir_topk_and_full(run, tmp_path):
  workdir, config, _ = run
  top = run_evaluation.evaluate_run(
      workdir, output_json=str(tmp_path / "a.json"), cir_topk=3,
      verification=False, pictures=False)
  report = top["cir"]
  assert report["mode"] == "top3"
  assert report["pairs_scored"] == 3 * (top["num_queries"] +
                                        top["num_skipped_queries"])
  assert report["sir"]["rank1"] == pytest.approx(top["rank1"])
  assert report["cir_seconds"] > 0 and report["sir_seconds"] > 0
  assert report["cir_to_sir_time_ratio"] == pytest.approx(
      report["cir_seconds"] / report["sir_seconds"])
  # Re-scoring only re-orders the top 3: from rank 3 on the CMC is SIR's.
  assert report["cir"]["cmc"][3:] == pytest.approx(top["cmc"][3:])
  full = run_evaluation.evaluate_run(
      workdir, output_json=str(tmp_path / "b.json"), cir="full",
      verification=False, pictures=False)
  assert full["cir"]["mode"] == "full"
  # Oracle: every query-gallery pair scored by the restored verification
  # head, ranked by the torchreid-style reference evaluator.
  model, _ = restore.restore_training_model(workdir)
  scorer = embedders.keras_pair_scorer(builders.build_pair_scorer(model))
  data = from_config.load_stage_dataset(config.stages.synthetic, config)
  load = dict(image_size=(config.data.image_height, config.data.image_width),
              normalization=builders.normalization_for(config.model),
              batch_size=config.data.eval_batch_size)
  dist = cir.cir_distances(scorer, embedders.load_images(data.query, **load),
                           embedders.load_images(data.gallery, **load))
  (q_pids, q_cams), (g_pids, g_cams) = _ids(data.query), _ids(data.gallery)
  keep = g_pids != records.JUNK_PID
  want = reference.eval_market1501(dist[:, keep], q_pids, g_pids[keep], q_cams,
                                   g_cams[keep])
  for key in ("rank1", "mAP"):
    assert full["cir"]["cir"][key] == pytest.approx(want[key], abs=1e-6), key
  with open(tmp_path / "b.json") as f:
    assert json.load(f)["cir"]["pairs_scored"] == full["cir"]["pairs_scored"]


def test_workdir_splits_and_dataset_flag(run, tmp_path, monkeypatch):
  workdir, config, _ = run
  warnings = []
  monkeypatch.setattr(run_evaluation.logging, "warning",
                      lambda msg, *a: warnings.append(msg % a))
  result = run_evaluation.evaluate_run(
      workdir, dataset="synthetic", root=config.data.synthetic_dir,
      splits=[0, 1], output_json=str(tmp_path / "s.json"),
      verification=False, pictures=False)
  # The synthetic set has one fixed split: both give the same numbers.
  assert result["num_splits"] == 2 and result["split_indices"] == [0, 1]
  assert result["rank1_std"] == pytest.approx(0.0)
  assert result["splits"][0]["mAP"] == pytest.approx(result["mAP"])
  assert any("optimistic" in w for w in warnings), warnings


def test_cross_dataset_evaluation_never_replaces_the_runs_own(run, tmp_path):
  workdir, config, _ = run
  copy = str(tmp_path / "run_copy")
  shutil.copytree(workdir, copy)
  own_report, own_dir = os.path.join(copy, "eval.json"), os.path.join(
      copy, "eval_report")
  # The run's own evaluation, as `python -m keras_reid.evaluate` left it.
  result = run_evaluation.evaluate_run(copy, verification=False)
  assert result["output_json"] == own_report
  assert all(p.startswith(own_dir + os.sep)
             for p in result["pictures"]["ranked_lists"])
  with open(own_report) as f:
    own = f.read()
  own_pictures = sorted(os.listdir(os.path.join(own_dir, "ranked_lists")))
  logdir = os.path.join(copy, "tensorboard")
  before = _tag_counts(logdir)
  assert before.get("eval/ranked_lists")

  # Another dataset: the synthetic set's test split as a user's manifest.
  data = from_config.load_stage_dataset(config.stages.synthetic, config)
  csv_path = tmp_path / "manifest.csv"
  csv_path.write_text("path,pid,camid,split\n" + "".join(
      f"{r.path},{r.pid},{r.camid},{split}\n"
      for split, recs in (("query", data.query), ("gallery", data.gallery))
      for r in recs))
  cross = run_evaluation.evaluate_run(copy, dataset="manifest",
                                      root=str(csv_path), projector=True)
  assert cross["output_json"] == os.path.join(copy, "eval_manifest.json")
  assert os.path.exists(cross["output_json"])
  cross_dir = os.path.join(copy, "eval_manifest_report")
  for path in cross["pictures"]["ranked_lists"] + [cross["pictures"]["cmc"],
                                                   cross["pictures"]["roc"]]:
    assert path.startswith(cross_dir + os.sep), path
  assert cross["projector"]["dir"].startswith(
      os.path.join(logdir, "eval_manifest"))
  # The run's own report, pictures and TensorBoard images are untouched.
  with open(own_report) as f:
    assert f.read() == own
  assert sorted(os.listdir(os.path.join(own_dir, "ranked_lists"))) == (
      own_pictures)
  after = _tag_counts(logdir)
  assert {t: n for t, n in after.items() if t.startswith("eval/")} == {
      t: n for t, n in before.items() if t.startswith("eval/")}
  assert {"eval_manifest/ranked_lists", "eval_manifest/cmc",
          "eval_manifest/roc"} <= set(after), sorted(after)
  assert not os.path.exists(os.path.join(logdir, "projector_config.pbtxt"))


def test_saved_model(run, tmp_path):
  workdir, config, _ = run
  model, _ = restore.restore_training_model(workdir)
  path = saved_model.export_saved_model(
      builders.build_embedder(model), builders.build_pair_scorer(model),
      export_base=str(tmp_path / "export"),
      image_size=(config.data.image_height, config.data.image_width),
      normalization=builders.normalization_for(config.model))
  result = model_evaluation.evaluate_saved_model(
      path, dataset="synthetic", root=config.data.synthetic_dir,
      output_json=str(tmp_path / "sm.json"), cir_topk=2, pictures=False)
  total = result["num_queries"] + result["num_skipped_queries"]
  # The export L2-normalises embeddings (SIR order may differ from the
  # run's); its verify signature re-scores the same number of candidates.
  assert total > 0
  assert result["cir"]["pairs_scored"] == 2 * total
  assert result["cir"]["cir_to_sir_time_ratio"] > 0
  head = result["verification"]["verification_head"]
  assert head["num_positive"] > 0 and 0.0 <= head["threshold"] <= 1.0
  embedder = embedders.load_saved_model(path)
  size = embedder.image_size
  assert size == (config.data.image_height, config.data.image_width)
  assert embedder.pair_scorer is not None
  # Oracle: the SavedModel's embeddings scored by the reference evaluator.
  data = from_config.load_stage_dataset(config.stages.synthetic, config)
  load = dict(image_size=size, normalization="none", batch_size=128)
  want = reference.evaluate_features(
      embedders.extract_features(embedder.embed, data.query, **load),
      embedders.extract_features(embedder.embed, data.gallery, **load),
      *_ids(data.query)[:1], *_ids(data.gallery)[:1],
      _ids(data.query)[1], _ids(data.gallery)[1])
  for key in ("rank1", "mAP"):
    assert result[key] == pytest.approx(want[key], abs=1e-6), key
  out = embedder.embed(np.full((2, *size, 3), 100.0, np.float32))
  np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def _run_with_eval_settings(workdir, tmp_path, **settings):
  """A copy of the run whose config.json says config.eval.<key>=value."""
  copy = str(tmp_path / "run_copy")
  shutil.copytree(workdir, copy)
  path = os.path.join(copy, "config.json")
  with open(path) as f:
    config = json.load(f)
  for key, value in settings.items():
    section, name = key.split(".")
    config[section][name] = value
  with open(path, "w") as f:
    json.dump(config, f)
  return copy


def test_workdir_takes_eval_settings_from_the_run(run, tmp_path):
  workdir, _, _ = run
  copy = _run_with_eval_settings(workdir, tmp_path, **{
      "eval.max_rank": 7, "eval.cir_topk": 2, "data.eval_batch_size": 5})
  result = run_evaluation.evaluate_run(
      copy, output_json=str(tmp_path / "r.json"), verification=False,
      pictures=False)
  assert len(result["cmc"]) == 7 and result["cir"]["mode"] == "top2"
  # An explicit argument (a flag) wins over the run's setting.
  result = run_evaluation.evaluate_run(
      copy, output_json=str(tmp_path / "r2.json"), max_rank=9, cir_topk=0,
      verification=False, pictures=False)
  assert len(result["cmc"]) == 9 and "cir" not in result


def test_flip_test_from_the_run_or_the_argument_matches_an_oracle(run,
                                                                  tmp_path):
  workdir, config, _ = run
  copy = _run_with_eval_settings(workdir, tmp_path, **{"eval.flip_test": True})
  result = run_evaluation.evaluate_run(
      copy, output_json=str(tmp_path / "flip.json"), verification=False,
      pictures=False)
  assert result["flip_test"] is True
  # Oracle: the model on the decoded images and on their np.flip copies.
  model, _ = restore.restore_training_model(workdir)
  embedder = builders.build_embedder(model)
  dataset = from_config.load_stage_dataset(config.stages.synthetic, config)
  load = dict(image_size=(config.data.image_height, config.data.image_width),
              normalization=builders.normalization_for(config.model),
              dtype=np.float32)

  def features(recs):
    images = embedders.load_images(recs, **load)
    return (np.asarray(embedder(images, training=False))
            + np.asarray(embedder(images[:, :, ::-1], training=False))) / 2

  (q_pids, q_camids), (g_pids, g_camids) = (_ids(dataset.query),
                                            _ids(dataset.gallery))
  expected = reference.evaluate_features(
      features(dataset.query), features(dataset.gallery), q_pids, g_pids,
      q_camids, g_camids)
  for key in ("rank1", "rank5", "mAP", "mINP"):
    assert result[key] == pytest.approx(expected[key], abs=1e-6), key
  plain = run_evaluation.evaluate_run(
      copy, output_json=str(tmp_path / "plain.json"), verification=False,
      pictures=False, flip_test=False)
  assert plain["flip_test"] is False
  assert (plain["rank1"], plain["mAP"]) != (result["rank1"], result["mAP"])


def test_training_time_evaluation_runs_cir_when_cir_topk_is_set(run, tmp_path):
  workdir, config, _ = run
  model, _ = restore.restore_training_model(workdir)
  config = config.copy_and_resolve_references()
  config.eval.cir_topk = 2
  dataset = stages.from_config.load_stage_dataset(config.stages.synthetic,
                                                  config)
  metrics = stage_setup.evaluate_model(model, dataset, config)
  assert metrics["cir"]["mode"] == "top2"
  assert metrics["cir"]["sir"]["rank1"] == pytest.approx(metrics["rank1"])
  writer = tf.summary.create_file_writer(str(tmp_path / "tb"))
  stages.loop.write_eval_summaries(writer, metrics, 1)
  writer.flush()
  assert {"eval/rank1", "eval/cir_rank1"} <= _tags(str(tmp_path / "tb"))


def test_command_line_evaluates_a_run(run, tmp_path):
  workdir, _, _ = run
  # Unset flags come from the run: its (edited) eval.max_rank.
  workdir = _run_with_eval_settings(workdir, tmp_path, **{"eval.max_rank": 12})
  out = tmp_path / "main.json"
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
             PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run(
      [sys.executable, "-m", "keras_reid.evaluate", f"--workdir={workdir}",
       f"--output_json={out}", "--cir_topk=2", "--noverification",
       "--nopictures"], cwd=repo, env=env, capture_output=True, text=True,
      timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  printed = json.loads(proc.stdout.strip().splitlines()[-1])
  written = json.loads(out.read_text())
  assert printed["rank1"] == pytest.approx(written["rank1"])
  assert printed["cir_rank1"] == pytest.approx(written["cir"]["cir"]["rank1"])
  assert "verification" not in written and "pictures" not in written
  assert len(written["cmc"]) == 12 and written["cir"]["mode"] == "top2"


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

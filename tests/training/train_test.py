"""End-to-end tests of `keras_reid.train`: stages, metrics, resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port  # what TF says of oneDNN

from keras_reid import cpu_kind
from keras_reid import runs
from keras_reid.data import from_config
from keras_reid.data.synthetic import generator as synthetic
from keras_reid.evaluation import embedders
from keras_reid.evaluation import ranking
from keras_reid.evaluation import reference
from keras_reid.models import builders
from keras_reid.models import restore
from keras_reid.training import stages
from keras_reid.training import timing
from tests.training import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_CONFIG = os.path.join(REPO, "tests", "training", "tiny_config.py")


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("data") / "synthetic")
  synthetic.generate(root, num_ids=6, seed=0)
  return root


def _tensorboard_tags(logdir):
  tags = set()
  for name in os.listdir(logdir):
    for event in tf.compat.v1.train.summary_iterator(os.path.join(logdir, name)):
      for value in event.summary.value:
        tags.add(value.tag)
  return tags


def test_tiny_run_end_to_end(tmp_path, synthetic_dir):
  config = tiny_config.get_config()
  config.data.synthetic_dir = synthetic_dir
  workdir = str(tmp_path / "run")
  metrics = stages.train(config, workdir)

  with open(os.path.join(workdir, "metrics.json")) as f:
    written = json.load(f)
  for key in ranking.METRIC_KEYS:
    assert written[key] == pytest.approx(metrics[key])
  assert os.path.exists(os.path.join(workdir, "config.json"))
  with open(os.path.join(workdir, runs.RUNTIME_FILE)) as f:
    runtime = json.load(f)
  assert runtime["precision"] == {
      "requested": "float32", "policy": "float32",
      "reason": "set in config.train.precision"}
  # The kernels this process's TensorFlow trained with, as TF itself says.
  assert runtime["onednn"] == {
      "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
      "enabled": bool(_pywrap_util_port.IsMklEnabled())}
  assert runtime["cpu"] == cpu_kind.describe()  # the CPU it ran on
  progress = runs.Progress.load(workdir)
  assert [(p.stage, p.step) for p in progress.finished] == [
      ("synthetic", 1), ("synthetic", 2)]
  # Where the time went: every phase and "other" add up to the process's
  # time, which is train_seconds; the images are every iteration's.
  phases = written["phase_seconds"]
  seconds = phases["seconds"]
  assert set(seconds) == set(timing.PHASES) | {"other"}
  assert sum(seconds.values()) == pytest.approx(phases["total_seconds"])
  assert phases["total_seconds"] == metrics["train_seconds"]
  for phase in ("step_start", "iterations", "evaluation", "checkpoint_saves"):
    assert seconds[phase] > 0, phase
  assert seconds["pseudo_labels"] == 0  # a labelled stage
  stage = config.stages.synthetic
  assert phases["images_trained"] == (
      (stage.step1_iterations + stage.step2_iterations)
      * stage.ids_per_batch * stage.images_per_id)
  tags = _tensorboard_tags(os.path.join(workdir, "tensorboard"))
  for tag in ("loss/total", "loss/cls", "loss/ver", "accuracy/cls",
              "accuracy/ver", "lr", "throughput/images_per_sec", "eval/rank1",
              "eval/mAP", "inputs/synthetic"):
    assert tag in tags, (tag, sorted(tags))

  # The trained run reloads for evaluation / export with the same weights.
  model, loaded_config = restore.restore_training_model(workdir)
  assert loaded_config.to_dict() == json.loads(config.to_json_best_effort())
  assert model.get_layer("classifier").get_weights()[0].shape[-1] == 3

  # The stage's evaluation against an oracle: the restored embedder's
  # features scored by the torchreid-style reference evaluator.
  dataset = from_config.load_stage_dataset(config.stages.synthetic, config)
  embedder = builders.build_embedder(model)
  load = dict(image_size=(config.data.image_height, config.data.image_width),
              normalization=builders.normalization_for(config.model),
              batch_size=config.data.eval_batch_size)
  embed = lambda images: embedder(images, training=False)
  want = reference.evaluate_features(
      embedders.extract_features(embed, dataset.query, **load),
      embedders.extract_features(embed, dataset.gallery, **load),
      np.array([r.pid for r in dataset.query]),
      np.array([r.pid for r in dataset.gallery]),
      np.array([r.camid for r in dataset.query]),
      np.array([r.camid for r in dataset.gallery]))
  for key in ("rank1", "rank5", "mAP"):
    assert metrics[key] == pytest.approx(want[key], abs=1e-6), key

  # Rerunning a finished run does no training and gives the same metrics.
  again = stages.train(config, workdir)
  assert again["rank1"] == metrics["rank1"] and again["mAP"] == metrics["mAP"]


def test_deterministic_run_is_bit_identical_wherever_data_and_run_lie(
    tmp_path, synthetic_dir):
  # The same synthetic files in a second, differently named folder: a
  # deterministic run gives bit-identical metrics in both places (the
  # fixed augmentation was once keyed by absolute paths); only the
  # wall-clock timings may differ.
  import shutil
  other_data = str(tmp_path / "another" / "data_copy")
  shutil.copytree(synthetic_dir, other_data)
  written = []
  for data_dir, workdir in ((synthetic_dir, tmp_path / "run_here"),
                            (other_data, tmp_path / "x" / "run_there")):
    config = tiny_config.get_config()
    config.data.synthetic_dir = data_dir
    config.stages.synthetic.step2_iterations = 2
    stages.train(config, str(workdir))
    with open(os.path.join(workdir, "metrics.json")) as f:
      written.append({k: v for k, v in json.load(f).items()
                      if not k.endswith("_seconds")})
  assert written[0] == written[1]
  assert written[0]["mAP"] > 0


def test_resume_refuses_a_different_config(tmp_path, synthetic_dir):
  config = tiny_config.get_config()
  config.data.synthetic_dir = synthetic_dir
  config.stages.synthetic.update(dict(step1_iterations=1, step2_iterations=0))
  workdir = str(tmp_path / "run")
  stages.train(config, workdir)
  config.train.momentum = 0.5
  with pytest.raises(ValueError, match="different config"):
    stages.train(config, workdir)


def test_stage_transition_replaces_heads_and_keeps_base(tmp_path, synthetic_dir):
  # A second synthetic domain with more identities, generated by the stage's
  # own options, so the target stage needs a classifier of another size.
  other = str(tmp_path / "other")
  config = tiny_config.get_config()
  config.data.synthetic_dir = synthetic_dir
  config.stages.synthetic.update(dict(step1_iterations=1, step2_iterations=2))
  config.stages.target = config.stages.synthetic.copy_and_resolve_references()
  config.stages.target.update(dict(root=other, options="domain=b,num_ids=10",
                                   init="previous", step1_iterations=2,
                                   step2_iterations=0))
  workdir = str(tmp_path / "run")
  stages.train(config, workdir)

  progress = runs.Progress.load(workdir)
  assert [(p.stage, p.step) for p in progress.finished] == [
      ("synthetic", 1), ("synthetic", 2), ("target", 1)]
  first = restore.rebuild_model(config, progress.finished[1].num_classes,
                                    progress.finished[1].checkpoint)
  last = restore.rebuild_model(config, progress.finished[2].num_classes,
                                   progress.finished[2].checkpoint)
  assert progress.finished[2].num_classes != progress.finished[1].num_classes
  assert (last.get_layer("classifier").get_weights()[0].shape[-1]
          == progress.finished[2].num_classes)
  # Step 1 of the new stage trained only the new classifier: the base and the
  # verification head are exactly those the first stage ended with.
  for name in ("backbone", "verifier"):
    for a, b in zip(first.get_layer(name).get_weights(),
                    last.get_layer(name).get_weights()):
      np.testing.assert_array_equal(a, b)


def test_stage_without_training_evaluates_initial_features(tmp_path,
                                                           synthetic_dir):
  config = tiny_config.get_config()
  config.data.synthetic_dir = synthetic_dir
  config.stages.synthetic.update(dict(step1_iterations=0, step2_iterations=0))
  metrics = stages.train(config, str(tmp_path / "run"))
  assert 0.0 < metrics["rank20"] <= 1.0
  assert runs.Progress.load(str(tmp_path / "run")).finished == []


def _train_cmd(workdir, synthetic_dir):
  return [sys.executable, "-m", "keras_reid.train", f"--config={TINY_CONFIG}",
          f"--workdir={workdir}", f"--config.data.synthetic_dir={synthetic_dir}",
          "--config.stages.synthetic.step2_iterations=12",
          "--config.train.checkpoint_every=1"]


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, synthetic_dir):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  full = str(tmp_path / "full")
  subprocess.run(_train_cmd(full, synthetic_dir), env=env, cwd=REPO,
                 check=True, capture_output=True, timeout=600)

  killed = str(tmp_path / "killed")
  proc = subprocess.Popen(_train_cmd(killed, synthetic_dir), env=env, cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  step2 = os.path.join(killed, "checkpoints", "synthetic", "step2")
  deadline = time.time() + 600
  # Kill in the middle of step 2, after a few of its checkpoints.
  while time.time() < deadline and proc.poll() is None:
    latest = tf.train.latest_checkpoint(step2) if os.path.isdir(step2) else None
    if latest and int(latest.rsplit("-", 1)[1]) >= 4:
      break
    time.sleep(0.05)
  assert proc.poll() is None, "training ended before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not os.path.exists(os.path.join(killed, "metrics.json"))

  resumed = subprocess.run(_train_cmd(killed, synthetic_dir), env=env,
                           cwd=REPO, capture_output=True, text=True,
                           timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "Resuming synthetic step 2" in resumed.stderr

  def final_weights(workdir):
    model, _ = restore.restore_training_model(workdir)
    return model.get_weights()
  for a, b in zip(final_weights(full), final_weights(killed)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  with open(os.path.join(full, "metrics.json")) as f:
    m_full = json.load(f)
  with open(os.path.join(killed, "metrics.json")) as f:
    m_killed = json.load(f)
  for key in ("rank1", "mAP", "mINP"):
    assert m_full[key] == pytest.approx(m_killed[key], abs=1e-6)


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))


def test_a_second_training_of_one_run_directory_is_refused(tmp_path,
                                                           synthetic_dir):
  workdir = str(tmp_path / "run")
  config = tiny_config.get_config()
  config.data.synthetic_dir = synthetic_dir
  # Held by another process: the lock names its pid, training never starts.
  holder = subprocess.Popen(
      [sys.executable, "-c",
       "import sys, time; from keras_reid import runs\n"
       f"with runs.training_lock({workdir!r}):\n"
       "  print('held', flush=True); time.sleep(60)"],
      cwd=REPO, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(runs.RunInUseError,
                       match=rf"being trained by another process \(pid "
                       rf"{holder.pid}, holding .*train\.lock\)"):
      stages.train(config, workdir)
    assert not os.path.exists(os.path.join(workdir, "config.json"))
  finally:
    holder.kill()
    holder.wait()
  # Killed (as by SIGKILL), the holder leaves no stale lock.
  with runs.training_lock(workdir):
    with pytest.raises(runs.RunInUseError, match=f"pid {os.getpid()}"):
      with runs.training_lock(workdir):
        pass
  with runs.training_lock(workdir):  # released on leaving
    pass

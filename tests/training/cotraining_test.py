"""Unsupervised stages (self-training, co-training) through `stages.train`.

Source: synthetic domain "a" with labels, trained once; target: synthetic
domain "b" (two cameras) without labels, `init=` the source run. Covers the
rounds end to end, labels computed from the previous round's model, the
hidden identities never reaching training, and resume mid-run.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_reid import runs
from keras_reid import schema
from keras_reid.data import from_config
from keras_reid.evaluation import embedders
from keras_reid.models import builders
from keras_reid.models import restore
from keras_reid.training import cotraining
from keras_reid.training import loop
from keras_reid.training import stages
from keras_reid.unsupervised import clustering as cluster_lib
from tests.training import tiny_config


def _base(tmp_root):
  config = tiny_config.get_config()
  config.data.synthetic_dir = os.path.join(tmp_root, "a")
  config.data.image_height = 32  # the smallest MobileNet input
  config.data.image_width = 32
  config.train.precision = "float32"
  config.train.checkpoint_every = 1000  # at each step's end only
  config.stages.synthetic.update(dict(step1_iterations=2, step2_iterations=4))
  return config


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
  """A labelled source run on domain "a" (the target stages start from it)."""
  root = str(tmp_path_factory.mktemp("cotrain"))
  config = _base(root)
  workdir = os.path.join(root, "source")
  stages.train(config, workdir)
  return root, workdir


def _target_config(root, source, supervision, **overrides):
  config = _base(root)
  del config.stages["synthetic"]
  config.stages.target = schema.stage_config(
      dataset="synthetic", root=os.path.join(root, "b"),
      options="domain=b,num_ids=8", init=source, supervision=supervision,
      ids_per_batch=2, images_per_id=2, step1_iterations=1, step2_iterations=3,
      step1_lr=0.01, step2_lr=0.01,
      unsupervised=dict(rounds=2, graph_k=3, grdl_atoms=8, grdl_iterations=3,
                        soft_top_m=3))
  config.stages.target.update(overrides)
  return config


def _tags(logdir):
  tags = {}
  for name in sorted(os.listdir(logdir)):
    for event in tf.compat.v1.train.summary_iterator(os.path.join(logdir, name)):
      for value in event.summary.value:
        array = tf.make_ndarray(value.tensor)
        if array.ndim == 0:  # scalars only (not the input images)
          tags.setdefault(value.tag, []).append((event.step, float(array)))
  return tags


def _weights(workdir):
  model, _ = restore.restore_training_model(workdir)
  return model.get_weights()


@pytest.mark.parametrize("supervision", ["self_training", "cotraining"])
def test_rounds_end_to_end(tmp_path, source_run, supervision):
  root, source = source_run
  config = _target_config(root, source, supervision)
  workdir = str(tmp_path / "run")
  metrics = stages.train(config, workdir)
  assert 0.0 < metrics["rank20"] <= 1.0
  # The two rounds' labelling and their evaluations have their own phases.
  seconds = metrics["phase_seconds"]["seconds"]
  assert seconds["pseudo_labels"] > 0 and seconds["evaluation"] > 0

  progress = runs.Progress.load(workdir)
  assert [(p.stage, p.step) for p in progress.finished] == [
      ("target/round1", 1), ("target/round1", 2), ("target/round2", 1),
      ("target/round2", 2)]
  dataset = from_config.load_stage_dataset(config.stages.target, config)
  camids = np.array([r.camid for r in dataset.train])
  num_a = int((camids == 0).sum())
  assert {p.num_classes for p in progress.finished} == {num_a}
  origin = runs.weights_origin(workdir)
  assert origin["complete"] and origin["stage"] == "target/round2"

  # Round 2's labels are those of the model that ended round 1 (an oracle:
  # features extracted again from its checkpoint, labels made again).
  after_round1 = restore.rebuild_model(config, num_a,
                                           progress.finished[1].checkpoint)
  features = cotraining.extract_features(after_round1, dataset.train, config)
  paths = [r.path for r in dataset.train]
  saved1 = cotraining.load_labels(
      runs.round_labels_path(workdir, "target", 1), paths)
  warm = saved1.dictionary
  want = cotraining.make_labels(features, camids, config.stages.target,
                                seed=0, init_dictionary=warm)
  saved2 = cotraining.load_labels(
      runs.round_labels_path(workdir, "target", 2), paths)
  assert saved2.labels.shape == (len(paths), num_a)  # soft by default
  np.testing.assert_allclose(saved2.labels, want.labels, atol=1e-5)
  if supervision == "cotraining":
    assert saved2.dictionary.shape == (features.shape[1], 8)
    objective = np.array(saved2.objective)
    assert (np.diff(objective) <= 1e-9 * objective[:-1]).all()
  else:
    assert saved2.dictionary is None and saved2.objective == []

  for r in (0, 1):  # the model before each round, evaluated on the target
    with open(os.path.join(workdir, "eval", "target", f"round{r}.json")) as f:
      assert 0.0 <= json.load(f)["rank1"] <= 1.0
  with open(os.path.join(workdir, "cotrain", "target", "round2.json")) as f:
    stats = json.load(f)
  assert 0.0 <= stats["accuracy"] <= stats["reachable"] <= 1.0
  tags = _tags(os.path.join(workdir, "tensorboard"))
  assert len(tags["cotrain/label_accuracy"]) == 2
  assert len(tags["eval/rank1"]) == 3  # before round 1, 2 and at the end
  assert "loss/ver" in tags  # unsupervised.verification_pairs "all"
  if supervision == "cotraining":
    assert len(tags["cotrain/target/round2/grdl_objective"]) >= 2
  model, _ = restore.restore_training_model(workdir)
  assert model.get_layer("classifier").get_weights()[0].shape[-1] == num_a


def test_cotraining_fix_options_reach_the_rounds(tmp_path, source_run, monkeypatch):
  """l2_normalize, refit_dictionary and verification_pairs="none" reach the
  rounds: round 2's GRDL starts from no dictionary, its labels are those of
  the normalised codes, and no round trains the verification loss."""
  root, source = source_run
  config = _target_config(root, source, "cotraining", unsupervised=dict(
      rounds=2, graph_k=3, grdl_atoms=8, grdl_iterations=3, soft_top_m=3,
      pseudo_labels="hard", l2_normalize=True, refit_dictionary=True,
      verification_pairs="none"))
  starts = []
  grdl_fn = cotraining.grdl.grdl

  def recording_grdl(*args, **kwargs):
    starts.append(kwargs.get("init_dictionary"))
    return grdl_fn(*args, **kwargs)

  monkeypatch.setattr(cotraining.grdl, "grdl", recording_grdl)
  workdir = str(tmp_path / "run")
  stages.train(config, workdir)
  assert starts == [None, None]  # fresh in round 2 too (today: round 1's)

  progress = runs.Progress.load(workdir)
  dataset = from_config.load_stage_dataset(config.stages.target, config)
  camids = np.array([r.camid for r in dataset.train])
  is_a = camids == 0
  after_round1 = restore.rebuild_model(config, int(is_a.sum()),
                                       progress.finished[1].checkpoint)
  features = cotraining.extract_features(after_round1, dataset.train, config)
  codes = cotraining.grdl.grdl(
      features, cotraining.graph.laplacian(
          cotraining.graph.cross_camera_knn_graph(features, is_a, k=3)),
      8, config.stages.target.unsupervised.grdl_lambda, max_iter=3,
      seed=cotraining._round_seed(config, 0, 2)).codes
  unit = codes / np.linalg.norm(codes, axis=1, keepdims=True)
  want = np.empty(len(camids), np.int64)  # NumPy oracle: nearest by angle
  want[is_a] = np.arange(is_a.sum())
  want[~is_a] = (unit[~is_a] @ unit[is_a].T).argmax(axis=1)
  saved2 = cotraining.load_labels(
      runs.round_labels_path(workdir, "target", 2),
      [r.path for r in dataset.train])
  np.testing.assert_array_equal(saved2.labels, want)

  tags = _tags(os.path.join(workdir, "tensorboard"))
  assert "loss/cls" in tags and "loss/ver" not in tags
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["loss"]["ver_weight"] > 0  # the run's config as given


# Clustering the tiny source model's features of domain "b" (16 training
# images): k1 = 3 neighbours, every pair of images may start a cluster.
_CLUSTERING = dict(cluster_eps=0.6, cluster_min_samples=2, cluster_k1=3,
                   cluster_k2=1)


def _clustering_config(root, source, **unsupervised):
  config = _target_config(root, source, "clustering",
                          unsupervised=dict(_CLUSTERING, **unsupervised))
  config.loss.cluster_memory_weight = 1.0
  config.train.checkpoint_every = 1  # a checkpoint after every iteration
  return config


def test_clustering_rounds_end_to_end(tmp_path, source_run):
  root, source = source_run
  config = _clustering_config(root, source, cluster_camera_weight=0.1,
                              flip_features=True)
  workdir = str(tmp_path / "run")
  metrics = stages.train(config, workdir)
  assert 0.0 < metrics["rank20"] <= 1.0

  progress = runs.Progress.load(workdir)
  assert [(p.stage, p.step) for p in progress.finished] == [
      ("target/round1", 1), ("target/round1", 2), ("target/round2", 1),
      ("target/round2", 2)]
  dataset = from_config.load_stage_dataset(config.stages.target, config)
  paths = [r.path for r in dataset.train]
  camids = np.array([r.camid for r in dataset.train])
  saved = [cotraining.load_labels(runs.round_labels_path(workdir, "target", r),
                                  paths) for r in (1, 2)]
  for labels, finished in zip(saved, progress.finished[1::2]):
    assert labels.labels.dtype == np.int64 and labels.labels.ndim == 1
    assert finished.num_classes == labels.num_classes == labels.labels.max() + 1
    assert labels.centroids.shape[0] == labels.num_classes
  # Round 2's labels are the clusters of the model that ended round 1 (an
  # oracle: features extracted again from its checkpoint, each the mean of
  # the image's and its mirror image's (flip_features), clustered again).
  after_round1 = restore.rebuild_model(config, saved[0].num_classes,
                                       progress.finished[1].checkpoint)
  plain = cotraining.extract_features(after_round1, dataset.train, config)
  mirrored = embedders.extract_features(
      lambda images: builders.embedding_function(after_round1)(
          tf.reverse(images, axis=[2])), dataset.train,
      image_size=(config.data.image_height, config.data.image_width),
      normalization=builders.normalization_for(config.model),
      batch_size=config.data.eval_batch_size)
  features = (plain + mirrored) / 2
  assert saved[1].centroids.shape[1] == features.shape[1]
  want = cluster_lib.cluster_features(
      features, camids, eps=0.6, min_samples=2, k1=3, k2=1, camera_weight=0.1)
  np.testing.assert_array_equal(saved[1].labels, want.labels)
  np.testing.assert_allclose(saved[1].centroids, want.centroids, atol=1e-5)

  # The cluster memory trained in step 2 and is in its checkpoint, moved
  # away from the round's centroids.
  reader = tf.train.load_checkpoint(progress.finished[3].checkpoint)
  (memory_key,) = [k for k in reader.get_variable_to_shape_map()
                   if k.startswith("cluster_memory/")
                   and "OPTIMIZER" not in k]
  memory = reader.get_tensor(memory_key)
  assert memory.shape == saved[1].centroids.shape
  assert not np.allclose(memory, saved[1].centroids, atol=1e-4)
  np.testing.assert_allclose(np.linalg.norm(memory, axis=1), 1.0, atol=1e-5)
  step1 = tf.train.load_checkpoint(progress.finished[2].checkpoint)
  assert not any(k.startswith("cluster_memory/")
                 for k in step1.get_variable_to_shape_map())

  # Label quality against the hidden identities, per round.
  with open(runs.round_label_report_path(workdir, "target", 2)) as f:
    report = json.load(f)
  assert report["num_clusters"] == saved[1].num_classes
  assert report["num_outliers"] == int((saved[1].labels == -1).sum())
  assert 0.0 <= report["pairwise_precision"] <= 1.0
  assert report["purity"] == cluster_lib.cluster_quality(
      saved[1].labels, [r.pid for r in dataset.train])["purity"]
  tags = _tags(os.path.join(workdir, "tensorboard"))
  assert len(tags["cotrain/cluster_num_clusters"]) == 2
  assert len(tags["cotrain/cluster_pairwise_precision"]) == 2
  assert "loss/cluster_memory" in tags
  assert len(tags["eval/rank1"]) == 3  # before round 1, 2 and at the end
  assert "loss/ver" in tags  # unsupervised.verification_pairs "all"
  model, _ = restore.restore_training_model(workdir)
  assert (model.get_layer("classifier").get_weights()[0].shape[-1]
          == saved[1].num_classes)


def test_clustering_with_source_classes(tmp_path, source_run):
  """Each round trains 3 drawn identities of the labelled source (domain
  "a") beside its groups: classes C .. C + 2, centroids from the round's
  model, in the memory and the classifier."""
  root, source = source_run
  config = _clustering_config(root, source, source_dataset="synthetic",
                              source_root=os.path.join(root, "a"),
                              source_identities=3)
  workdir = str(tmp_path / "run")
  stages.train(config, workdir)

  progress = runs.Progress.load(workdir)
  dataset = from_config.load_stage_dataset(config.stages.target, config)
  paths = [r.path for r in dataset.train]
  source_set = from_config.load_stage_dataset(
      schema.stage_config(dataset="synthetic", root=os.path.join(root, "a")),
      config)
  source_pids = {r.pid for r in source_set.train}
  saved = [cotraining.load_labels(runs.round_labels_path(workdir, "target", r),
                                  paths) for r in (1, 2)]
  for labels, finished in zip(saved, progress.finished[1::2]):
    groups = int(labels.labels.max()) + 1
    assert len(labels.source_pids) == 3
    assert set(labels.source_pids.tolist()) <= source_pids
    assert finished.num_classes == labels.num_classes == groups + 3
  # Round 2's source centroids: the normalised mean feature of each drawn
  # identity's images under the model that ended round 1.
  after_round1 = restore.rebuild_model(config, saved[0].num_classes,
                                       progress.finished[1].checkpoint)
  drawn = saved[1].source_pids
  for i, pid in enumerate(drawn):
    images = [r for r in source_set.train if r.pid == pid]
    mean = cotraining.extract_features(after_round1, images, config).mean(0)
    np.testing.assert_allclose(saved[1].centroids[-3 + i],
                               mean / np.linalg.norm(mean), atol=1e-5)
  # The memory and the classifier cover the groups and the source classes.
  reader = tf.train.load_checkpoint(progress.finished[3].checkpoint)
  (memory_key,) = [k for k in reader.get_variable_to_shape_map()
                   if k.startswith("cluster_memory/")
                   and "OPTIMIZER" not in k]
  assert reader.get_tensor(memory_key).shape == saved[1].centroids.shape
  model, _ = restore.restore_training_model(workdir)
  assert (model.get_layer("classifier").get_weights()[0].shape[-1]
          == saved[1].num_classes)


def _one_camera(monkeypatch):
  """The target's training images all from camera 0."""
  load = from_config.load_stage_dataset

  def one_camera(stage, cfg):
    dataset = load(stage, cfg)
    if "domain=b" in stage.options:
      dataset.train = [type(r)(r.path, r.pid, 0) for r in dataset.train]
    return dataset
  monkeypatch.setattr(from_config, "load_stage_dataset", one_camera)


def test_clustering_trains_on_one_camera_cotraining_refuses_it(
    tmp_path, source_run, monkeypatch):
  root, source = source_run
  _one_camera(monkeypatch)
  config = _clustering_config(root, source, rounds=1)
  config.stages.target.step2_iterations = 2
  metrics = stages.train(config, str(tmp_path / "clustering"))
  assert 0.0 < metrics["rank20"] <= 1.0
  with pytest.raises(ValueError, match="leaves camera A with"):
    stages.train(_target_config(root, source, "cotraining"),
                 str(tmp_path / "cotraining"))


def test_clustering_without_a_cluster_trains_nothing(tmp_path, source_run):
  root, source = source_run
  config = _clustering_config(root, source, cluster_min_samples=100)
  workdir = str(tmp_path / "run")
  with pytest.raises(ValueError, match=r"DBSCAN found no cluster .* eps=0.6 "
                     r"and min_samples=100"):
    stages.train(config, workdir)
  assert runs.Progress.load(workdir).finished == []
  assert not os.path.exists(runs.checkpoints_dir(workdir))
  assert not os.path.exists(runs.round_labels_path(workdir, "target", 1))


class _Killed(Exception):
  pass


@pytest.mark.slow
def test_clustering_resume_mid_step_restores_the_memory(tmp_path, source_run,
                                                        monkeypatch):
  """Killed after iteration 2 of round 2's step 2 (checkpointed) and
  resumed: the same weights as without the kill, which needs the memory as
  it was at the kill (the loss of iteration 3 reads it)."""
  root, source = source_run
  config = _clustering_config(root, source)
  full = str(tmp_path / "full")
  stages.train(config, full)

  killed = str(tmp_path / "killed")
  with monkeypatch.context() as patch:
    make_iteration, run_step = loop.make_train_iteration, loop.run_fine_tuning_step
    stage_of = []

    def remembers_stage(model, step, **kwargs):
      stage_of.append((step.stage, step.step))
      return run_step(model, step, **kwargs)

    def dies_after_two(*args, **kwargs):
      iteration = make_iteration(*args, **kwargs)
      if stage_of[-1] != ("target/round2", 2):
        return iteration
      assert kwargs["memory"] is not None
      calls = []

      def counted(iterator):
        if len(calls) == 2:
          raise _Killed()
        calls.append(1)
        return iteration(iterator)
      return counted
    patch.setattr(loop, "make_train_iteration", dies_after_two)
    patch.setattr(loop, "run_fine_tuning_step", remembers_stage)
    with pytest.raises(_Killed):
      stages.train(config, killed)
  step_dir = runs.step_dir(killed, "target/round2", 2)
  assert tf.train.latest_checkpoint(step_dir).endswith("-2")
  stages.train(config, killed)
  for a, b in zip(_weights(full), _weights(killed)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("supervision", ["cotraining", "clustering"])
def test_hidden_identities_never_reach_training(tmp_path, source_run,
                                                monkeypatch, supervision):
  """Shuffling the target's training pids changes nothing that trains."""
  root, source = source_run
  if supervision == "clustering":
    config = _clustering_config(root, source)
  else:
    config = _target_config(root, source, "cotraining",
                            unsupervised=dict(pseudo_labels="hard"))
  plain = str(tmp_path / "plain")
  stages.train(config, plain)

  load = from_config.load_stage_dataset

  def shuffled_pids(stage, cfg):
    dataset = load(stage, cfg)
    if "domain=b" in stage.options:
      pids = np.random.default_rng(7).permutation(
          [r.pid for r in dataset.train])
      dataset.train = [type(r)(r.path, int(p), r.camid)
                       for r, p in zip(dataset.train, pids)]
      assert pids.tolist() != [r.pid for r in load(stage, cfg).train]
    return dataset
  monkeypatch.setattr(from_config, "load_stage_dataset", shuffled_pids)
  shuffled = str(tmp_path / "shuffled")
  stages.train(config, shuffled)

  for a, b in zip(_weights(plain), _weights(shuffled)):
    np.testing.assert_array_equal(a, b)
  losses_plain = _tags(os.path.join(plain, "tensorboard"))["loss/total"]
  losses_shuffled = _tags(os.path.join(shuffled, "tensorboard"))["loss/total"]
  assert losses_plain == losses_shuffled
  for r in (1, 2):
    a = runs.round_labels_path(plain, "target", r)
    b = runs.round_labels_path(shuffled, "target", r)
    with np.load(a) as x, np.load(b) as y:
      np.testing.assert_array_equal(x["labels"], y["labels"])


@pytest.mark.slow
@pytest.mark.parametrize("where", ["between_rounds", "mid_round"])
def test_resume_matches_uninterrupted_run(tmp_path, source_run, monkeypatch,
                                          where):
  root, source = source_run
  config = _target_config(root, source, "cotraining")
  full = str(tmp_path / "full")
  m_full = stages.train(config, full)

  killed = str(tmp_path / "killed")
  with monkeypatch.context() as patch:
    if where == "between_rounds":  # round 1 done, round 2's labels not made
      make_labels = cotraining.make_labels
      calls = []

      def dies_in_round2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
          raise _Killed()
        return make_labels(*args, **kwargs)
      patch.setattr(cotraining, "make_labels", dies_in_round2)
    else:  # round 2's labels saved and step 1 done, killed in step 2
      run_fine_tuning_step = loop.run_fine_tuning_step

      def dies_in_round2_step2(model, step, **kwargs):
        if step.stage == "target/round2" and step.step == 2:
          raise _Killed()
        return run_fine_tuning_step(model, step, **kwargs)
      patch.setattr(loop, "run_fine_tuning_step", dies_in_round2_step2)
    with pytest.raises(_Killed):
      stages.train(config, killed)
  done = [(p.stage, p.step)
          for p in runs.Progress.load(killed).finished]
  assert done == ([("target/round1", 1), ("target/round1", 2)]
                  + ([("target/round2", 1)] if where == "mid_round" else []))
  assert os.path.exists(runs.round_labels_path(killed, "target", 2)) == (
      where == "mid_round")

  m_killed = stages.train(config, killed)
  for a, b in zip(_weights(full), _weights(killed)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  for key in ("rank1", "mAP"):
    assert m_full[key] == pytest.approx(m_killed[key], abs=1e-6)


def test_config_errors_name_the_key(tmp_path, source_run):
  root, source = source_run
  # The numeric keys' ranges are config_ranges' (one line, its wording and
  # fix), not repeated by cotraining.check_stage.
  ranges = r": expected {}\. Fix it in the config file"
  for overrides, match in (
      (dict(supervision="cotrain"), r"stages.target.supervision='cotrain'"),
      (dict(unsupervised=dict(pseudo_labels="fuzzy")),
       r"stages.target.unsupervised.pseudo_labels='fuzzy'"),
      (dict(unsupervised=dict(rounds=0)), r"stages.target.unsupervised.rounds=0"
       + ranges.format(r"an integer >= 1")),
      (dict(unsupervised=dict(verification_pairs="confident")),
       r"stages.target.unsupervised.verification_pairs='confident': expected "
       r"one of \['all', 'none'\]"),
      (dict(unsupervised=dict(soft_temperature=0.0)),
       r"stages.target.unsupervised.soft_temperature=0.0"
       + ranges.format(r"a finite number > 0")),
      (dict(unsupervised=dict(soft_top_m=0)),
       r"stages.target.unsupervised.soft_top_m=0"
       + ranges.format(r"an integer >= 1")),
      (dict(unsupervised=dict(graph_k=0)),
       r"stages.target.unsupervised.graph_k=0"
       + ranges.format(r"an integer >= 1")),
      (dict(unsupervised=dict(grdl_lambda=-1.0)),
       r"stages.target.unsupervised.grdl_lambda=-1.0"
       + ranges.format(r"a finite number >= 0")),
      (dict(unsupervised=dict(grdl_atoms=0)),
       r"stages.target.unsupervised.grdl_atoms=0"
       + ranges.format(r"an integer >= 1")),
      (dict(unsupervised=dict(grdl_iterations=0)),
       r"stages.target.unsupervised.grdl_iterations=0"
       + ranges.format(r"an integer >= 1")),
      (dict(step1_iterations=0, step2_iterations=0), r"step1_iterations \+ step2_iterations"),
      (dict(unsupervised=dict(camera_a=5)),
       r"camera_a=5 leaves camera A with 0"),
      (dict(supervision="clustering", unsupervised=dict(rounds=0)),
       r"stages.target.unsupervised.rounds=0" + ranges.format(r"an integer >= 1")),
      (dict(supervision="clustering", unsupervised=dict(cluster_eps=0.0)),
       r"stages.target.unsupervised.cluster_eps=0.0"
       + ranges.format(r"a finite number > 0")),
      (dict(supervision="clustering",
            unsupervised=dict(cluster_min_samples=0)),
       r"stages.target.unsupervised.cluster_min_samples=0"
       + ranges.format(r"an integer >= 1 \(the image included\)")),
      (dict(supervision="clustering", unsupervised=dict(memory_momentum=1.0)),
       r"stages.target.unsupervised.memory_momentum=1.0"
       + ranges.format(r"a finite number in \[0, 1\)")),
      (dict(supervision="clustering", ids_per_batch=50,
            unsupervised=_CLUSTERING),
       r"DBSCAN found \d+ clusters .* fewer than ids_per_batch=50")):
    config = _target_config(root, source, "cotraining")
    config.stages.target.update(overrides)
    with pytest.raises(ValueError, match=match):
      stages.train(config, str(tmp_path / "bad"))
  config = _target_config(root, source, "self_training")
  config.loss.triplet_weight = 0.5
  with pytest.raises(ValueError, match="unsupervised.pseudo_labels=hard"):
    stages.check_config(config)


def test_first_image_split_makes_each_identitys_first_image_camera_a():
  np.testing.assert_array_equal(
      cotraining.first_image_split([3, 1, 3, 2, 1, 3]),
      [True, True, False, True, False, False])


def _clusters(num_ids=6, per_id=3, dim=16, noise=0.3, seed=0):
  rng = np.random.default_rng(seed)
  pids = np.repeat(np.arange(1, num_ids + 1), per_id)
  centres = rng.normal(size=(num_ids + 1, dim))
  return (centres[pids] + noise * rng.normal(size=(pids.size, dim))), pids


def test_cross_validate_lambda_scores_each_lambda_like_the_rounds_do():
  features, pids = _clusters()
  stage = schema.stage_config(supervision="cotraining", unsupervised=dict(
      graph_k=2, grdl_atoms=4, grdl_iterations=3, pseudo_labels="hard"))
  result = cotraining.cross_validate_lambda(features, pids, stage,
                                            [0.0, 0.1, 10.0], seed=3)
  assert [r["lambda"] for r in result["rows"]] == [None, 0.0, 0.1, 10.0]
  assert (result["num_a"], result["num_b"]) == (6, 12)
  # Oracle: a round's own labelling with the same camera split and lambda.
  is_a = cotraining.first_image_split(pids)
  camids = np.where(is_a, 0, 1)
  for row in result["rows"]:
    trial = stage.copy_and_resolve_references()
    if row["lambda"] is None:
      trial.supervision = "self_training"
    else:
      trial.unsupervised.grdl_lambda = row["lambda"]
    labels = cotraining.make_labels(features, camids, trial, seed=3)
    expected = cotraining.pseudo_labels.label_accuracy(labels.labels, pids,
                                                       labels.is_a)
    assert row["accuracy"] == expected["accuracy"], row
    assert row["soft_mass"] == expected["soft_mass"], row
  scored = [r for r in result["rows"] if r["lambda"] is not None]
  best = max(r["accuracy"] for r in scored)
  assert result["best_lambda"] in [r["lambda"] for r in scored
                                   if r["accuracy"] == best]
  # Well separated identities: feature-space labels are right.
  assert result["rows"][0]["accuracy"] == 1.0


@pytest.mark.parametrize("lambdas,pids,match", [
    ([], None, "one or more values"),
    ([-1.0], None, "one or more values >= 0"),
    ([0.1], np.arange(6), "one image"),
])
def test_cross_validate_lambda_rejects_what_it_cannot_score(lambdas, pids,
                                                            match):
  features, cluster_pids = _clusters()
  stage = schema.stage_config(supervision="cotraining", unsupervised=dict(
      graph_k=2, grdl_atoms=4, grdl_iterations=2))
  if pids is not None:
    features = features[:pids.size]
  with pytest.raises(ValueError, match=match):
    cotraining.cross_validate_lambda(
        features, cluster_pids if pids is None else pids, stage, lambdas)


def test_select_grdl_lambda_entry_point_on_a_source_run(tmp_path, source_run):
  root, source = source_run
  out = str(tmp_path / "cv.json")
  repo = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  proc = subprocess.run(
      [sys.executable, "-m", "keras_reid.tools.select_grdl_lambda",
       f"--workdir={source}",
       f"--config={os.path.join(repo, 'configs', 'synthetic_cotrain.py')}"
       f":cotraining,{source}", "--target=target", "--lambdas=0,0.01",
       "--config.stages.target.unsupervised.grdl_atoms=8",
       "--config.stages.target.unsupervised.grdl_iterations=2",
       f"--output_json={out}"],
      cwd=repo, capture_output=True, text=True, timeout=600, check=False,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(out) as f:
    result = json.load(f)
  assert (f"--config.stages.target.unsupervised.grdl_lambda="
          f"{result['best_lambda']:g}") in proc.stdout
  # Oracle: the library on the source model's features of the same images.
  model, config = restore.restore_training_model(source)
  records = list(from_config.load_stage_dataset(config.stages.synthetic,
                                                config).train)
  target = schema.stage_config(supervision="cotraining", unsupervised=dict(
      graph_k=3, grdl_atoms=8, grdl_iterations=2, pseudo_labels="soft",
      soft_top_m=5))
  expected = cotraining.cross_validate_lambda(
      cotraining.extract_features(model, records, config),
      [r.pid for r in records], target, [0.0, 0.01], seed=0)
  assert [r["lambda"] for r in result["rows"]] == [None, 0.0, 0.01]
  for got, want in zip(result["rows"], expected["rows"]):
    assert got["accuracy"] == pytest.approx(want["accuracy"], abs=1e-9)
  assert result["best_lambda"] == expected["best_lambda"]
  assert result["source_stage"] == "synthetic"
  # A source stage reading the target's own images is refused.
  proc = subprocess.run(
      [sys.executable, "-m", "keras_reid.tools.select_grdl_lambda",
       f"--workdir={source}",
       f"--config={os.path.join(repo, 'configs', 'synthetic_cotrain.py')}"
       f":cotraining,{source}", "--target=target",
       "--config.stages.target.root="],
      cwd=repo, capture_output=True, text=True, timeout=600, check=False,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert proc.returncode != 0
  assert "the target's own images" in proc.stderr, proc.stderr[-2000:]


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

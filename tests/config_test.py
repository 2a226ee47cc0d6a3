"""Tests for the config schema and keras_reid.config helpers."""

import glob
import importlib
import json
import os

import pytest

from configs import default
from configs import staged_googlenet
from configs import viper_cpu
from keras_reid import config as config_lib
from keras_reid import config_ranges
from keras_reid import schema
from keras_reid.training import cotraining
from keras_reid.training import stages


def test_default_config_is_valid():
  config = default.get_config()
  config_lib.validate_config(config)
  assert list(config.stages.keys()) == ["synthetic"]


CONFIG_FILES = sorted(
    os.path.basename(p)[:-3] for p in glob.glob(
        os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     "configs", "*.py"))
    if not os.path.basename(p).startswith("__"))
# Shared helpers of the experiment configs: no get_config of their own.
HELPER_MODULES = {"paper"}
EXPERIMENTS = [n for n in CONFIG_FILES if n not in HELPER_MODULES]


def test_only_the_known_helpers_lack_get_config():
  lacking = {n for n in CONFIG_FILES
             if not hasattr(importlib.import_module(f"configs.{n}"),
                            "get_config")}
  assert lacking == HELPER_MODULES
  assert len(EXPERIMENTS) >= 5


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_config_is_valid(name):
  config = importlib.import_module(f"configs.{name}").get_config()
  stages.check_config(config)
  # Same schema as the default: an override valid for one is valid for all.
  assert set(config.keys()) == set(schema.base_config().keys())
  for stage in config.stages.values():
    assert set(stage.keys()) == set(schema.stage_config().keys())
    assert set(stage.unsupervised.keys()) == set(
        schema.stage_config().unsupervised.keys())


def test_staged_config_rejects_unknown_target():
  assert staged_googlenet.get_config("prid2011").stages.target.dataset == "prid2011"
  with pytest.raises(ValueError, match="viper"):
    staged_googlenet.get_config("grid")


@pytest.mark.parametrize("name", ["synthetic_cotrain", "viper_cotrain_cpu"])
def test_cotraining_configs_take_supervision_and_source_run(name):
  module = importlib.import_module(f"configs.{name}")
  # The configs' choices are the package's unsupervised modes.
  assert set(schema.UNSUPERVISED) == set(cotraining.SUPERVISIONS) - {"labels"}
  for supervision in schema.UNSUPERVISED:
    config = module.get_config(f"{supervision},/runs/source")
    (target,) = [s for s in config.stages.values()
                 if s.supervision != "labels"]
    assert (target.supervision, target.init) == (supervision, "/runs/source")
    assert len(config.stages) == 1  # the source stage is the given run
  assert len(module.get_config("cotraining").stages) == 2
  with pytest.raises(ValueError, match=rf"configs/{name}\.py:labels: expected "
                     r"SUPERVISION\[,SOURCE_RUN\]"):
    module.get_config("labels")


def test_viper_cluster_config_builds_and_clusters_a_viper_shaped_set():
  from configs import viper_cluster_cpu  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  config = viper_cluster_cpu.get_config("/runs/source")
  assert list(config.stages) == ["viper"]
  viper = config.stages.viper
  assert (viper.supervision, viper.init, viper.dataset) == (
      "clustering", "/runs/source", "viper")
  assert config.loss.cluster_memory_weight > 0
  stages.check_config(config)
  assert list(viper_cluster_cpu.get_config().stages) == ["reid_pool", "viper"]
  assert viper.unsupervised.source_dataset == ""  # no source classes
  # "source_classes": reid_pool's identities beside the groups, any order.
  for arg in ("source_classes,/runs/source", "/runs/source,source_classes"):
    with_source = viper_cluster_cpu.get_config(arg).stages.viper
    assert with_source.init == "/runs/source"
    assert with_source.unsupervised.source_dataset == "manifest"
    assert with_source.unsupervised.source_root == os.path.join(
        viper_cpu.data_root(), "reid_pool")
  # Tiny scale: its clustering settings on features shaped like VIPeR's
  # training split (316 identities x one image in each of 2 cameras) find
  # the identities' pairs, enough of them for its K x M batches.
  rng = np.random.default_rng(0)
  pids = np.repeat(np.arange(316), 2)
  camids = np.tile([0, 1], 316)
  features = rng.normal(size=(316, 32))[pids] + 0.3 * rng.normal(
      size=(632, 32))
  labels = cotraining.make_labels(features, camids, viper)
  assert labels.num_classes >= viper.ids_per_batch
  quality = cotraining.clustering.cluster_quality(labels.labels, pids)
  assert quality["pairwise_precision"] > 0.9, quality
  assert quality["num_clusters"] > 250, quality


def test_wrong_type_names_the_key():
  config = default.get_config()
  with pytest.raises(TypeError, match="image_height"):
    config.data.image_height = "tall"


def test_unknown_key_is_an_error_once_locked():
  config = default.get_config()
  config.lock()
  with pytest.raises(AttributeError, match="lrr"):
    config.train.lrr = 0.1


def test_validate_names_bad_value():
  config = default.get_config()
  config.model.ver_dropout_mode = "sometimes"
  with pytest.raises(ValueError, match="model.ver_dropout_mode.*pairwise"):
    stages.check_config(config)
  config = default.get_config()
  config.stages.synthetic.images_per_id = 1
  with pytest.raises(ValueError, match="stages.synthetic.images_per_id"):
    config_lib.validate_config(config)


@pytest.mark.parametrize("key, value, valid", [
    ("model.backbone", "alexnet", "mobilenet_v1"),
    ("train.distribute", "tpu", "mirrored"),
    ("stages.synthetic.dataset", "synthetic+nope", "viper"),
    ("model.pooling", "max", "gem"),
    ("model.retrieval_feature", "after", "bnneck"),
])
def test_names_are_checked_against_their_registries(key, value, valid):
  config = default.get_config()
  section, _, field = key.rpartition(".")
  target = config
  for part in section.split("."):
    target = target[part]
  target[field] = value
  with pytest.raises(ValueError, match=f"config.{key}=.*{valid}"):
    stages.check_config(config)


@pytest.mark.parametrize("changes, keys", [
    # Retrieval after a BNNeck that is not there.
    (dict(retrieval_feature="bnneck"),
     ("model.retrieval_feature='bnneck'", "model.bnneck=True")),
    # GeM settings with average pooling do nothing.
    (dict(gem_p=4.0), ("model.gem_p=4.0", "model.pooling='avg'")),
    (dict(gem_p_trainable=False),
     ("model.gem_p_trainable=False", "model.pooling='avg'")),
])
def test_strong_model_combinations_that_cannot_work_name_both_keys(changes,
                                                                   keys):
  config = default.get_config()
  config.model.update(changes)
  with pytest.raises(ValueError) as error:
    config_lib.validate_config(config)
  for key in keys:
    assert key in str(error.value)


def test_cir_without_the_verification_loss_is_refused_naming_both_keys():
  config = default.get_config()
  config.eval.cir_topk = 10
  config_lib.validate_config(config)  # ver_weight 3: a verification head
  config.loss.ver_weight = 0.0
  with pytest.raises(ValueError) as error:
    stages.check_config(config)
  message = str(error.value)
  assert message.startswith(
      "config.eval.cir_topk=10 with config.loss.ver_weight=0.0: ")
  assert "--config.eval.cir_topk=0" in message and "\n" not in message
  config.eval.cir_topk = 0
  stages.check_config(config)


@pytest.mark.parametrize("changes, message", [
    (dict(pooling="gem", gem_p=0.0), "model.gem_p=0.0: expected a finite "
     "number > 0"),
    (dict(last_stride=4), r"model.last_stride=4: expected an integer in \[1, 2\]"),
    # A backbone without a stride-1 rebuild: named with those that have one.
    (dict(backbone="inception_v3", last_stride=1),
     "last_stride=1 is not supported by model.backbone='inception_v3'.*"
     "'resnet50'"),
])
def test_strong_model_values_out_of_range_are_named(changes, message):
  config = default.get_config()
  config.model.update(changes)
  with pytest.raises(ValueError, match=message):
    stages.check_config(config)


def test_strong_model_switches_pass_together():
  config = default.get_config()
  config.model.update(dict(bnneck=True, retrieval_feature="bnneck",
                           pooling="gem", gem_p=4.0, gem_p_trainable=False,
                           last_stride=1, backbone="resnet50"))
  stages.check_config(config)


def test_save_and_load_round_trip(tmp_path):
  config = default.get_config()
  config.train.momentum = 0.5
  path = config_lib.save_config(config, str(tmp_path))
  assert os.path.exists(path)
  loaded = config_lib.load_config(str(tmp_path))
  assert loaded.train.momentum == 0.5
  assert loaded.stages.synthetic.dataset == "synthetic"
  assert loaded.to_dict() == config.to_dict()


def test_load_missing_config_names_the_run(tmp_path):
  with pytest.raises(FileNotFoundError, match=str(tmp_path)):
    config_lib.load_config(str(tmp_path))


def test_default_experiment_is_the_package_one():
  from keras_reid import default as package_default  # pylint: disable=g-import-not-at-top
  assert default.get_config().to_dict() == package_default.get_config().to_dict()


def test_stage_config_takes_unsupervised_settings_as_a_sub_dict():
  stage = schema.stage_config(step2_lr=0.5, unsupervised=dict(rounds=2))
  assert (stage.step2_lr, stage.unsupervised.rounds) == (0.5, 2)
  # The sub-dict's other keys keep their defaults.
  assert stage.unsupervised.graph_k == schema.stage_config().unsupervised.graph_k
  with pytest.raises(KeyError, match=r"unsupervised=dict\(rounds=2\)"):
    schema.stage_config(rounds=2)
  with pytest.raises(KeyError, match="step2_lrr"):
    schema.stage_config(step2_lrr=0.5)
  with pytest.raises(KeyError, match="roundz"):
    schema.stage_config(unsupervised=dict(roundz=2))


# A stage of a config.json written before the unsupervised settings moved
# into stage.unsupervised: they were stage keys (non-default values).
_FLAT_UNSUPERVISED = dict(
    rounds=2, camera_a=1, pseudo_labels="hard", soft_top_m=3,
    soft_temperature=0.5, graph_k=4, grdl_lambda=0.1, grdl_atoms=64,
    grdl_iterations=7)


def _write_old_config(workdir, stage_keys: dict, drop=()):
  """A config.json as an older keras_reid wrote it: today's default config
  with `drop` removed from its stage and `stage_keys` set at the stage
  level, before its unsupervised sub-dict (gone)."""
  data = json.loads(default.get_config().to_json())
  stage = data["stages"]["synthetic"]
  del stage["unsupervised"]
  for key in drop:
    del stage[key]
  stage.update(stage_keys)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, config_lib.CONFIG_FILE), "w") as f:
    json.dump(data, f)
  return data


def test_old_config_with_flat_unsupervised_keys_loads_into_the_sub_dict(
    tmp_path):
  _write_old_config(str(tmp_path), dict(supervision="cotraining",
                                        **_FLAT_UNSUPERVISED))
  loaded = config_lib.load_config(str(tmp_path))
  stage = loaded.stages.synthetic
  assert stage.supervision == "cotraining"
  assert {k: stage.unsupervised[k]
          for k in _FLAT_UNSUPERVISED} == _FLAT_UNSUPERVISED
  for key in _FLAT_UNSUPERVISED:
    assert key not in stage
  # The layout is today's: what a run saved now reloads to.
  expected = default.get_config()
  expected.stages.synthetic.supervision = "cotraining"
  expected.stages.synthetic.unsupervised.update(_FLAT_UNSUPERVISED)
  assert loaded.to_dict() == expected.to_dict()
  stages.check_config(loaded)


def test_old_config_before_the_supervision_keys_loads_with_their_defaults(
    tmp_path):
  _write_old_config(str(tmp_path), {}, drop=("supervision",))
  loaded = config_lib.load_config(str(tmp_path))
  assert loaded.stages.synthetic.supervision == "labels"
  assert loaded.stages.synthetic.unsupervised.to_dict() == (
      schema.stage_config().unsupervised.to_dict())
  assert loaded.to_dict() == default.get_config().to_dict()


def test_rename_old_keys_keeps_the_order_and_the_sub_dicts_values():
  data = {"stages": {"s": {"dataset": "viper",
                           "supervision": "cotraining", "rounds": 2,
                           "graph_k": 4, "eval_every": 0,
                           "unsupervised": {"graph_k": 9}}}}
  config_lib.rename_old_keys(data)
  stage = data["stages"]["s"]
  # The sub-dict takes the place of the first moved key; where both give a
  # value, the sub-dict's wins.
  assert list(stage) == ["dataset", "supervision", "unsupervised",
                         "eval_every"]
  assert stage["unsupervised"] == {"rounds": 2, "graph_k": 9}
  with pytest.raises(ValueError, match="unsupervised=3.*rounds"):
    config_lib.rename_old_keys({"stages": {"s": {"rounds": 2,
                                                 "unsupervised": 3}}})


def test_differences_compare_a_stage_sub_dict_with_the_schemas():
  config = default.get_config()
  config.stages.synthetic.unsupervised.grdl_lambda = 0.1
  config.stages.synthetic.unsupervised.rounds = 3  # the default
  differences = config_lib.differences(config)
  assert differences == {
      "stages.synthetic.step2_iterations": 1000,
      "stages.synthetic.step2_lr": 0.03,
      "stages.synthetic.lr_decay_iterations": 700,
      "stages.synthetic.unsupervised.grdl_lambda": 0.1}
  described = config_lib.describe_run(config)
  assert described["stages.synthetic.unsupervised.grdl_lambda"] == 0.1
  assert "stages.synthetic.unsupervised.rounds" not in described
  # A config.json from before the move compares the same once renamed.
  data = json.loads(default.get_config().to_json())
  stage = data["stages"]["synthetic"]
  # (without the keys added to the sub-dict since, as such a file has them)
  moved = config_lib.MOVED_STAGE_KEYS["unsupervised"]
  stage.update({k: v for k, v in stage.pop("unsupervised").items()
                if k in moved}, grdl_lambda=0.1)
  assert config_lib.differences(config_lib.rename_old_keys(data)) == (
      differences)
  base_top, base_stage = config_lib.base_fields()
  assert base_stage["unsupervised.grdl_lambda"] == 0.01
  assert "stages" not in base_top


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))


def _numeric_keys(config) -> dict:
  return {k: v for k, v in config_lib.flatten(config).items()
          if isinstance(v, (int, float)) and not isinstance(v, bool)}


def test_every_numeric_key_has_a_range_its_default_satisfies():
  config = schema.base_config()
  config.stages.s = schema.stage_config()
  keys = _numeric_keys(config)
  missing = sorted({config_ranges.range_key(k) for k in keys}
                   - set(config_ranges.RANGES))
  assert not missing, f"add these keys to config_ranges.RANGES: {missing}"
  unused = sorted(set(config_ranges.RANGES)
                  - {config_ranges.range_key(k) for k in keys})
  assert not unused, f"RANGES names keys the schema lacks: {unused}"
  config_ranges.check_ranges(config_lib.flatten(config))


# Hostile config values, each refused before training.
@pytest.mark.parametrize("key, value, expected", [
    ("stages.synthetic.step2_lr", -0.01, "> 0"),
    ("stages.synthetic.step1_lr", float("nan"), "a finite number > 0"),
    ("train.momentum", float("inf"), "in [0, 1)"),
    ("train.weight_decay", -10.0, ">= 0"),
    ("loss.label_smoothing", 2.0, "in [0, 1)"),
    ("stages.synthetic.lr_decay_factor", -1.0, "in (0, 1]"),
    ("stages.synthetic.lr_decay_iterations", 0, "an integer >= 1"),
    ("train.checkpoint_every", 0, "an integer >= 1"),
    ("train.log_every", 0, "an integer >= 1"),
    ("data.eval_batch_size", 0, "an integer >= 1"),
    ("seed", -1, "an integer in [0, 2147483647]"),
    ("model.cls_dropout", 1.0, "in [0, 1)"),
    ("stages.synthetic.unsupervised.rounds", 0, "an integer >= 1"),
    ("stages.synthetic.unsupervised.soft_temperature", 0.0, "> 0"),
])
def test_out_of_range_values_are_one_line_naming_key_value_and_range(
    key, value, expected):
  config = default.get_config()
  *path, leaf = key.split(".")
  node = config
  for part in path:
    node = node[part]
  node[leaf] = value
  with pytest.raises(ValueError) as e:
    config_lib.validate_config(config)
  message = str(e.value)
  assert message.startswith(f"config.{key}={value!r}: expected ")
  assert expected in message, message
  assert f"--config.{key}=VALUE" in message
  assert "\n" not in message


def test_range_edges_and_types():
  r = config_ranges.Range(0., 1., high_open=True)
  assert r.contains(0) and r.contains(0.5) and not r.contains(1.0)
  assert not r.contains(float("nan")) and not r.contains(True)
  assert not config_ranges.Range(integer=True).contains(1.5)
  assert config_ranges.range_key("stages.viper.unsupervised.rounds") == (
      "stage.unsupervised.rounds")
  assert config_ranges.range_key("train.log_every") == "train.log_every"

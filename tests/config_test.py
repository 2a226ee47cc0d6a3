"""Tests for the config schema and keras_reid.config helpers."""

import glob
import importlib
import os

import pytest

from configs import default
from configs import staged_googlenet
from keras_reid import config as config_lib
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


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

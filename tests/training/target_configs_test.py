"""The small-set configs train and evaluate on PRID 2011 and CUHK01 layouts.

The VIPeR recipes run on another small set with the same code and
no change of settings but the target. Here each config is pointed (through
REID_DATA_ROOT, as a user would) at a generated copy of the dataset's
published layout and counts (PRID 2011 single_shot: 385 cam_a / 749 cam_b
persons, 200 in both; CUHK01: 971 persons x 4 images), then its target stage
trains and is evaluated under the dataset's protocol. Only what does not
concern the target is shrunk: the model (tests' tiny one, no ImageNet file),
the input size and the iteration counts; the large-set stage of the staged
configs is left out (it reads other datasets) and the target starts from the
backbone.
"""

import importlib
import io
import json
import os

import numpy as np
from PIL import Image
import pytest

from keras_reid.data import from_config
from keras_reid.training import stages
from tests.training import tiny_config


def _png_blobs(count=8):
  """A few distinct small PNG images, written as every file of a layout."""
  rng = np.random.default_rng(0)
  blobs = []
  for _ in range(count):
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (16, 8, 3), dtype=np.uint8)).save(
        buffer, format="PNG")
    blobs.append(buffer.getvalue())
  return blobs


def _write(paths):
  blobs = _png_blobs()
  for k, path in enumerate(paths):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(blobs[k % len(blobs)])


def _prid2011(folder):
  base = os.path.join(folder, "single_shot")
  _write([os.path.join(base, "cam_a", f"person_{p:04d}.png")
          for p in range(1, 386)] +
         [os.path.join(base, "cam_b", f"person_{p:04d}.png")
          for p in range(1, 750)])


def _cuhk01(folder):
  _write([os.path.join(folder, "campus", f"{p:04d}{k:03d}.png")
          for p in range(1, 972) for k in range(1, 5)])


# (config file, argument, target stage, target folder under REID_DATA_ROOT
# that the config expects, layout writer, expected split summary)
PRID_SUMMARY = dict(num_train_ids=100, num_train_images=200, num_query_ids=100,
                    num_query_images=100, num_gallery_ids=649,
                    num_gallery_images=649, num_cameras=2)
CUHK01_SUMMARY = dict(num_train_ids=485, num_train_images=1940,
                      num_query_ids=486, num_query_images=972,
                      num_gallery_ids=486, num_gallery_images=972,
                      num_cameras=2)
CASES = [
    ("viper_cpu", "prid2011,direct", "prid2011", "prid2011", _prid2011,
     PRID_SUMMARY),
    ("viper_best_cpu", "cuhk01,direct", "cuhk01", "cuhk01", _cuhk01,
     CUHK01_SUMMARY),
    ("viper_strong_cpu", "prid2011,direct", "prid2011", "prid2011", _prid2011,
     PRID_SUMMARY),
    ("staged_googlenet", "prid2011", "target", "prid_2011", _prid2011,
     PRID_SUMMARY),
    ("staged_googlenet", "cuhk01", "target", "CUHK01", _cuhk01,
     CUHK01_SUMMARY),
]


def _shrunk(config, stage_name):
  """The config with its target stage alone, a tiny model and few steps."""
  tiny = tiny_config.get_config()
  config.model = tiny.model
  for key in ("image_height", "image_width", "augment_copies",
              "eval_batch_size"):
    config.data[key] = tiny.data[key]
  config.train.precision = tiny.train.precision
  config.train.checkpoint_every = 2
  config.train.log_every = 2
  target = config.stages[stage_name]
  target.update(dict(init="backbone", ids_per_batch=4, images_per_id=2,
                     step1_iterations=1, step2_iterations=2, eval_every=0,
                     step2_warmup_iterations=min(
                         target.step2_warmup_iterations, 1)))
  for name in list(config.stages.keys()):
    if name != stage_name:
      del config.stages[name]
  return config


@pytest.mark.slow
@pytest.mark.parametrize("module,arg,stage_name,folder,write_layout,summary",
                         CASES)
def test_config_trains_and_evaluates_on_the_target_layout(
    tmp_path, monkeypatch, module, arg, stage_name, folder, write_layout,
    summary):
  data_root = tmp_path / "data"
  write_layout(str(data_root / folder))
  monkeypatch.setenv("REID_DATA_ROOT", str(data_root))
  config = importlib.import_module(f"configs.{module}").get_config(arg)
  target = config.stages[stage_name]
  assert target.dataset == arg.split(",")[0]
  config = _shrunk(config, stage_name)

  # The protocol's split: PRID 2011 100 / 100 of the 200 shared persons with
  # the cam_b-only persons in the gallery; CUHK01 485 / 486 persons.
  dataset = from_config.load_stage_dataset(config.stages[stage_name], config)
  assert dataset.summary() == summary

  workdir = str(tmp_path / "run")
  metrics = stages.train(config, workdir)
  assert metrics["dataset"] == target.dataset
  assert metrics["num_queries"] == summary["num_query_images"]
  assert 0.0 <= metrics["rank1"] <= metrics["rank20"] <= 1.0
  with open(os.path.join(workdir, "eval", f"{stage_name}.json")) as f:
    assert json.load(f)["num_queries"] == summary["num_query_images"]
  # The config's evaluation ingredients ran (viper_best_cpu: flip and CIR).
  assert metrics["flip_test"] == config.eval.flip_test
  assert ("cir" in metrics) == (config.eval.cir_topk > 0)
  if config.eval.cir_topk:
    assert metrics["cir"]["cir"]["num_queries"] == summary["num_query_images"]


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

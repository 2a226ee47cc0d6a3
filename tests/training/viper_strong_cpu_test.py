"""configs/viper_strong_cpu.py: the strong CPU recipe's settings, its
extra_pool mode and its argument errors (no training: the recipe's training
is exercised on a PRID 2011 layout by target_configs_test.py, and on real
VIPeR by bench/reproduce.py's row strong_cpu_recipe)."""

import csv
import os

import numpy as np
from PIL import Image
import pytest

from configs import viper_best_cpu
from configs import viper_strong_cpu
from keras_reid.data import from_config
from keras_reid.training import stages


def _manifest(folder, pids, images_per_id=2):
  """A manifest folder (path,pid,camid,source) with tiny distinct images."""
  rng = np.random.default_rng(len(pids))
  rows = []
  for pid in pids:
    for k in range(images_per_id):
      path = os.path.join("images", f"{pid}_{k}.png")
      os.makedirs(os.path.join(folder, "images"), exist_ok=True)
      Image.fromarray(rng.integers(0, 255, (16, 8, 3), dtype=np.uint8)).save(
          os.path.join(folder, path))
      rows.append((path, pid, k % 2, "generated"))
  with open(os.path.join(folder, "manifest.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(("path", "pid", "camid", "source"))
    writer.writerows(rows)


def test_both_stages_have_the_strong_ingredients_the_input_and_the_long_target(
    monkeypatch, tmp_path):
  monkeypatch.setenv("REID_DATA_ROOT", str(tmp_path))
  config = viper_strong_cpu.get_config()
  stages.check_config(config)
  assert (config.model.bnneck, config.model.retrieval_feature) == (
      True, "bnneck")
  assert (config.loss.label_smoothing, config.loss.triplet_weight,
          config.loss.center_weight) == (0.1, 1.0, 0.0005)
  assert config.data.random_erasing_prob == 0.5
  # Both stages at 224x112 (measured above viper_cpu's 128x64 on each of
  # VIPeR splits 0-4).
  assert (config.data.image_height, config.data.image_width) == (224, 112)
  pool, target = config.stages.reid_pool, config.stages.viper
  assert (pool.lr_schedule, pool.step2_warmup_iterations) == ("cosine", 240)
  assert (target.lr_schedule, target.step2_warmup_iterations) == (
      "cosine", 120)
  # The target stage is as long as the best CPU recipe's; no CIR (it
  # lowered the strong model's Rank-1), flip test on.
  best = viper_best_cpu.get_config()
  assert target.step2_iterations == best.stages.viper.step2_iterations
  assert config.eval.flip_test and config.eval.cir_topk == 0
  # The large stage trains on reid_pool alone unless asked.
  assert pool.dataset == "manifest"
  assert pool.root == os.path.join(str(tmp_path), "reid_pool")


def test_extra_pool_pools_both_manifests_in_the_large_stage(
    monkeypatch, tmp_path):
  monkeypatch.setenv("REID_DATA_ROOT", str(tmp_path))
  # The same pid names in both manifests are different people.
  _manifest(str(tmp_path / "reid_pool"), ["a", "b", "c"])
  _manifest(str(tmp_path / "extra_pool"), ["a", "d"], images_per_id=3)
  config = viper_strong_cpu.get_config("viper,extra_pool")
  stages.check_config(config)
  pool = config.stages.reid_pool
  assert pool.dataset == "manifest+manifest"
  assert pool.root == "+".join([str(tmp_path / "reid_pool"),
                                str(tmp_path / "extra_pool")])
  dataset = from_config.load_stage_dataset(pool, config)
  assert len(dataset.train) == 3 * 2 + 2 * 3
  assert len({r.pid for r in dataset.train}) == 5
  # Only the large stage changes: the target stage is the plain recipe's.
  plain = viper_strong_cpu.get_config("viper")
  assert config.stages.viper.to_dict() == plain.stages.viper.to_dict()


@pytest.mark.parametrize("arg,message", [
    ("viper,direct,extra_pool", "use one of them"),
    ("viper,bogus", "expected TARGET"),
    ("market1501", "expected TARGET"),
])
def test_a_bad_argument_names_the_config_and_what_is_expected(arg, message):
  with pytest.raises(ValueError, match=message) as error:
    viper_strong_cpu.get_config(arg)
  assert f"configs/viper_strong_cpu.py:{arg}" in str(error.value) or (
      "viper_cpu.py" in str(error.value))


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

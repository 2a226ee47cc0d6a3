"""configs/market1501_strong.py: the bag-of-tricks GPU recipe builds, trains
and evaluates at tiny scale on the CPU.

The config is pointed (through REID_DATA_ROOT, as a user would) at a
generated Market-1501 folder with the published layout and file names but a
few images; only what a CPU test cannot afford is shrunk (ImageNet weights,
input size, batch, iterations). Everything else, the ingredients included,
is the config's own.
"""

import os

import numpy as np
from PIL import Image
import pytest

from keras_reid import runs
from keras_reid.training import stages

pytestmark = pytest.mark.slow


def _market(root):
  """4 train and 3 test identities over 2 cameras, Market-1501 file names."""
  rng = np.random.default_rng(0)

  def write(folder, pid, cam, k):
    os.makedirs(os.path.join(root, folder), exist_ok=True)
    colour = rng.integers(0, 255, 3)
    image = np.clip(colour + rng.normal(0, 20, (64, 32, 3)), 0, 255)
    Image.fromarray(image.astype(np.uint8)).save(os.path.join(
        root, folder, f"{pid:04d}_c{cam}s1_{k:06d}_01.jpg"))

  for pid in (2, 7, 10, 11):
    for k in range(4):
      write("bounding_box_train", pid, 1 + k % 2, k)
  for pid in (1, 3, 5):
    write("query", pid, 1, 0)
    for k in range(2):
      write("bounding_box_test", pid, 2, k + 1)


def test_market1501_strong_trains_three_iterations_and_evaluates(
    tmp_path, monkeypatch):
  monkeypatch.setenv("REID_DATA_ROOT", str(tmp_path))
  _market(str(tmp_path / "Market-1501-v15.09.15"))
  from configs import market1501_strong
  config = market1501_strong.get_config()
  # The recipe as published: these are what a GPU user trains.
  assert config.model.backbone == "resnet50"
  assert (config.model.last_stride, config.model.bnneck,
          config.model.retrieval_feature) == (1, True, "bnneck")
  assert (config.loss.label_smoothing, config.loss.triplet_weight,
          config.loss.center_weight, config.loss.ver_weight) == (
              0.1, 1.0, 5e-4, 0.0)
  assert config.data.random_erasing_prob == 0.5
  stage = config.stages.market1501
  assert stage.step2_iterations == 120 * 202
  assert stage.root == str(tmp_path / "Market-1501-v15.09.15")
  stages.check_config(config)

  # Shrunk to a CPU test: random weights, a small input, 3 iterations.
  config.model.weights = ""
  config.data.update(dict(image_height=64, image_width=32, eval_batch_size=8,
                          synthetic_dir=str(tmp_path / "unused")))
  config.train.update(dict(checkpoint_every=3, log_every=1, precision="float32"))
  stage.update(dict(options="allow_incomplete=true", ids_per_batch=2,
                    images_per_id=2, step2_iterations=3,
                    step2_warmup_iterations=1, lr_decay_iterations=2,
                    eval_every=0))
  workdir = str(tmp_path / "run")
  metrics = stages.train(config, workdir)
  assert 0.0 <= metrics["rank1"] <= 1.0 and 0.0 <= metrics["mAP"] <= 1.0
  progress = runs.Progress.load(workdir)
  assert [(f.stage, f.step) for f in progress.finished] == [("market1501", 2)]
  assert progress.last.checkpoint.endswith("ckpt-3")


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

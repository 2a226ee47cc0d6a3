"""Real data on a CPU: MobileNet v1 0.5 (ImageNet) -> reid_pool -> VIPeR split 0.

    python -m keras_reid.train --config=configs/viper_cpu.py             # staged, VIPeR
    python -m keras_reid.train --config=configs/viper_cpu.py:viper,direct  # ImageNet -> VIPeR
    python -m keras_reid.train --config=configs/viper_cpu.py:prid2011     # another small set

The argument is "TARGET[,direct]": TARGET is the small set (viper, prid2011,
cuhk01; its stage is named after it, e.g. --config.stages.prid2011.split=3,
and its folder is $REID_DATA_ROOT/<folder of TARGET_FOLDERS>); "direct" drops
the reid_pool stage, so the target stage starts from the ImageNet weights.

The full method at CPU size: classification + 3 x verification with
pairwise-consistent dropout, two-stepped fine-tuning, staged transfer through
reid_pool (GRID, CAVIAR4REID, i-LIDS, 3DPeS) to VIPeR. Reads the real
data from $REID_DATA_ROOT (the layout its own README.md describes). Its measured
result and time are in bench/training_results.md.
"""

import os

from keras_reid import schema


def data_root() -> str:
  return os.environ.get("REID_DATA_ROOT", os.path.join("..", "shared", "data"))


TARGET_FOLDERS = {"viper": "viper", "prid2011": "prid2011", "cuhk01": "cuhk01"}


def get_config(arg: str = "viper"):
  target, *modes = arg.split(",")
  if target not in TARGET_FOLDERS or set(modes) - {"direct"}:
    raise ValueError(
        f"configs/viper_cpu.py:{arg}: expected TARGET[,direct] with TARGET one "
        f"of {sorted(TARGET_FOLDERS)}, e.g. configs/viper_cpu.py:viper,direct.")
  direct = "direct" in modes
  config = schema.base_config()
  root = data_root()
  config.model.update(dict(
      backbone="mobilenet_v1", alpha=0.5,
      weights=os.path.join(
          root, "weights", "mobilenet_v1_0.5_imagenet_bn_no_top.weights.h5")))
  config.data.image_height = 128
  config.data.image_width = 64
  config.train.checkpoint_every = 500
  config.train.log_every = 50
  # K=32 ids x M=2 images = 64 images a batch, as the reference prototype.
  # reid_pool: about 5 + 39 epochs of its 3,984 images (the prototype's
  # 10 + 60 do not fit 30 minutes on 2 cores at ~0.46 s a step-2 iteration);
  # VIPeR: 10 + 30 epochs of its 632 training images, as the prototype.
  if not direct:
    config.stages.reid_pool = schema.stage_config(
        dataset="manifest", root=os.path.join(root, "reid_pool"),
        ids_per_batch=32, images_per_id=2, step1_iterations=300,
        step2_iterations=2400, step1_lr=0.01, step2_lr=0.01,
        lr_decay_iterations=1600, init="backbone")
  config.stages[target] = schema.stage_config(
      dataset=target, root=os.path.join(root, TARGET_FOLDERS[target]), split=0,
      ids_per_batch=32, images_per_id=2, step1_iterations=100,
      step2_iterations=300, step1_lr=0.01, step2_lr=0.005,
      lr_decay_iterations=200,
      init="backbone" if direct else "previous")
  return config

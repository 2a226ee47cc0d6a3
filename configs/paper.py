"""Shared settings of the paper's GPU experiments (Geng et al. 2016).

GoogLeNet at 224x224 with auxiliary heads (6 losses), K=32 ids x M=4 images,
SGD momentum 0.9, lr 1e-3 multiplied by 0.1 every 40K iterations; large
Re-ID sets 20K + 150K iterations, small ones 20K + 20K (step 1 + step 2).
Dataset folders default to $REID_DATA_ROOT/<usual folder name>; override
with --config.stages.<name>.root=DIR.
"""

import os

from keras_reid import schema

LARGE_ITERATIONS = dict(step1_iterations=20000, step2_iterations=150000)
SMALL_ITERATIONS = dict(step1_iterations=20000, step2_iterations=20000)


def dataset_dir(name: str) -> str:
  return os.path.join(os.environ.get("REID_DATA_ROOT", "data"), name)


def paper_stage(**overrides):
  settings = dict(ids_per_batch=32, images_per_id=4, step1_lr=1e-3,
                  step2_lr=1e-3, lr_decay_iterations=40000, lr_decay_factor=0.1,
                  eval_every=10000)
  settings.update(overrides)
  return schema.stage_config(**settings)


def paper_base():
  config = schema.base_config()
  config.model.update(dict(backbone="googlenet", weights="imagenet",
                           aux_heads=True))
  config.data.update(dict(image_height=224, image_width=224,
                          eval_batch_size=256))
  config.train.update(dict(checkpoint_every=2000, log_every=100,
                           max_checkpoints=2, deterministic=False))
  return config

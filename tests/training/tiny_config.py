"""A tiny training config for tests: 64x32 inputs, a few ids, a few steps."""

from configs import default


def get_config():
  config = default.get_config()
  config.data.image_height = 64
  config.data.image_width = 32
  config.data.augment_copies = 2
  config.data.synthetic_num_ids = 6
  config.data.eval_batch_size = 32
  config.stages.synthetic.update(dict(
      ids_per_batch=2, images_per_id=2, step1_iterations=3, step2_iterations=6,
      step1_lr=0.01, step2_lr=0.01))
  config.train.checkpoint_every = 2
  config.train.log_every = 2
  # Not "auto": metrics compared with float32 oracles (restored models are
  # evaluated in float32) must not depend on the machine's bfloat16.
  config.train.precision = "float32"
  return config

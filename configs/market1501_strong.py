"""The strong baseline on a GPU: ImageNet ResNet50 -> Market-1501, the bag of tricks.

    python -m keras_reid.train --config=configs/market1501_strong.py \
        --workdir=runs/market1501_strong

Luo et al., "Bag of Tricks and A Strong Baseline for Deep Person
Re-identification" (CVPRW 2019) report Rank-1 94.5% / mAP 85.9% on
Market-1501 (single query, no re-ranking) for ResNet50 with every trick; a
plain ResNet50 on the same schedule gives 87.7 / 74.0. This config is that
recipe in keras_reid's keys. It has not been trained to the end here (no GPU
was at hand when it was written): a user's run is the measurement, and
bench/reproduction_results.md is the place for it.

What it sets, with the paper's values:
  - ResNet50 (keras.applications, ImageNet weights, "caffe" preprocessing),
    256x128 input, last stride 1, BNNeck with retrieval on the BN feature;
  - identity loss with label smoothing 0.1, batch-hard triplet (margin 0.3)
    on the feature before the BN, center loss 5e-4 (its centres trained by
    SGD at lr 0.5); no verification heads, no dropout;
  - P=16 identities x K=4 images (batch 64); Adam lr 3.5e-4, coupled L2
    5e-4; 120 epochs of Market's 12,936 training images (24,240 iterations
    at 202 a epoch), linear warmup over the first 10 epochs from 0.1x;
  - random erasing p=0.5 and a horizontal flip.

Where keras_reid differs from the paper's code (say so when comparing):
  - the lr decays x0.1 every 40 epochs (at 40 and 80), where the paper
    decays at 40 and 70: keras_reid's step decay has one period;
  - augmentation is a set of variants re-drawn every step (shift +-5%,
    zoom +-10%, rotation +-5 degrees, flip; data.augment_mode="redraw"),
    where the paper pads by 10 pixels and crops at random;
  - one training step: step 1 (new layers on a frozen base) is off.
Dataset folder: $REID_DATA_ROOT/Market-1501-v15.09.15 (override with
--config.stages.market1501.root=DIR).
"""

from configs import paper
from keras_reid import schema

EPOCH_ITERATIONS = 202  # 12,936 training images / 64 a batch


def get_config():
  config = schema.base_config()
  config.model.update(dict(
      backbone="resnet50", weights="imagenet", last_stride=1, bnneck=True,
      retrieval_feature="bnneck", cls_dropout=0.0))
  config.data.update(dict(
      image_height=256, image_width=128, augment_mode="redraw",
      random_erasing_prob=0.5, eval_batch_size=256))
  config.loss.update(dict(
      cls_weight=1.0, ver_weight=0.0, label_smoothing=0.1, triplet_weight=1.0,
      triplet_margin=0.3, center_weight=5e-4, center_lr=0.5))
  config.train.update(dict(
      optimizer="adam", weight_decay=5e-4, checkpoint_every=2000,
      log_every=100, max_checkpoints=2, deterministic=False))
  config.stages.market1501 = schema.stage_config(
      dataset="market1501", root=paper.dataset_dir("Market-1501-v15.09.15"),
      init="backbone", ids_per_batch=16, images_per_id=4,
      step1_iterations=0, step2_iterations=120 * EPOCH_ITERATIONS,
      step2_lr=3.5e-4, step2_warmup_iterations=10 * EPOCH_ITERATIONS,
      warmup_start_factor=0.1, lr_schedule="step",
      lr_decay_iterations=40 * EPOCH_ITERATIONS, lr_decay_factor=0.1,
      eval_every=40 * EPOCH_ITERATIONS)
  return config

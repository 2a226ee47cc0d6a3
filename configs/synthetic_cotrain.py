"""Unsupervised transfer on generated data: domain "a" (labels) -> "b" (none).

    python -m keras_reid.train --config=configs/synthetic_cotrain.py:cotraining
    python -m keras_reid.train --config=configs/synthetic_cotrain.py:self_training
    # the target stage alone, from a finished source run (see below):
    python -m keras_reid.train \
        --config=configs/synthetic_cotrain.py:cotraining,runs/synthetic_cotrain_source

The argument is "SUPERVISION[,SOURCE_RUN]": SUPERVISION is "cotraining",
"self_training" or "clustering" (at the schema's clustering defaults,
untuned here; see keras_reid/schema.py stage_config, `supervision`).
Stage `source` is the default job's stage on synthetic domain "a" (6
cameras, with identities); stage `target` is domain "b" (2 cameras: camid 0
is camera A, 1 camera B, darker and blurrier), whose identities are never
read for training, only to evaluate its query / gallery before every round
(eval/target/round<r>.json, round 0 = direct transfer) and at the end
(eval/target.json), and to monitor the pseudo labels
(cotrain/target/round<r>.json). With SOURCE_RUN, the workdir of a finished
run whose model matches this config.model (e.g. the default job,
`python -m keras_reid.train --workdir=runs/synthetic_cotrain_source`), the
source stage is dropped and the target stage starts from that run's
weights, so self-training and co-training share one source model.
Measured results:
bench/cotraining_results.md.
"""

from configs import default
from keras_reid import schema


def get_config(arg: str = "cotraining"):
  supervision, source = schema.supervision_and_source(
      arg, "configs/synthetic_cotrain.py")
  config = default.get_config()
  source_stage = config.stages.synthetic
  del config.stages["synthetic"]
  if not source:
    config.stages.source = source_stage  # domain "a" (config.data)
  # 30 training identities x 2 cameras x 4 images: 120 camera-A classes.
  config.stages.target = schema.stage_config(
      dataset="synthetic", root="runs/data/synthetic_b",
      options="domain=b,num_ids=60", supervision=supervision,
      init=source or "previous",
      ids_per_batch=8, images_per_id=4, step1_iterations=50,
      step2_iterations=200, step1_lr=0.01, step2_lr=0.01,
      lr_decay_iterations=40000,
      unsupervised=dict(
          rounds=3, graph_k=3, grdl_lambda=0.01, grdl_atoms=128,
          grdl_iterations=20, pseudo_labels="soft", soft_top_m=5,
          soft_temperature=1.0))
  return config

"""Unsupervised transfer on real data: reid_pool (labels) -> VIPeR (none).

    python -m keras_reid.train --config=configs/viper_cotrain_cpu.py
    python -m keras_reid.train --config=configs/viper_cotrain_cpu.py:self_training
    # from a finished reid_pool run instead of training it again:
    python -m keras_reid.train \
        --config=configs/viper_cotrain_cpu.py:cotraining,runs/reproduce/pool_mobilenet_v1_0.5 \
        --workdir=runs/viper_cotrain/split0 --config.stages.viper.split=0

The argument is "SUPERVISION[,SOURCE_RUN]". SUPERVISION: "cotraining"
(default) or "self_training" (keras_reid/schema.py stage_config,
`supervision`); "clustering" with VIPeR's settings is
configs/viper_cluster_cpu.py. Without SOURCE_RUN the first stage is configs/viper_cpu.py's
reid_pool stage (MobileNet v1 0.5 ImageNet -> reid_pool: GRID, CAVIAR4REID,
i-LIDS, 3DPeS, with labels). SOURCE_RUN replaces it by the workdir of a
finished run with the same model (configs/viper_cpu.py's), e.g. the one
bench/reproduce.py trains at runs/reproduce/pool_mobilenet_v1_0.5
(ImageNet -> reid_pool, VIPeR steps 0).

Stage `viper` is the VIPeR training split (316 identities x cam_a / cam_b;
cam_a = camid 0 is camera A) WITHOUT its labels: 3 rounds of pseudo labels
(316 classes, one per cam_a image), each fine-tuned with viper_cpu's VIPeR
step settings (100 + 300 iterations, K=32 x M=2). The VIPeR test split is
evaluated before every round (eval/viper/round<r>.json; round 0 = direct
transfer) and at the end (eval/viper.json); pseudo-label accuracy against
the hidden identities in cotrain/viper/round<r>.json and TensorBoard.

GRDL: cross-camera 3-NN graph, 256 atoms, 20 iterations (the co-training
prototype's settings) and grdl_lambda 0.1, the value that
`python -m keras_reid.tools.select_grdl_lambda` picks by cross-validation
on the labelled source (reid_pool, the pool model's features; camera-B
label accuracy 65.2% at 0.1 vs 63.3% at 0.01, the prototype's value; 47.9%
at 0, 61.1% at 1; self-training's feature-space labels 65.5%). Checked on
VIPeR splits 0-2 (bench/reproduction_results_before_91977ac.md, 3 rounds): Rank-1 14.1 +-
0.2 at 0.1 (row staged_cotraining_lambda0.1) vs 12.6 +- 1.6 at 0.01 (row
staged_cotraining), paired +1.6 points, 95% CI [-2.02, +5.18]: within noise
on three splits. Another source model: rerun select_grdl_lambda and pass
its --config.stages.viper.unsupervised.grdl_lambda.

rounds=3 is the paper's; on VIPeR's test splits one round did as well or
better (self-training 15.1 vs 13.5, co-training 14.0 vs 14.1, both within
noise), a comparison made on test data, so not taken as the default.
Reads $REID_DATA_ROOT (see configs/viper_cpu.py). Results and commands:
bench/cotraining_results.md.
"""

from configs import viper_cpu
from keras_reid import schema


def get_config(arg: str = "cotraining"):
  supervision, source = schema.supervision_and_source(
      arg, "configs/viper_cotrain_cpu.py")
  config = viper_cpu.get_config("viper")  # reid_pool -> viper, labelled
  if source:
    del config.stages["reid_pool"]
  # grdl_lambda: cross-validated on the source (see the docstring).
  config.stages.viper.update(dict(
      supervision=supervision, init=source or "previous",
      unsupervised=dict(
          rounds=3, camera_a=0, pseudo_labels="soft", soft_top_m=5,
          soft_temperature=1.0, graph_k=3, grdl_lambda=0.1, grdl_atoms=256,
          grdl_iterations=20)))
  return config


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
the hidden identities in cotrain/viper/round<r>.json and TensorBoard. The
GRDL settings (cross-camera 3-NN graph, lambda 0.01, 256 atoms, 20
iterations) are those of the co-training prototype, whose pseudo labels
were best with them (larger lambda was worse). Reads $REID_DATA_ROOT (see
configs/viper_cpu.py). Results and commands: bench/cotraining_results.md.
"""

from configs import viper_cpu
from keras_reid import schema


def get_config(arg: str = "cotraining"):
  supervision, source = schema.supervision_and_source(
      arg, "configs/viper_cotrain_cpu.py")
  config = viper_cpu.get_config("viper")  # reid_pool -> viper, labelled
  if source:
    del config.stages["reid_pool"]
  config.stages.viper.update(dict(
      supervision=supervision, init=source or "previous",
      unsupervised=dict(
          rounds=3, camera_a=0, pseudo_labels="soft", soft_top_m=5,
          soft_temperature=1.0, graph_k=3, grdl_lambda=0.01, grdl_atoms=256,
          grdl_iterations=20)))
  return config


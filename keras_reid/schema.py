"""The config schema: every field an experiment can set, at its default.

Every experiment (keras_reid/default.py, configs/*.py) starts from
`base_config()` and one `stage_config()` per stage and changes what differs,
so that all experiments share one schema: an unknown key in an override is an
error. keras_reid.config migrates a config.json written by an older
keras_reid to this schema and takes a run's config differences against it.
"""

from __future__ import annotations

from ml_collections import config_dict


def stage_config(**overrides) -> config_dict.ConfigDict:
  """One stage of staged transfer: a dataset and its two fine-tuning steps.

  Step 1 trains only the newly created layers with the base frozen
  (`step1_trains`); step 2 trains everything with classification +
  verification (+ auxiliary) losses.

  Args:
    **overrides: stage keys to change from their defaults; a sub-dict's keys
      as a dict, e.g. unsupervised=dict(rounds=2) (its other keys keep their
      defaults).

  Returns:
    An unlocked ConfigDict.

  Raises:
    KeyError: an override the schema lacks, or a key of `unsupervised`
      given at the stage level.
  """
  stage = config_dict.ConfigDict(dict(
      # A name from keras_reid.data.datasets.DATASETS; "a+b" pools the training sets
      # of several datasets (roots "A+B"); evaluation uses the first one.
      dataset="synthetic",
      root="",                     # dataset folder; "" only for synthetic
      # Reader options "key=value,..." (to every dataset of the stage) or
      # "name:key=value" (to dataset `name` only), e.g.
      # "cuhk03:protocol=old,cuhk03:kind=labeled" for "market1501+cuhk03".
      options="",
      split=0,                     # split index for repeated-split protocols
      split_seed=0,                # seed that draws the random splits
      ids_per_batch=8,             # K identities per batch (paper: 32)
      images_per_id=4,             # M images per identity (paper: 4)
      step1_iterations=100,        # optimizer updates of step 1 (new layers only)
      step2_iterations=400,        # optimizer updates of step 2 (all layers)
      step1_lr=1e-2,
      step2_lr=1e-3,
      # How each step's lr falls: "step" (the paper's: lr *= lr_decay_factor
      # every lr_decay_iterations iterations) or "cosine" (half a cosine down
      # to 0 at the step's last iteration; lr_decay_* are then not read).
      lr_schedule="step",
      lr_decay_iterations=40000,   # lr *= lr_decay_factor every this many iterations
      lr_decay_factor=0.1,
      # Linear warmup (bag of tricks): the lr of step 1 / step 2 rises from
      # warmup_start_factor * lr to lr over its first this many iterations,
      # then follows lr_schedule (decay points unchanged). 0 = no warmup.
      step1_warmup_iterations=0,
      step2_warmup_iterations=0,
      warmup_start_factor=0.1,
      # "previous" stage, "backbone" (model.weights) or a run directory.
      init="previous",
      eval_every=0,                # evaluate every N iterations of step 2 (0 = at end)
      # What step 1 trains on the frozen base. "new_layers" (the paper's
      # intent): every newly created layer; in a stage from the backbone's
      # weights (init "backbone", or "previous" in the first stage) all heads
      # (classifiers, verifiers with the verification loss on, auxiliary
      # trunks), in a stage continuing a model only the replaced classifiers.
      # "classifiers": the classifiers only, on the classification loss
      # (ablation: verifiers and aux trunks stay random through step 1).
      step1_trains="new_layers",
      # Where the stage's training labels come from: "labels": the
      # dataset's identities; "self_training" / "cotraining": none are read
      # (unsupervised transfer to an unlabelled two-camera target), the
      # stage trains in rounds on pseudo labels made as `unsupervised` says;
      # "clustering": the same with labels from DBSCAN clusters (any number
      # of cameras).
      supervision="labels",
      # The settings of an unsupervised stage (a stage on "labels" ignores
      # them). It runs `rounds` rounds; each round extracts the model's
      # features of the training images, makes pseudo labels (every
      # camera-A image its own class, camera-B images labelled by their
      # nearest camera-A images: in feature space for self-training, in the
      # GRDL code space of a cross-camera kNN graph for co-training),
      # replaces the classifiers and fine-tunes two-stepped with
      # step1_iterations / step2_iterations (and their lrs) per round.
      # Identities are read only to evaluate (query / gallery) and to
      # monitor the labels.
      unsupervised=config_dict.ConfigDict(dict(
          rounds=3,
          camera_a=0,              # camid of camera A; B = every other camera
          pseudo_labels="soft",    # "soft" (top-m distribution) or "hard"
          soft_top_m=5,            # camera-A neighbours sharing a soft label
          soft_temperature=1.0,    # > 0; larger spreads the soft label
          graph_k=10,              # cross-camera neighbours per image (W)
          grdl_lambda=0.01,        # graph weight lambda of GRDL
          grdl_atoms=256,          # dictionary atoms (code dimension)
          grdl_iterations=20,      # GRDL alternations per round (at most)
          # L2-normalise the vectors the labels are made from (the features
          # for self-training, the GRDL codes for co-training; the graph and
          # GRDL still see the raw features) before the nearest camera-A
          # neighbours. On VIPeR from the reid_pool model it raised
          # co-training's label accuracy from 10.4% to 13.9% (lambda 0.1,
          # splits 0-4, bench/cotraining_results.md).
          l2_normalize=False,
          # Co-training: fit each round's GRDL dictionary afresh (a random
          # draw of the round's images) instead of warm-starting it from
          # the previous round's, which was fitted to another network's
          # features.
          refit_dictionary=False,
          # Which pairs of the pseudo-labelled K x M batches the
          # verification loss trains on: "all" (every pair, as a labelled
          # stage) or "none" (no verification loss in the rounds: most
          # pseudo-positive pairs are two people or one image twice).
          verification_pairs="all",
          # Label from the mean feature of each training image and its
          # mirror image (test-time flip's features; twice the extraction
          # time), in every mode. On VIPeR from the strong reid_pool model
          # it raised the share of right cross-camera mutual pairs from 33
          # to 36 % (the confident half: 43 to 48 %).
          flip_features=False,
          # "clustering" (keras_reid.unsupervised.clustering): DBSCAN on the
          # k-reciprocal Jaccard distance of the L2-normalised features;
          # a cluster is a class, DBSCAN's outliers are left out of the
          # round. Defaults: Cluster Contrast's (Market-1501); a target with
          # two images per identity (VIPeR) needs cluster_min_samples=2.
          cluster_eps=0.6,         # DBSCAN eps (Jaccard distance, 0..1)
          cluster_min_samples=4,   # DBSCAN min_samples (the image included)
          cluster_k1=30,           # k-reciprocal neighbours of the distance
          cluster_k2=6,            # query expansion of the distance (1 = off)
          # Added to the distance of two images of one camera (0 = off):
          # clusters must then join images across cameras.
          cluster_camera_weight=0.0,
          # "dbscan" (the above) or "mutual_nn": a cluster is two images of
          # different cameras that are each other's nearest neighbour
          # across cameras, every other image an outlier (for targets with
          # one image per identity and camera: VIPeR, PRID, GRID, where
          # DBSCAN chains people together; eps, min_samples, k1, k2 and
          # camera_weight are then unused), or "assignment": for two
          # cameras, the one-to-one pairing of their images with the
          # largest summed similarity (scipy's linear_sum_assignment; every
          # image of the smaller camera paired).
          cluster_method="dbscan",
          # Subtract each camera's mean feature before grouping (camera
          # ids only, no identities).
          cluster_camera_centring=False,
          # mutual_nn and assignment only: keep this fraction of the pairs,
          # those whose similarity stands out most above either image's
          # most similar other image across cameras (1.0 = all pairs).
          cluster_keep_fraction=1.0,
          # Cluster memory (config.loss.cluster_memory_weight > 0): each
          # batch feature x updates its cluster's centroid c <- normalise(
          # m * c + (1 - m) * x), m this momentum (Cluster Contrast: 0.2).
          memory_momentum=0.2,
          # Clustering only: a labelled source set trained beside each
          # round's groups (SpCL's source classes, Ge et al. 2020): the
          # round draws source_identities of its identities (seeded; 0 = as
          # many as the round has groups), each a class after the groups,
          # its centroid in the cluster memory the normalised mean feature
          # of its images. A dataset name as a stage's `dataset` ("" = no
          # source) and its folder; the source's labels, never the
          # target's, are read.
          source_dataset="",
          source_root="",
          source_identities=0,
      )),
  ))
  moved = [k for k in overrides if k in stage.unsupervised]
  if moved:
    raise KeyError(
        f"stage_config({moved[0]}={overrides[moved[0]]!r}): {moved} are "
        "settings of an unsupervised stage, under the stage's "
        f"`unsupervised`: pass unsupervised=dict({moved[0]}="
        f"{overrides[moved[0]]!r}).")
  # Locked while updated: an override the schema lacks (a mistyped key) is
  # a KeyError naming it instead of a new field that nothing reads.
  stage.lock()
  stage.update(overrides)
  stage.unlock()
  return stage


# The unsupervised values of stage.supervision (keras_reid.training.cotraining
# SUPERVISIONS less "labels"), the first argument of the co-training configs.
UNSUPERVISED = ("cotraining", "self_training", "clustering")


def supervision_and_source(arg: str, config_file: str) -> tuple[str, str]:
  """Splits a co-training config's argument "SUPERVISION[,SOURCE_RUN]".

  Returns:
    (supervision, source run directory or "" for none).

  Raises:
    ValueError: SUPERVISION is not one of UNSUPERVISED; names config_file.
  """
  supervision, _, source = arg.partition(",")
  if supervision not in UNSUPERVISED:
    raise ValueError(
        f"{config_file}:{arg}: expected SUPERVISION[,SOURCE_RUN] with "
        f"SUPERVISION one of {list(UNSUPERVISED)}, e.g. "
        f"{config_file}:cotraining.")
  return supervision, source


def base_config() -> config_dict.ConfigDict:
  """The full schema with CPU-sized defaults."""
  config = config_dict.ConfigDict()
  config.seed = 0

  config.data = config_dict.ConfigDict(dict(
      image_height=128,
      image_width=64,
      # The paper's augmentation: each training image becomes `augment_copies`
      # images by random 2D transforms about the centre (variant 0 is the
      # image itself). 1 = no augmentation.
      augment_copies=5,
      # "fixed": one enlarged set, each image's variants drawn from `seed`
      # and its path only (the paper's offline set: the same in step 1,
      # step 2, every worker and after a resume); "redraw": new variants in
      # every stage, step and input worker (ablation).
      augment_mode="fixed",
      # Keep the decoded, resized training images in memory (uint8, H x W x
      # 3 bytes each: 24 KB at 128x64) and warp the variants from there when
      # a stage's training images take at most this many MB; beyond, every
      # image is decoded at every use (the log says so). 0 = never cache.
      train_cache_mb=2048,
      max_shift=0.05,              # fraction of the image size
      max_scale=0.1,               # relative zoom in or out
      max_rotation_deg=5.0,
      # A random horizontal flip in half of the variants. Not in the paper
      # (which lists shift, scale and rotation); False for its exact set.
      flip=True,
      # Random erasing (Zhong et al. 2020; bag of tricks: 0.5): each training
      # image, after the transforms above, has this chance of a rectangle
      # (area 2-40 % of the image, height / width 0.3-3.33) filled with
      # ImageNet's mean pixel, drawn anew for every batch from the seed and
      # the batch index. Never at evaluation. 0 = off (the paper).
      random_erasing_prob=0.0,
      skip_corrupt=False,          # skip (and count) undecodable images instead of failing
      eval_batch_size=128,
      # Where `dataset="synthetic"` writes (and reuses) its generated images;
      # regenerated there when synthetic_num_ids, synthetic_domain or seed
      # differ from the folder's synthetic.json (a folder with other files
      # and no synthetic.json is refused, never overwritten).
      synthetic_dir="runs/data/synthetic",
      synthetic_num_ids=60,
      synthetic_domain="a",
  ))

  config.model = config_dict.ConfigDict(dict(
      backbone="mobilenet_v1",     # a name from keras_reid.models.backbones.BACKBONES
      alpha=0.25,                  # width multiplier for MobileNet-family backbones
      weights="",                  # "" (random init), "imagenet", or a .weights.h5 path
      cls_dropout=0.5,             # dropout before the identity classifier
      ver_dropout=0.5,             # dropout before the verification subtraction
      # "pairwise": one mask per pair (the paper); "independent": a mask per
      # image (ablation); "none": no dropout on the verification branch.
      ver_dropout_mode="pairwise",
      aux_heads=False,             # GoogLeNet-style auxiliary heads (6 losses)
      freeze_bn=False,             # run BatchNorm on moving statistics in step 2
      # Train every BatchNormalization of the backbone through one fused
      # TensorFlow op (same weights and maths to float32 rounding; faster on
      # CPUs: keras_reid/models/fused_batchnorm.py).
      fused_batchnorm=False,
      # The strong baseline's model switches (Luo et al., "Bag of Tricks",
      # 2019); off by default, as in the paper's recipe.
      # How the last feature map becomes the feature: "avg" (global average
      # pooling) or "gem" (generalised mean, (mean x^p)^(1/p) per channel).
      pooling="avg",
      gem_p=3.0,                   # GeM's p (> 0; its start value if trainable)
      gem_p_trainable=True,        # GeM's p is a trained weight, else fixed
      # 2, or 1: the backbone's last downsampling at stride 1 (a map twice
      # as high and wide, same weights); not for every backbone (an error
      # lists those that support it).
      last_stride=2,
      # BNNeck: BatchNorm (no shift) between the feature and each identity
      # classifier, classifiers without bias; the triplet loss and the
      # verifiers read the feature before it, the identity loss after it
      # (freeze_bn freezes it in step 2 too).
      bnneck=False,
      # What evaluation, feature extraction and the exported SavedModel
      # embed with: "pooled" (the feature before any BNNeck) or "bnneck"
      # (after it; needs bnneck=True).
      retrieval_feature="pooled",
  ))

  config.loss = config_dict.ConfigDict(dict(
      cls_weight=1.0,
      ver_weight=3.0,              # paper: verification : classification = 3 : 1
      aux_weight=0.3,              # weight of each auxiliary head's losses
      label_smoothing=0.0,
      # Batch-hard triplet loss on the embedding (step 2; bag of tricks: 1.0).
      triplet_weight=0.0,
      triplet_margin=0.3,          # its hinge margin
      # The soft margin log(1 + exp(d_pos - d_neg)) instead of the hinge
      # (Hermans et al. 2017); triplet_margin is then not read.
      triplet_soft_margin=False,
      # Center loss (Wen et al. 2016) on the embedding in step 2: weight of
      # mean ||f - c_y||^2 (bag of tricks: 5e-4). Every step 2 starts its
      # class centres at 0 and trains them by plain SGD at center_lr on the
      # unweighted loss (as the bag of tricks); they are in the step's
      # checkpoints (exact resume), not in the exported model.
      center_weight=0.0,
      center_lr=0.5,
      # InfoNCE over a memory of cluster centroids (Cluster Contrast), in
      # stages with supervision "clustering" only (step 2: it trains the
      # base); momentum: stage.unsupervised.memory_momentum.
      cluster_memory_weight=0.0,
      cluster_memory_temperature=0.05,
  ))

  config.train = config_dict.ConfigDict(dict(
      optimizer="sgd",             # "sgd", "adam" (Adam) or "adamw" (AdamW, decoupled)
      momentum=0.9,                # SGD only
      weight_decay=5e-4,
      # "coupled_l2": the paper's Caffe decay, weight_decay * w added to the
      # gradient of kernels only (no biases, no BatchNorm); "decoupled":
      # Keras' optimizer weight_decay on every variable (ablation; ~10x
      # weaker at momentum 0.9 for the same value; required by "adamw").
      weight_decay_mode="coupled_l2",
      jit_compile=False,           # XLA for the train step
      # Verification heads run once per distinct pair of the batch, not once
      # per repeated copy of a positive pair (same loss; the copies share
      # one dropout mask); the heads alone 2.4-3.8x faster at K=32 x M=4 on
      # a 2-core CPU (bench/training_results.md). Not with jit_compile.
      distinct_pairs=False,
      # "auto": mixed_bfloat16 on CPUs with native bfloat16 (avx512_bf16 /
      # amx_bf16; not for depthwise backbones such as MobileNet, slower in
      # it there) and GPUs of compute capability >= 8.0, else float32 (the
      # resolved value is logged and written to the run's runtime.json);
      # "float32", "mixed_bfloat16", "mixed_float16" (loss scaling) force one.
      precision="auto",
      distribute="auto",           # "auto", "default", "mirrored", "multi_worker"
      checkpoint_every=200,        # iterations between checkpoints (+ at each step's end)
      log_every=20,                # iterations between TensorBoard scalar writes
      max_checkpoints=3,
      # Deterministic ops (same result after a resume); some GPU kernels have
      # no deterministic version, so GPU configs may turn this off.
      deterministic=True,
  ))

  config.eval = config_dict.ConfigDict(dict(
      rerank=False,                # k-reciprocal re-ranking
      # Re-score the SIR top-k with the verification head (CIR) in the
      # evaluation at the end of each stage and in `keras_reid.evaluate
      # --workdir` (whose flags default to these eval.* values); 0 = off.
      cir_topk=0,
      # Test-time flip: each image's SIR feature is the mean of its own and
      # its mirror image's (twice the extraction time). Evaluation only: the
      # exported SavedModel embeds the image as given.
      flip_test=False,
      max_rank=50,
  ))

  config.stages = config_dict.ConfigDict()
  return config

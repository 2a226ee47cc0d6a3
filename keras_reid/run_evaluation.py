"""Evaluation of a finished training run: restore its weights, write the report.

`evaluate_run(workdir)` restores a run's latest checkpoint
(keras_reid.models.restore), rebuilds its last stage's dataset from the
run's config (keras_reid.data.from_config) unless told another, and writes
the JSON report of keras_reid.evaluation.model_evaluation, with the pictures also
in the run's TensorBoard. It sits above training: training imports the
metric code of keras_reid.evaluation, never this module.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from keras_reid import runs
from keras_reid.data import datasets
from keras_reid.data import from_config
from keras_reid.data import image_files
from keras_reid.evaluation import embedders
from keras_reid.evaluation import model_evaluation
from keras_reid.evaluation import protocols
from keras_reid.evaluation import report as report_lib
from keras_reid.models import builders
from keras_reid.models import restore


def write_tensorboard_images(logdir: str, images: dict, step: int = 0,
                             max_outputs: Optional[int] = None) -> None:
  """Writes uint8 images under their tags (e.g. "eval/cmc").

  Args:
    logdir: TensorBoard folder (e.g. <workdir>/tensorboard).
    images: tag -> one [H, W, 3] image or a batch [N, H, W, 3] (one size).
    step: the summary step.
    max_outputs: images kept per tag; default: all of the batch.
  """
  writer = tf.summary.create_file_writer(logdir)
  with writer.as_default():
    for tag, image in images.items():
      batch = np.asarray(image, np.uint8)
      if batch.ndim == 3:
        batch = batch[None]
      tf.summary.image(tag, batch, step=step,
                       max_outputs=max_outputs or len(batch))
  writer.flush()


def _own_dataset(config) -> Optional[str]:
  """The dataset the run's own evaluation reads: its last stage's (the
  first of a pooled "a+b" stage), None without stages."""
  if not config.stages:
    return None
  return list(config.stages.values())[-1].dataset.split("+")[0]


def _test_ids_seen(config, name: str, data) -> Optional[bool]:
  """Whether a stage of the run trained on the test identities of `data`
  (dataset `name`): one of its training images is a query or gallery
  image, as when a repeated-split set (VIPeR, PRID, CUHK01, CUHK03 classic)
  is evaluated on another split than the one trained. The standard
  protocols keep a split's training and test identities apart, so this is
  how seen test identities show. None when a stage's dataset cannot be read
  any more (moved)."""
  stages = [st for st in config.stages.values()
            if name in st.dataset.split("+")]
  if not stages:
    return False
  test = {os.path.realpath(r.path) for r in data.query + data.gallery}
  for stage in stages:
    try:
      trained = from_config.load_stage_dataset(stage, config).train
    except (OSError, ValueError) as e:
      logging.warning("Cannot read stage dataset %s to tell whether the "
                      "test identities were trained on (%s); the "
                      "verification report says 'unknown'.", stage.dataset, e)
      return None
    if any(os.path.realpath(r.path) in test for r in trained):
      return True
  return False


def _resolve_dataset(config, *, dataset: Optional[str], root: Optional[str],
                     options: str):
  """-> (split -> ReidDataset, the stage's split or None, dataset name,
  the evaluated dataset's reader options)."""
  if dataset:
    opts = from_config.parse_options(options or "", dataset)
    root = from_config.default_root(dataset, root or "", config)
    return (lambda s: datasets.load_dataset(dataset, root, split=s, **opts)
            ), None, dataset, opts
  if not config.stages:
    raise ValueError("the run has no stages; give --dataset and --root.")
  stage = list(config.stages.values())[-1]
  names = stage.dataset.split("+")
  # A pooled stage is evaluated on its first dataset.
  opts = from_config.parse_stage_options(stage.options, names)[names[0]]

  def load(s: int):
    st = stage.copy_and_resolve_references()
    st.split = s
    if root:
      st.root = root
    return from_config.load_stage_dataset(st, config)

  return load, int(stage.split), stage.dataset, opts


def _model_functions(model, *, flip_test: bool, cir: str, cir_topk: int,
                     verification: bool):
  """(SIR embed function, flip-averaged if asked; CIR pair scorer or None).

  The pair scorer serves CIR (`cir`, `cir_topk`) and the verification
  report's head ROC; a model without a verification head (trained with
  loss.ver_weight=0) has none: CIR is then an error naming why, the
  verification report goes without the head's ROC.
  """
  embed = builders.embedding_function(model)
  if flip_test:
    embed = embedders.flip_averaged(embed)
  if cir or cir_topk:
    builders.require_verification_head(
        model, f"CIR (--cir={cir!r}, --cir_topk={cir_topk})")
  elif not (verification and builders.has_verification_head(model)):
    return embed, None
  return embed, embedders.keras_pair_scorer(builders.build_pair_scorer(model))


def evaluate_run(workdir: str, *, dataset: Optional[str] = None,
                 root: Optional[str] = None, options: str = "",
                 split: Optional[int] = None,
                 splits: Optional[Sequence[int]] = None,
                 output_json: Optional[str] = None,
                 report_dir: Optional[str] = None,
                 max_rank: Optional[int] = None,
                 multi_query: bool = False, rerank: Optional[bool] = None,
                 cir: str = "", cir_topk: Optional[int] = None,
                 verification: bool = True,
                 pictures: bool = True, tensorboard: bool = True,
                 batch_size: Optional[int] = None,
                 cuhk03_metric: Optional[bool] = None,
                 projector: bool = False,
                 flip_test: Optional[bool] = None) -> dict:
  """Evaluates a training run's latest weights.

  Settings left None come from the run's config, so that this evaluation
  and the one at the end of training agree: max_rank, rerank, cir_topk,
  flip_test from config.eval, batch_size from config.data.eval_batch_size, cuhk03_metric
  on for CUHK03's classic protocol (reader option protocol=old) unless
  rerank.

  Args:
    workdir: the run directory of `python -m keras_reid.train`.
    dataset: dataset name; default: the run's last stage dataset, read with
      `from_config.load_stage_dataset` (its root, split, options; the synthetic
      set from config.data.synthetic_dir).
    root: dataset folder (overrides the stage's).
    options: reader options "key=value,..." with `dataset`.
    split: split to evaluate; default: the stage's split (0 with `dataset`).
    splits: several splits, averaged (see keras_reid.evaluation.report's
      warning).
    output_json: default <workdir>/eval.json.
    report_dir: PNG folder; default next to the JSON.
    max_rank, multi_query, rerank, cir, cir_topk, verification: see
      `model_evaluation.evaluate_dataset`.
    pictures: write the PNGs (and, with `tensorboard`, into
      <workdir>/tensorboard under eval/ranked_lists, eval/cmc, eval/roc).
      A cross-dataset evaluation (`dataset` other than the run's own) has
      its own defaults, never the run's own report: <workdir>/eval_<dataset>
      .json, eval_<dataset>_report/, tags eval_<dataset>/..., projector in
      <workdir>/tensorboard/eval_<dataset>/ (keras_reid.runs).
    tensorboard: also write the pictures to the run's TensorBoard.
    batch_size: images per batch.
    cuhk03_metric: CUHK03 classic single-gallery-shot CMC
      (keras_reid.evaluation.protocols.evaluate_cuhk03).
    projector: write the (first) split's query + gallery embeddings with
      pid, camera and thumbnails into <workdir>/tensorboard for
      TensorBoard's projector (keras_reid.evaluation.projector).
    flip_test: features = mean of the image's and its mirror image's
      (embedders.flip_averaged); recorded in the report.

  Returns:
    The report dict, also written to output_json.
  """
  origin = runs.weights_origin(workdir)  # warns if the run is partial
  model, config = restore.restore_training_model(workdir)
  max_rank = config.eval.max_rank if max_rank is None else max_rank
  rerank = config.eval.rerank if rerank is None else rerank
  cir_topk = config.eval.cir_topk if cir_topk is None else cir_topk
  flip_test = config.eval.flip_test if flip_test is None else flip_test
  batch_size = config.data.eval_batch_size if batch_size is None else batch_size
  embed, pair_scorer = _model_functions(
      model, flip_test=flip_test, cir=cir, cir_topk=cir_topk,
      verification=verification)
  load, stage_split, name, reader_options = _resolve_dataset(
      config, dataset=dataset, root=root, options=options)
  if cuhk03_metric is None:
    cuhk03_metric = (protocols.is_cuhk03_classic(name, reader_options)
                     and not rerank)
  # Another dataset than the run's own writes beside the run's report,
  # never over it: its own file, folder, tags and projector folder.
  cross = dataset if dataset and dataset != _own_dataset(config) else None
  if output_json:
    report_dir = report_dir or report_lib.default_report_dir(output_json)
  else:
    output_json = runs.eval_report_path(workdir, cross)
    report_dir = report_dir or runs.eval_report_dir(workdir, cross)
  report_dir = report_dir if pictures else None
  tag_prefix = runs.eval_tensorboard_prefix(cross)
  images: Optional[dict] = {} if (pictures and tensorboard) else None

  def one(s: int, first: bool) -> dict:
    if stage_split is not None and s != stage_split:
      logging.warning("The run trained on split %d; split %d's test "
                      "identities were training identities.", stage_split, s)
    # Every image checked before any is embedded; with the run's
    # data.skip_corrupt the bad ones are skipped and listed in the report.
    data, skipped = image_files.check_dataset_images(
        load(s), skip_corrupt=config.data.skip_corrupt)
    result = model_evaluation.evaluate_dataset(
        embed, data, image_size=(config.data.image_height,
                                 config.data.image_width),
        normalization=builders.normalization_for(config.model),
        batch_size=batch_size, pair_scorer=pair_scorer, max_rank=max_rank,
        multi_query=multi_query, rerank=rerank, cir=cir, cir_topk=cir_topk,
        verification=verification and first,
        test_ids_seen_in_training=(
            _test_ids_seen(config, dataset or _own_dataset(config), data)
            if verification and first else None),
        report_dir=report_dir if first else None,
        tensorboard=images if first else None, tensorboard_prefix=tag_prefix,
        cuhk03_metric=cuhk03_metric,
        projector_dir=(runs.eval_projector_dir(workdir, cross)
                       if projector and first else None))
    if skipped["num_skipped"]:
      result["skipped_corrupt_images"] = skipped
    return result

  if splits:
    report_lib.warn_splits("training run", splits, stage_split)
    result = report_lib.evaluate_splits(one, list(splits))
  else:
    chosen = split if split is not None else (stage_split or 0)
    result = one(chosen, True)
    result["split"] = chosen
  result["workdir"] = os.path.abspath(workdir)
  result["weights_from"] = origin
  result["flip_test"] = flip_test
  if images:
    # At the run's last iteration, next to eval/rank1.
    tensorboard_dir = runs.tensorboard_dir(workdir)
    write_tensorboard_images(tensorboard_dir, images,
                             step=runs.total_iterations(config))
    result["tensorboard"] = os.path.abspath(tensorboard_dir)
  return report_lib.finish(result, output_json)

"""A run's config and final metrics for TensorBoard's HParams dashboard.

Every training run writes, into its own TensorBoard folder:
  * at its start, an HParams session (`tensorboard.plugins.hparams.api`)
    whose hyperparameters are `config.describe_run(config)`: backbone,
    datasets, losses, dropout mode, precision and every field that differs
    from keras_reid.schema's defaults (flattened, "stages.viper.step2_lr");
  * at its end, the final metrics as scalars `final/<metric>` (rank1 ...
    mINP as fractions, cir_<metric> with CIR, train_seconds), the final CMC
    figure (image eval/cmc) and the session's end status.

No experiment-wide config is written: with none, the dashboard builds its
table from every run's session under `tensorboard --logdir runs/` (one
experiment summary per run would hide the others' hyperparameters), each
scalar tag of a run being a metric column.
"""

from __future__ import annotations

import os
import time

import tensorflow as tf
from ml_collections import config_dict
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import summary as hparams_summary

from keras_reid import config as config_lib
from keras_reid.evaluation import ranking
from keras_reid.evaluation import report

METRIC_PREFIX = "final/"


def run_hparams(config: config_dict.ConfigDict) -> dict:
  """The run's hyperparameters: config.describe_run."""
  return config_lib.describe_run(config)


def final_metrics(metrics: dict) -> dict:
  """"final/<name>" -> value of the metrics a run ends with (metrics.json)."""
  out = {}
  for key in ranking.METRIC_KEYS:
    if key in metrics:
      out[METRIC_PREFIX + key] = float(metrics[key])
    cir = metrics.get("cir", {}).get("cir", {})
    if key in cir:
      out[f"{METRIC_PREFIX}cir_{key}"] = float(cir[key])
  if "train_seconds" in metrics:
    out[METRIC_PREFIX + "train_seconds"] = float(metrics["train_seconds"])
  return out


def write_session_start(writer: tf.summary.SummaryWriter,
                        config: config_dict.ConfigDict, workdir: str) -> dict:
  """Writes the run's HParams session (trial id: the workdir); returns the
  hyperparameters written."""
  values = run_hparams(config)
  with writer.as_default():
    hp.hparams(values, trial_id=os.path.normpath(workdir),
               start_time_secs=int(time.time()))
  writer.flush()
  return values


def write_session_end(writer: tf.summary.SummaryWriter, metrics: dict,
                      step: int) -> dict:
  """Writes the final metrics (at `step`), the final CMC figure (image
  eval/cmc, when the metrics have a "cmc") and the session's success
  status; returns the metrics written."""
  values = final_metrics(metrics)
  end = hparams_summary.session_end_pb(api_pb2.STATUS_SUCCESS,
                                       end_time_secs=int(time.time()))
  with writer.as_default(step=step):
    for tag, value in values.items():
      tf.summary.scalar(tag, value)
    if metrics.get("cmc"):
      tf.summary.image("eval/cmc", report.cmc_image(
          metrics, f"CMC {metrics.get('dataset', '')}".strip())[None])
    tf.summary.experimental.write_raw_pb(end.SerializeToString(), step=step)
  writer.flush()
  return values

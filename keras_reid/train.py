r"""Trains a Re-ID model: staged transfer with two-stepped fine-tuning.

  python -m keras_reid.train                                # synthetic demo
  python -m keras_reid.train --config=configs/viper_cpu.py \
      --config.stages.viper.step2_iterations=600 --workdir=runs/viper

The resolved config is written to WORKDIR/config.json; TensorBoard logs go to
WORKDIR/tensorboard; the final evaluation to WORKDIR/metrics.json. Rerunning
with the same --workdir resumes from the last checkpoint.
"""

import logging
import os
import time

from absl import app
from absl import flags
from ml_collections import config_flags

# Before anything that imports TensorFlow, to quiet its start-up logs.
from keras_reid import quiet  # noqa: F401
from keras_reid import runs
from keras_reid import default
from keras_reid import user_errors
from keras_reid.training import stages

# A config is a file (--config=PATH), never an imported module: the package
# does not need the repository root on sys.path. The default experiment is
# a file of the package itself, so an installed keras_reid runs it anywhere.
_DEFAULT_CONFIG_FILE = default.__file__


def _config_help() -> str:
  """The --config help: every overridable field with its default."""
  lines = ["Experiment config file (configs/*.py). Override any field with "
           "--config.<section>.<key>=VALUE; the fields and their defaults "
           "(keras_reid/default.py, on the schema of keras_reid/schema.py):"]
  def walk(prefix, node):
    for key, value in node.items():
      if hasattr(value, "items"):
        walk(f"{prefix}{key}.", value)
      else:
        lines.append(f"  --config.{prefix}{key}={value!r}")
  walk("", default.get_config())
  return "\n".join(lines)


# A mistyped --config.<key> is one line naming the closest key, not the
# traceback ml_collections raises while the flag below parses it.
user_errors.exit_on_bad_config_override(_DEFAULT_CONFIG_FILE)
_CONFIG = config_flags.DEFINE_config_file(
    "config", default=_DEFAULT_CONFIG_FILE, help_string=_config_help(),
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory (default: runs/<config name>-<time>).")


def default_workdir(config_path: str) -> str:
  name = os.path.splitext(os.path.basename(config_path.split(":")[0]))[0]
  return os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # TensorFlow logs every checkpoint write at INFO; keep the console readable.
  logging.getLogger("absl").addFilter(
      lambda record: not record.pathname.endswith("functional_saver.py"))
  workdir = _WORKDIR.value or default_workdir(flags.FLAGS["config"].config_filename)
  print(f"Run directory: {workdir}", flush=True)
  metrics = stages.train(_CONFIG.value, workdir)
  if metrics:
    print("Final: " + stages.format_metrics(metrics), flush=True)
  print(f"Metrics: {runs.metrics_path(workdir)}; "
        f"TensorBoard: tensorboard --logdir {runs.tensorboard_dir(workdir)}",
        flush=True)


if __name__ == "__main__":
  app.run(user_errors.one_line_errors(main))

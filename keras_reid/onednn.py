"""oneDNN kernels for TensorFlow on every x86 CPU, unless the user says no.

TensorFlow's Linux x86 wheels use oneDNN's CPU kernels by default only on
CPUs with AVX512_VNNI, AVX512_BF16 or AMX; on the others (AVX2-only CPUs,
many AMD EPYC cloud cores) they fall back to Eigen's kernels. Measured on a
2-core AMD EPYC with AVX2 only (bench/training_results.md, "oneDNN on CPUs
without AVX-512"): the train step runs 1.45x faster at GoogLeNet 128x64
batch 32, 1.89x at batch 128 and 1.35x for MobileNet v1 0.5 batch 64 with
oneDNN on (a whole configs/viper_cpu.py run 1.27x). So keras_reid turns
it on: `import keras_reid` (which every `keras_reid.*` import runs first)
sets TF_ENABLE_ONEDNN_OPTS=1 when the environment does not set it.

TensorFlow reads the variable once, when it loads, so the setting only
reaches a process whose TensorFlow is imported after keras_reid (the
entry points `python -m keras_reid.<tool>`, and a user's script that
imports keras_reid first), and every subprocess it starts.
TF_ENABLE_ONEDNN_OPTS=0 keeps Eigen's kernels. Both give the same model up
to float32 rounding, not bit for bit: a run's runtime.json records which
kernels it trained with. Standard library only: importing it does not import
TensorFlow.
"""

from __future__ import annotations

import os

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
DEFAULT_ONEDNN = "1"


def enable_by_default(environ=None) -> None:
  """Sets TF_ENABLE_ONEDNN_OPTS=1 in `environ` (os.environ) unless it is set.

  A user's value, "0" included, is kept.
  """
  environ = os.environ if environ is None else environ
  environ.setdefault(ONEDNN_ENV, DEFAULT_ONEDNN)


def status() -> dict:
  """What this process's TensorFlow runs on, for runtime.json.

  Returns {"TF_ENABLE_ONEDNN_OPTS": the variable's value or None,
  "enabled": whether TensorFlow's oneDNN kernels are on (None where this
  TensorFlow build cannot say)}. Imports TensorFlow if no one has.
  """
  import tensorflow  # noqa: F401  # pylint: disable=import-outside-toplevel,unused-import
  try:
    from tensorflow.python.util import _pywrap_util_port  # pylint: disable=import-outside-toplevel
    enabled = bool(_pywrap_util_port.IsMklEnabled())
  except (ImportError, AttributeError):  # not part of TF's public API
    enabled = None
  return {ONEDNN_ENV: os.environ.get(ONEDNN_ENV), "enabled": enabled}


def late_import_warning(kernels: dict) -> str | None:
  """What to tell a user whose TensorFlow ignored TF_ENABLE_ONEDNN_OPTS=1.

  Args:
    kernels: a `status()`.

  Returns:
    A one-paragraph warning when the variable asks for oneDNN and TensorFlow
    runs without it (most likely it was imported before keras_reid set the
    variable), else None.
  """
  if kernels.get(ONEDNN_ENV) != DEFAULT_ONEDNN or kernels.get("enabled") is not False:
    return None
  return (f"TensorFlow runs without oneDNN although {ONEDNN_ENV}=1: most "
          "likely it was imported before keras_reid, which sets the variable "
          "(TensorFlow reads it once, when it loads). Import keras_reid "
          "before tensorflow / keras, or set the variable before Python "
          "starts, for oneDNN's kernels (1.3-1.9x faster training on "
          f"AVX2-only CPUs); {ONEDNN_ENV}=0 keeps Eigen's and silences this.")


"""Quiet TensorFlow start-up for the `python -m keras_reid.<command>` tools.

Importing TensorFlow prints C++ log lines that say nothing about the user's
job: absl's "WARNING: All log messages before absl::InitializeLog() is called
are written to STDERR", "Could not find cuda drivers on your machine" (twice),
"failed call to cuInit" on a machine without a GPU, the CPU-feature and
oneDNN notices, the CUDA factory registration errors. Every entry point
imports this module before anything that imports TensorFlow; on import it

  * sets TF_CPP_MIN_LOG_LEVEL=2 (TensorFlow's C++ INFO and WARNING lines off)
    unless the environment already sets it: a user's value is kept;
  * filters the start-up lines above out of what TensorFlow's own import and
    its first look at the devices write to stderr. Those are written by C++
    before TF_CPP_MIN_LOG_LEVEL is read, so the level cannot hide them: the
    stderr file descriptor is redirected to a temporary file while
    `import tensorflow` runs, and everything in it but those lines is
    written back to stderr afterwards.

KERAS_REID_TF_LOGS=1 turns both off (TensorFlow prints what it prints by
default, or at the user's TF_CPP_MIN_LOG_LEVEL). Standard library only: the
TensorFlow-free tools import it too, and it imports TensorFlow for nobody.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

# Set to 1 (or any value but 0 or empty) to see TensorFlow's start-up logs.
SHOW_LOGS_ENV = "KERAS_REID_TF_LOGS"
TF_LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
DEFAULT_TF_LOG_LEVEL = "2"

# A C++ log line: absl ("I0000 00:00:1796601458.689738   27211 file.cc:31] ")
# or TensorFlow's older format ("2025-09-17 14:44:05.157831: I file.cc:32] ").
_LOG_PREFIX = (r"(?:[IWEF]\d{4} [\d:.]+\s+\d+ |"
               r"\d{4}-\d\d-\d\d [\d:.]+: [IWEF] )\S*")
# What TensorFlow prints while it loads and looks for devices, on every
# machine without a GPU or with one: none of it is about the user's job.
START_UP_NOISE = tuple(re.compile(pattern) for pattern in (
    r"WARNING: All log messages before absl::InitializeLog\(\) is called",
    _LOG_PREFIX + r"cudart_stub\.cc:\d+\] ",
    _LOG_PREFIX + r"cpu_feature_guard\.cc:\d+\] ",
    r"To enable the following instructions: .* rebuild TensorFlow",
    _LOG_PREFIX + r"\] oneDNN custom operations are on",
    _LOG_PREFIX + r"\] failed call to cuInit",
    _LOG_PREFIX + r"\] Unable to register cu\w+ factory",
    _LOG_PREFIX + r"\] computation placer already registered",
    _LOG_PREFIX + r"\] TF-TRT Warning: Could not find TensorRT",
    _LOG_PREFIX + r"cuda_diagnostics\.cc:\d+\] ",
))


def is_start_up_noise(line: str) -> bool:
  """Whether a stderr line is one of TensorFlow's start-up lines."""
  return any(pattern.match(line) for pattern in START_UP_NOISE)


def without_start_up_noise(text: str) -> str:
  """`text` with its start-up lines (START_UP_NOISE) dropped."""
  return "".join(line for line in text.splitlines(keepends=True)
                 if not is_start_up_noise(line))


def shows_tf_logs(environ=None) -> bool:
  """Whether KERAS_REID_TF_LOGS asks for TensorFlow's own logging."""
  environ = os.environ if environ is None else environ
  return environ.get(SHOW_LOGS_ENV, "").strip() not in ("", "0")


class _FilteredStderr:
  """Redirects file descriptor 2 into a temporary file until `restore()`,
  which writes back what was written there less START_UP_NOISE."""

  def __init__(self):
    for stream in (sys.stdout, sys.stderr):
      if stream is not None:
        stream.flush()
    self._saved = os.dup(2)
    self._file = tempfile.TemporaryFile()
    os.dup2(self._file.fileno(), 2)

  def restore(self) -> None:
    if sys.stderr is not None:
      sys.stderr.flush()
    os.dup2(self._saved, 2)
    os.close(self._saved)
    self._file.seek(0)
    text = self._file.read().decode("utf-8", "replace")
    self._file.close()
    kept = without_start_up_noise(text)
    if kept:
      os.write(2, kept.encode("utf-8"))


class _QuietLoader(importlib.abc.Loader):
  """Runs TensorFlow's own loader with stderr filtered (see the module doc)."""

  def __init__(self, loader):
    self._loader = loader

  def __getattr__(self, name):
    # is_package, get_filename, get_resource_reader, ...: TensorFlow's own.
    return getattr(self._loader, name)

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module):
    try:
      stderr = _FilteredStderr()
    except OSError:  # No usable stderr descriptor: nothing to filter.
      self._loader.exec_module(module)
      return
    try:
      self._loader.exec_module(module)
      # TensorFlow probes CUDA ("failed call to cuInit") the first time it
      # lists devices; listing them here keeps that probe inside the filter.
      # It creates no device, so memory growth and logical devices can still
      # be configured afterwards.
      try:
        module.config.list_physical_devices()
      except Exception:  # pylint: disable=broad-except
        # Only a probe: whatever failed fails again, loudly, where the job
        # first uses a device.
        pass
    finally:
      stderr.restore()
      # Whoever inspects the module sees TensorFlow's loader, not this one.
      module.__loader__ = self._loader
      if module.__spec__ is not None:
        module.__spec__.loader = self._loader


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
  """Gives the first `import tensorflow` a `_QuietLoader`."""

  def find_spec(self, fullname, path=None, target=None):
    if fullname != "tensorflow":
      return None
    sys.meta_path.remove(self)  # Once: TensorFlow is imported once.
    spec = importlib.util.find_spec(fullname)
    if spec is not None and spec.loader is not None:
      spec.loader = _QuietLoader(spec.loader)
    return spec


def default_log_level(environ=None) -> bool:
  """Sets TF_CPP_MIN_LOG_LEVEL=2 unless set, or KERAS_REID_TF_LOGS is on.

  Args:
    environ: the environment to read and set (default os.environ).

  Returns:
    False when KERAS_REID_TF_LOGS asks for TensorFlow's logs (nothing set).
  """
  environ = os.environ if environ is None else environ
  if shows_tf_logs(environ):
    return False
  environ.setdefault(TF_LOG_LEVEL_ENV, DEFAULT_TF_LOG_LEVEL)
  return True


def install() -> None:
  """The log level default, and the filter on TensorFlow's first import."""
  if not default_log_level():
    return
  if "tensorflow" not in sys.modules and not any(
      isinstance(finder, _QuietTensorFlowImport) for finder in sys.meta_path):
    sys.meta_path.insert(0, _QuietTensorFlowImport())


install()

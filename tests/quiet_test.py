"""TensorFlow's start-up logs are off by default in the command-line tools.

Guaranteed (keras_reid/quiet.py; the commands themselves are run in
tests/hostile/train_test.py):
  * TF_CPP_MIN_LOG_LEVEL defaults to 2, a value the user set is kept, and
    KERAS_REID_TF_LOGS=1 leaves the environment alone;
  * the start-up lines TensorFlow writes to the stderr descriptor (from C++,
    before any log level is read) are dropped, everything else written there
    comes back, in order;
  * every entry point imports keras_reid.quiet before any other keras_reid
    module (they are what import TensorFlow).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from keras_reid import quiet
from tests import flags_test

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Start-up lines as TensorFlow 2.21 prints them on a machine without a GPU,
# and as earlier versions and GPU machines do.
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are "
    "written to STDERR",
    "I0000 00:00:1796601458.689738   27211 cudart_stub.cc:31] Could not find "
    "cuda drivers on your machine, GPU will not be used.",
    "I0000 00:00:1796601458.747742   27211 cpu_feature_guard.cc:227] This "
    "TensorFlow binary is optimized to use available CPU instructions in "
    "performance-critical operations.",
    "To enable the following instructions: AVX2 FMA, in other operations, "
    "rebuild TensorFlow with the appropriate compiler flags.",
    "E0000 00:00:1796601574.254064   28704 cuda_platform.cc:52] failed call to "
    "cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    "2025-09-17 14:44:05.157831: I external/local_xla/xla/tsl/cuda/"
    "cudart_stub.cc:32] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "2025-09-17 14:44:05.176998: E external/local_xla/xla/stream_executor/"
    "cuda/cuda_fft.cc:467] Unable to register cuFFT factory: Attempting to "
    "register factory for plugin cuFFT when one has already been registered",
    "E0000 00:00:1758131045.203198 3722035 cuda_dnn.cc:8579] Unable to "
    "register cuDNN factory: Attempting to register factory for plugin cuDNN "
    "when one has already been registered",
    "2024-01-01 10:00:00.000001: I tensorflow/core/util/port.cc:153] oneDNN "
    "custom operations are on. You may see slightly different numerical "
    "results due to floating-point round-off errors from different "
    "computation orders. To turn them off, set the environment variable "
    "`TF_ENABLE_ONEDNN_OPTS=0`.",
]
# What a job may need to see: kept.
KEPT = [
    "E0000 00:00:1796601574.254064   28704 op_kernel.cc:1830] OP_REQUIRES "
    "failed at conv_ops.cc:1000 : RESOURCE_EXHAUSTED: OOM",
    "/usr/lib/python3/site-packages/x.py:3: UserWarning: something changed",
    "error: --config.trian.lr: no such key",
]


def test_log_level_defaults_to_two_and_keeps_the_users():
  environ = {}
  assert quiet.default_log_level(environ)
  assert environ == {"TF_CPP_MIN_LOG_LEVEL": "2"}
  environ = {"TF_CPP_MIN_LOG_LEVEL": "0"}
  assert quiet.default_log_level(environ)
  assert environ == {"TF_CPP_MIN_LOG_LEVEL": "0"}
  environ = {"KERAS_REID_TF_LOGS": "1"}
  assert not quiet.default_log_level(environ)
  assert environ == {"KERAS_REID_TF_LOGS": "1"}
  environ = {"KERAS_REID_TF_LOGS": "0"}
  assert quiet.default_log_level(environ)
  assert environ["TF_CPP_MIN_LOG_LEVEL"] == "2"


def test_start_up_lines_go_and_the_rest_stays():
  for line in NOISE:
    assert quiet.is_start_up_noise(line), line
  for line in KEPT:
    assert not quiet.is_start_up_noise(line), line
  mixed = [NOISE[0], KEPT[0], NOISE[1], KEPT[1], NOISE[4]]
  assert quiet.without_start_up_noise("\n".join(mixed) + "\n") == (
      KEPT[0] + "\n" + KEPT[1] + "\n")


def test_stderr_descriptor_is_filtered_and_restored():
  # As TensorFlow's C++ code writes: straight to file descriptor 2.
  during = "".join(line + "\n" for line in (NOISE[0], KEPT[0], NOISE[1]))
  after = NOISE[0] + "\n"
  script = f"""
import os, sys
from keras_reid import quiet
stderr = quiet._FilteredStderr()
os.write(2, {during.encode()!r})
print("from python", file=sys.stderr)
stderr.restore()
os.write(2, {after.encode()!r})
"""
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_CPP_MIN_LOG_LEVEL", "KERAS_REID_TF_LOGS")}
  proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr
  # Filtered while redirected; after restore() stderr is the real one again.
  assert proc.stderr.splitlines() == [KEPT[0], "from python", NOISE[0]]


def _first_package_import(path: str) -> str | None:
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  for node in tree.body:
    if isinstance(node, ast.ImportFrom) and node.module and (
        node.module.split(".")[0] == "keras_reid"):
      return f"{node.module}.{node.names[0].name}"
    if isinstance(node, ast.Import) and node.names[0].name.startswith(
        "keras_reid"):
      return node.names[0].name
  return None


def test_every_entry_point_imports_quiet_first():
  entry = {m: p for m, p in flags_test._modules()
           if flags_test._is_entry_point(m)}
  assert len(entry) >= 10
  late = {m: _first_package_import(p) for m, p in entry.items()
          if _first_package_import(p) != "keras_reid.quiet"}
  assert not late, (
      "entry points must import keras_reid.quiet before any other keras_reid "
      f"module (which may import TensorFlow); first imports: {late}")


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

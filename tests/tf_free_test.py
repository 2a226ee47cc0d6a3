"""Modules that never import TensorFlow (nor Keras), checked with TF blocked.

Scoring feature files (`python -m keras_reid.evaluate --features`), the
metric code, the dataset readers and the synthetic generator need NumPy,
SciPy, scikit-learn, Pillow and matplotlib (plus TensorBoard's projector
protos) only. The boundary is structural: these
modules import TensorFlow nowhere, not even inside functions, and this test
imports each of them in a fresh process whose import system refuses
tensorflow and keras.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TF_FREE_MODULES = (
    # The package: keras_reid.Embedder is imported on first use only.
    "keras_reid",
    "keras_reid.config",
    "keras_reid.cpu_kind",
    "keras_reid.runs",
    # The entry points' own helpers (quiet is imported first).
    "keras_reid.quiet",
    "keras_reid.user_errors",
    # Keras only to draw a terminal's progress bar.
    "keras_reid.progress",
    "keras_reid.schema",
    "keras_reid.default",
    # Imports Keras inside the losses only: keras_reid.config reads its table.
    "keras_reid.losses",
    "keras_reid.data.records",
    "keras_reid.data.datasets",
    "keras_reid.data.inspection",
    "keras_reid.data.synthetic.generator",
    "keras_reid.data.synthetic.render",
    "keras_reid.data.from_config",
    "keras_reid.evaluation.ranking",
    "keras_reid.evaluation.protocols",
    "keras_reid.evaluation.reference",
    "keras_reid.evaluation.rerank",
    "keras_reid.evaluation.cir",
    "keras_reid.evaluation.paired",
    "keras_reid.evaluation.verification",
    "keras_reid.evaluation.visualize",
    "keras_reid.evaluation.plots",
    "keras_reid.evaluation.projector",
    "keras_reid.evaluation.feature_files",
    "keras_reid.evaluation.report",
    "keras_reid.gallery.index",
    "keras_reid.models.torch_state_dict",
    "keras_reid.run_comparison",
    "keras_reid.compare",
    # The entry point imports the model paths only when asked for them.
    "keras_reid.evaluate",
)

_BLOCKER = """
import importlib.abc, json, sys

class Blocker(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in ("tensorflow", "keras", "tf_keras"):
      raise ImportError(f"{name} is blocked: this module must not need it")
    return None

sys.meta_path.insert(0, Blocker())
failed = {}
for module in MODULES:
  try:
    __import__(module)
  except ImportError as e:
    failed[module] = str(e)
print(json.dumps(failed))
"""


def _import_blocked(modules) -> dict:
  script = f"MODULES = {list(modules)!r}\n" + _BLOCKER
  env = dict(os.environ,
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_blocker_blocks_tensorflow():
  # A module that does need TF fails under the blocker: the test can fail.
  failed = _import_blocked(["keras_reid.data.pipeline"])
  assert "keras_reid.data.pipeline" in failed
  assert "blocked" in failed["keras_reid.data.pipeline"]


def test_tf_free_modules_import_without_tensorflow():
  failed = _import_blocked(TF_FREE_MODULES)
  assert not failed, (
      f"modules of the TF-free boundary import TensorFlow or Keras: {failed}")


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

"""keras_reid turns TensorFlow's oneDNN kernels on unless the user says no.

Guaranteed (keras_reid/onednn.py):
  * importing keras_reid sets TF_ENABLE_ONEDNN_OPTS=1 when it is unset, so a
    TensorFlow imported afterwards runs oneDNN's kernels, on CPUs where
    TensorFlow's own default leaves them off (AVX2-only) too;
  * a value the user set, "0" included, is kept and TensorFlow follows it;
  * a run's runtime.json says which kernels it trained with
    (tests/training/train_test.py), and a TensorFlow imported before
    keras_reid, which then ignores the variable, gets a warning naming why;
  * every bench script imports keras_reid before TensorFlow or Keras (so its
    timings are of the kernels users get; the entry points import
    keras_reid.quiet first, tests/quiet_test.py).
The interpreter cases run in fresh interpreters: TensorFlow reads the
variable once, when it loads.
"""

from __future__ import annotations

import ast
import glob
import json
import os
import platform
import subprocess
import sys

import pytest

from keras_reid import onednn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Prints the variable and TensorFlow's own answer after `import keras_reid`
# and then TensorFlow, the order of every entry point.
_PROBE = """
import os, json
import keras_reid
import tensorflow
from tensorflow.python.util import _pywrap_util_port
print(json.dumps([os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
                  bool(_pywrap_util_port.IsMklEnabled())]))
"""


def _probe(environ_value):
  env = {k: v for k, v in os.environ.items() if k != onednn.ONEDNN_ENV}
  if environ_value is not None:
    env[onednn.ONEDNN_ENV] = environ_value
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  proc = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, env=env,
                        capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                    reason="TensorFlow's oneDNN kernels are built for x86 here")
def test_unset_variable_turns_onednn_on():
  assert _probe(None) == ["1", True]


def test_users_zero_is_kept_and_followed():
  assert _probe("0") == ["0", False]


# TensorFlow first, as a user's script might: the variable comes too late.
_LATE_PROBE = """
import tensorflow
import keras_reid
from keras_reid import onednn
print(onednn.late_import_warning(onednn.status()))
"""


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                    reason="TensorFlow's oneDNN kernels are built for x86 here")
def test_tensorflow_imported_first_gets_a_warning():
  env = {k: v for k, v in os.environ.items() if k != onednn.ONEDNN_ENV}
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  proc = subprocess.run([sys.executable, "-c", _LATE_PROBE], cwd=REPO,
                        env=env, capture_output=True, text=True, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  last = proc.stdout.strip().splitlines()[-1]
  # TensorFlow's own default here is Eigen on AVX2-only CPUs; on CPUs where
  # it turns oneDNN on itself there is nothing to warn about.
  if _tf_default_is_eigen():
    assert "imported before keras_reid" in last, last
  else:
    assert last == "None", last


def _tf_default_is_eigen():
  env = {k: v for k, v in os.environ.items() if k != onednn.ONEDNN_ENV}
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  proc = subprocess.run(
      [sys.executable, "-c", "import tensorflow\n"
       "from tensorflow.python.util import _pywrap_util_port as p\n"
       "print(p.IsMklEnabled())"],
      env=env, capture_output=True, text=True, check=True)
  return proc.stdout.strip().splitlines()[-1] == "False"


def test_late_import_warning_only_when_asked_for_and_off():
  env = onednn.ONEDNN_ENV
  assert onednn.late_import_warning({env: "1", "enabled": False})
  assert onednn.late_import_warning({env: "1", "enabled": True}) is None
  assert onednn.late_import_warning({env: "0", "enabled": False}) is None
  assert onednn.late_import_warning({env: None, "enabled": False}) is None
  assert onednn.late_import_warning({env: "1", "enabled": None}) is None


def test_enable_by_default_keeps_a_set_value():
  environ = {onednn.ONEDNN_ENV: "0"}
  onednn.enable_by_default(environ)
  assert environ == {onednn.ONEDNN_ENV: "0"}
  environ = {}
  onednn.enable_by_default(environ)
  assert environ == {onednn.ONEDNN_ENV: "1"}




def _module_level_imports(path):
  """Top-level module names imported at module level (try blocks too), in
  source order."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  names = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names += [(node.lineno, a.name) for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0:
      names.append((node.lineno, node.module))
  return [name for _, name in sorted(names)]


def _first_tf_import_follows_keras_reid(path):
  for name in _module_level_imports(path):
    top = name.split(".")[0]
    if top == "keras_reid":
      return True
    if top in ("tensorflow", "keras", "tf_keras"):
      return False
  return True


def test_bench_scripts_import_keras_reid_before_tensorflow():
  scripts = sorted(glob.glob(os.path.join(REPO, "bench", "*.py")))
  assert len(scripts) > 10, scripts
  late = [os.path.relpath(p, REPO) for p in scripts
          if not _first_tf_import_follows_keras_reid(p)]
  assert not late, (f"{late} import TensorFlow / Keras before keras_reid: "
                    "their timings would run Eigen's kernels where "
                    "TensorFlow's default leaves oneDNN off")


def test_import_order_check_catches_tensorflow_first(tmp_path):
  script = tmp_path / "late.py"
  script.write_text("import sys\nimport tensorflow as tf\n"
                    "from keras_reid import runs\n")
  assert not _first_tf_import_follows_keras_reid(str(script))
  script.write_text("import keras_reid\nimport tensorflow as tf\n")
  assert _first_tf_import_follows_keras_reid(str(script))


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

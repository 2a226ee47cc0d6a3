"""absl flags live only in entry points; library modules define none.

A library module that defined a flag at import would crash any absl program
that defines a flag of the same name (`--seed`, `--model`, ...) as soon as it
imports keras_reid. The test collects every flag name the entry points
define, defines all of them in a fresh process, then imports every library
module of the package there: a library module defining any of them raises
DuplicateFlagError.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "keras_reid")

# `python -m` modules: they define the flags. Every `__main__.py` is one too.
ENTRY_POINTS = {
    "keras_reid.train",
    "keras_reid.evaluate",
    "keras_reid.compare",
    "keras_reid.export",
    "keras_reid.data.inspect",
    "keras_reid.tools.convert_googlenet",
    "keras_reid.tools.select_grdl_lambda",
    "keras_reid.gallery.embed_beam",
}
# Optional dependencies (their own environment, see requirements-beam.txt):
# a library module that needs an absent one is not imported here.
OPTIONAL_PACKAGES = ("apache_beam",)


def _modules() -> list[tuple[str, str]]:
  """(dotted name, path) of every module under keras_reid/."""
  out = []
  for folder, _, files in os.walk(PACKAGE):
    for name in sorted(files):
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        rel = os.path.relpath(path, REPO)[:-len(".py")].split(os.sep)
        if rel[-1] == "__init__":
          rel = rel[:-1]
        out.append((".".join(rel), path))
  return out


def _is_entry_point(module: str) -> bool:
  return module in ENTRY_POINTS or module.endswith(".__main__")


def _defined_flags(path: str) -> list[str]:
  """Names passed to flags.DEFINE_* / config_flags.DEFINE_* in a file."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  names = []
  for node in ast.walk(tree):
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr.startswith("DEFINE") and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)):
      names.append(node.args[0].value)
  return names


def test_entry_points_exist_and_define_flags():
  modules = dict(_modules())
  entry = {m: p for m, p in modules.items() if _is_entry_point(m)}
  assert {"keras_reid.train", "keras_reid.data.synthetic.__main__",
          "keras_reid.serving.client.__main__",
          "keras_reid.serving.test_server.__main__"} <= set(entry)
  assert "seed" in _defined_flags(entry["keras_reid.data.synthetic.__main__"])
  assert "model" in _defined_flags(entry["keras_reid.serving.client.__main__"])


def test_library_modules_define_no_flags_statically():
  bad = {m: _defined_flags(p) for m, p in _modules()
         if not _is_entry_point(m) and _defined_flags(p)}
  assert not bad, (f"library modules define absl flags: {bad}. Move them to "
                   "a thin entry point (e.g. <module>/__main__.py).")


@pytest.mark.slow
def test_library_modules_import_next_to_flags_of_the_same_names():
  modules = _modules()
  names = sorted({n for m, p in modules if _is_entry_point(m)
                  for n in _defined_flags(p)})
  libraries = [m for m, _ in modules if not _is_entry_point(m)]
  script = f"""
import importlib, json
from absl import flags
from absl import logging  # defines absl's own flags first
for name in {names!r}:
  if name not in flags.FLAGS:
    flags.DEFINE_string(name, None, "defined by the test program")
failed = {{}}
for module in {libraries!r}:
  try:
    importlib.import_module(module)
  except flags.Error as e:  # DuplicateFlagError and kin
    failed[module] = repr(e)
  except ModuleNotFoundError as e:
    if e.name not in {OPTIONAL_PACKAGES!r}:
      raise
print(json.dumps(failed))
"""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  failed = json.loads(proc.stdout.strip().splitlines()[-1])
  assert len(names) > 10 and len(libraries) > 20
  assert not failed, f"library modules collide with program flags: {failed}"


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

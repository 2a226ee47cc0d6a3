"""BUILD files cover the tests (a py_test per test file, all in //:all_tests)
and declare what their sources import (Bazel's sandbox holds nothing else)."""

from __future__ import annotations

import ast
import glob
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Bazel's sandbox holds only declared inputs, not the source tree these tests
# read; they run under pytest (README: python3 -m pytest).
pytestmark = pytest.mark.skipif(
    "TEST_SRCDIR" in os.environ,
    reason="reads the whole source tree; run with pytest")
_PY_TEST = re.compile(r'py_test\(\s*name = "([^"]+)",\s*[^)]*?srcs = \["([^"]+)"\]',
                      re.S)


def _py_tests() -> dict[str, str]:
  """//tests/...:name -> the file it runs, from every BUILD under tests/."""
  out = {}
  for folder, _, files in os.walk(os.path.join(REPO, "tests")):
    if "BUILD" not in files:
      continue
    package = os.path.relpath(folder, REPO)
    with open(os.path.join(folder, "BUILD")) as f:
      for name, src in _PY_TEST.findall(f.read()):
        out[f"//{package}:{name}"] = os.path.join(package, src)
  return out


def test_every_test_file_has_a_py_test():
  covered = set(_py_tests().values())
  files = {os.path.relpath(os.path.join(folder, name), REPO)
           for folder, _, names in os.walk(os.path.join(REPO, "tests"))
           for name in names if name.endswith("_test.py")}
  assert len(files) > 20
  assert not files - covered, (
      f"test files without a py_test in their BUILD: {sorted(files - covered)}")


def test_every_test_file_runs_pytest_as_its_main():
  # Bazel runs a py_test's file as a script: without this block its tests
  # would be defined, never run, and the target would pass.
  block = re.compile(r'^if __name__ == "__main__":\n  raise SystemExit\('
                     r'pytest\.main\(\[__file__', re.M)
  missing = []
  for test in _py_tests().values():
    with open(os.path.join(REPO, test)) as f:
      if not block.search(f.read()):
        missing.append(test)
  assert not missing, (
      "test files without `if __name__ == \"__main__\": raise SystemExit("
      f"pytest.main([__file__, ...]))`: {sorted(missing)}")


def test_root_suite_lists_every_py_test():
  with open(os.path.join(REPO, "BUILD")) as f:
    root = f.read()
  suite = set(re.findall(r'"(//tests[^"]*)"', root))
  tests = set(_py_tests())
  assert not tests - suite, (
      f"py_tests missing from //:all_tests in BUILD: {sorted(tests - suite)}")
  assert not suite - tests, f"//:all_tests names unknown tests: {sorted(suite - tests)}"


_RULE = re.compile(r"(?:py_library|py_test|py_binary)\((.*?)\n\)", re.S)
# Imports done inside a function on purpose, so that the importing module
# stays light: (target, module).
_LAZY_IMPORTS = {
    # keras_reid.Embedder needs TensorFlow; `import keras_reid` must not.
    ("//keras_reid:keras_reid", "keras_reid.embedder"),
}


def _field(body: str, key: str) -> str:
  match = re.search(rf'\b{key} = (\[.*?\]|glob\(\[.*?\]\)|"[^"]*")', body, re.S)
  return match.group(1) if match else ""


def _targets() -> dict[str, tuple[list[str], list[str]]]:
  """//pkg:name -> (its source files, its deps as labels), every BUILD."""
  out = {}
  for build in glob.glob(os.path.join(REPO, "**", "BUILD"), recursive=True):
    package = os.path.relpath(os.path.dirname(build), REPO).replace(os.sep, "/")
    if package.startswith("bazel-"):
      continue
    package = "" if package == "." else package
    with open(build) as f:
      bodies = _RULE.findall(f.read())
    for body in bodies:
      name = re.search(r'name = "([^"]+)"', body).group(1)
      srcs_text = _field(body, "srcs")
      patterns = re.findall(r'"([^"]+)"', srcs_text)
      if srcs_text.startswith("glob"):
        srcs = [os.path.relpath(path, REPO) for pattern in patterns
                for path in glob.glob(os.path.join(REPO, package, pattern))]
      else:
        srcs = [os.path.join(package, src) for src in patterns]
      deps = []
      for dep in re.findall(r'"([^"]+)"', _field(body, "deps")):
        if dep.startswith(":"):
          dep = f"//{package}{dep}"
        elif ":" not in dep:
          dep = f"{dep}:{dep.rsplit('/', 1)[-1]}"
        deps.append(dep)
      out[f"//{package}:{name}"] = (srcs, deps)
  return out


def _repository_imports(path: str) -> set[str]:
  """The repository's modules (as files) that a source file imports."""
  with open(os.path.join(REPO, path)) as f:
    tree = ast.parse(f.read())
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names.add(node.module)
      names.update(f"{node.module}.{alias.name}" for alias in node.names)
  files = {}
  for name in names:
    if name.split(".")[0] not in ("keras_reid", "configs", "tests", "bench"):
      continue
    module = os.path.join(REPO, *name.split(".")) + ".py"
    if os.path.exists(module):  # packages (__init__) come with their modules
      files[os.path.relpath(module, REPO)] = name
  return files


def test_every_repository_import_is_a_declared_dep():
  targets = _targets()

  def reachable(label, seen):
    if label not in seen and label in targets:
      seen.add(label)
      for dep in targets[label][1]:
        reachable(dep, seen)
    return seen

  missing = []
  for label, (srcs, _) in sorted(targets.items()):
    available = {src for target in reachable(label, set())
                 for src in targets[target][0]}
    for src in srcs:
      for path, module in _repository_imports(src).items():
        if path not in available and (label, module) not in _LAZY_IMPORTS:
          missing.append(f"{label}: {src} imports {module} ({path})")
  assert not missing, (
      "Bazel targets whose sources import modules that are not in their deps "
      "(add the module's target to deps):\n" + "\n".join(missing))


if __name__ == "__main__":
  raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
